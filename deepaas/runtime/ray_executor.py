"""The Ray executor (``--executor ray``): a model's workers on a Ray cluster.

The front end (this process: HTTP, validation, the spec, training records)
keeps the pool of ``deepaas.runtime.pool.WorkerPool``, so queueing, batching,
time limits, cancellation and replacement behave exactly as with local
workers; only where a worker runs changes. Ray places each worker where the
resources it asks for are free (``--worker-num-cpus``, ``--worker-num-gpus``,
``--worker-resources``) as a ``WorkerActor`` (``ray_worker``), which starts
the worker process there. That process connects straight back to this one
over TCP and speaks the protocol a local worker speaks over its socket pair:
an ``ActorWorker`` here is a ``ConnectedWorker`` as a local ``WorkerProcess``
is, whose process runs elsewhere, and a call costs no Ray round trip.

A worker on the front end's own machine reads uploads where the server wrote
them and writes results and logs where the server reads them, as a local
worker does. For a worker on another machine, through its actor:

- an uploaded file travels as a ``RemoteUpload``, which the actor copies in
  chunks from the ``UploadSource`` actor that runs beside the front end
  (the front end's own memory never holds it);
- a result written to a file there (a large prediction, a returned file) is
  copied back in chunks to a file here, then sent as a local one would be;
- a call's log (a training's) is written there and copied here as it grows,
  so that ``GET .../train/<uuid>/log`` shows it live.

Ray is imported with this module, which the server imports only when the Ray
executor is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import sys
import tempfile
import uuid
from typing import Any, cast

# Ray folds log lines of workers that differ only in numbers into one; each
# of a model's lines names its own request, and every one must reach the log.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import ray  # noqa: E402 - after the environment it reads
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.runtime import protocol
from deepaas.runtime.channel import Channel, ConnectedWorker
from deepaas.runtime.pool import WorkerPool
from deepaas.runtime.protocol import (
    Answer,
    Batch,
    Call,
    Failure,
    Replies,
    Scratch,
    WorkerError,
)
from deepaas.runtime.ray_cluster import (
    TOKEN_SIZE,
    Connection,
    Handshake,
    describe_death,
)
from deepaas.runtime.ray_files import (
    RemoteFiles,
    failed,
    has_uploads,
    with_remote_uploads,
)
from deepaas.runtime.ray_worker import (
    Placement,
    UploadSource,
    WorkerActor,
    remove_scratch,
)
from deepaas.runtime.workers import PendingCall, WorkerState

LOG = logging.getLogger(__name__)
STOP_GRACE = 5.0  # seconds a worker gets to exit, and its actor to clean up
PLACEMENT_WARNING = 30.0  # seconds between warnings about a worker not ready
# Seconds after which a worker Ray has not placed counts as unplaced: while
# no worker runs, calls are refused at once (WorkersUnplaced).
UNPLACED_AFTER = 5.0
CONNECT_TIMEOUT = 60.0  # seconds a started worker has to connect
ENDED_WAIT = 10.0  # seconds to learn from Ray how a lost worker ended

RemoteWorker = ray.remote(  # type: ignore[call-overload]
    concurrency_groups={"io": 2, "watch": 1}
)(WorkerActor)
RemoteSource = ray.remote(UploadSource)


class RayExecutor(WorkerPool):
    """``size`` workers for one model, each a Ray actor."""

    def __init__(
        self,
        spec: ModelSpec,
        size: int = 1,
        *,
        address: str = "",
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        resources: dict[str, float] | None = None,
        scratch: Scratch | None = None,
        upload_roots: list[str] | None = None,
        runtime_cpus: float = 0,
        **options: Any,
    ) -> None:
        """``address``: the cluster to join (see ``Connection.open``);
        ``runtime_cpus``: the logical CPUs of a Ray runtime started here.
        ``num_cpus``, ``num_gpus`` and ``resources``: what each worker asks
        Ray for. ``scratch``: where results copied from other machines are
        written here (in memory up to ``memory_max`` bytes), and the root of
        the workers' memory directories. ``upload_roots``: the directories
        the server writes uploads to (the only ones remote workers may read).
        The other ``options`` are ``WorkerPool``'s."""
        super().__init__(spec, size, **options)
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.resources = dict(resources or {})
        self.scratch = scratch or Scratch(None, tempfile.gettempdir())
        self.upload_roots = list(upload_roots or [tempfile.gettempdir()])
        self.runtime_cpus = runtime_cpus
        # Workers Ray has not placed for UNPLACED_AFTER: by slot, what they ask.
        self.unplaced: dict[int, str] = {}
        self.node_id: str | None = None  # the front end's node
        self.source: Any = None  # the UploadSource actor
        self._connected = False
        self._server: asyncio.Server | None = None  # where workers connect
        self.listening: tuple[str, int] | None = None
        # The workers expected to connect, by the token each will send.
        self._expected: dict[bytes, tuple[ActorWorker, asyncio.Future[Channel]]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, Connection.open, self.address, self.runtime_cpus
        )
        self._connected = True
        try:
            self.node_id = ray.get_runtime_context().get_node_id()
            host = ray.util.get_node_ip_address()
            self._server = await loop.create_server(
                lambda: Handshake(self.connected), host=host, port=0
            )
            self.listening = self._server.sockets[0].getsockname()[:2]
            self.source = RemoteSource.options(
                num_cpus=0,
                max_concurrency=8,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    self.node_id, soft=False
                ),
            ).remote(self.upload_roots)
            await super().start()
        except BaseException:
            if self._server is not None:
                self._server.close()
                self._server = None
            await self._disconnect()
            raise

    def _new_worker(self, slot: int) -> ActorWorker:
        return ActorWorker(self.spec, self, slot)

    def asks_for(self) -> str:
        """What each worker asks Ray for, in words."""
        return f"num_cpus={self.num_cpus:g}, num_gpus={self.num_gpus:g}" + "".join(
            f", {k}={v:g}" for k, v in self.resources.items()
        )

    def _refusal(self) -> exceptions.DeepaasError | None:
        """With no worker running, and some that Ray cannot place: calls
        fail at once rather than wait for the queue's time limit."""
        if not self.unplaced:
            return None
        try:
            free = ", ".join(
                f"{k}={v:g}"
                for k, v in sorted(ray.available_resources().items())
                if k in ("CPU", "GPU") or k in self.resources
            )
        except Exception:  # noqa: BLE001 - only words for the message
            free = "unknown"
        return exceptions.WorkersUnplaced(
            self.spec.name, len(self.unplaced), self.asks_for(), free or "none"
        )

    def expect(self, worker: ActorWorker) -> tuple[bytes, asyncio.Future[Channel]]:
        """A token for ``worker`` to open its connection with, and the
        future of that connection's channel."""
        token = secrets.token_bytes(TOKEN_SIZE)
        future = asyncio.get_running_loop().create_future()
        self._expected[token] = (worker, future)
        return token, future

    def forget(self, token: bytes) -> None:
        self._expected.pop(token, None)

    def connected(self, token: bytes, transport: asyncio.Transport) -> Channel | None:
        """A connection proved to be the worker of ``token``: its channel
        (None, for a token nobody expects)."""
        expected = self._expected.pop(token, None)
        if expected is None or expected[1].done():
            return None
        worker, future = expected
        channel = Channel(worker)
        transport.set_protocol(channel)
        channel.connection_made(transport)
        future.set_result(channel)
        return channel

    async def stop(self) -> None:
        await super().stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self.source is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.source, no_restart=True)
            self.source = None
        if self._connected:
            self._connected = False
            await asyncio.get_running_loop().run_in_executor(None, Connection.close)


class ActorWorker(ConnectedWorker):
    """A worker process on a Ray node, started by its actor there, and the
    connection to it."""

    pool: RayExecutor

    def __init__(self, spec: ModelSpec, pool: RayExecutor, slot: int = 0) -> None:
        super().__init__(spec, pool, slot)
        self.actor: Any = None
        self.files: RemoteFiles | None = None  # through the actor, once made
        self.placement: Placement | None = None
        self._token: bytes | None = None
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._killed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # While a remote call's log is copied here: the copy and its end.
        self._log_copy: tuple[asyncio.Task[None], asyncio.Event] | None = None

    @property
    def devices(self) -> str | None:
        return self.placement.devices if self.placement else None

    @property
    def remote(self) -> bool:
        """Whether the worker runs on another machine than the front end."""
        return (
            self.placement is not None and self.placement.node_id != self.pool.node_id
        )

    def is_alive(self) -> bool:
        return self.actor is not None and not (self._killed or self._ended.done())

    def _track(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- start -------------------------------------------------------------------

    async def _launch(self) -> list[str]:
        """Have Ray place an actor, which starts the worker process; return
        once the process has connected here."""
        pool = self.pool
        options: dict[str, Any] = {
            "num_cpus": pool.num_cpus,
            "num_gpus": pool.num_gpus,
            "max_restarts": 0,
            "max_task_retries": 0,
        }
        if pool.resources:
            options["resources"] = pool.resources
        self._token, connection = pool.expect(self)
        try:
            self.actor = RemoteWorker.options(**options).remote()
            self.files = RemoteFiles(self.actor, pool.scratch)
            self.placement = await self._placed(
                self.actor.start.remote(
                    self.spec.name,
                    pool.listening,
                    self._token,
                    list(sys.path),
                    pool.source,
                    pool.scratch.memory,
                    pool.scratch.memory_max,
                )
            )
            self.pid = self.placement.pid
            self.node = self.placement.address
            self.scratch = self.placement.scratch
            self._track(self._watch())
            await asyncio.wait(
                (connection, self._ended),
                timeout=CONNECT_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not connection.done():
                self._abandon_start()
                raise exceptions.ModelLoadError(
                    f"Worker for model {self.spec.name!r} "
                    + (
                        f"died while starting ({self._ended.result()})."
                        if self._ended.done()
                        else f"did not connect within {CONNECT_TIMEOUT:g}s."
                    )
                )
            self._channel = connection.result()
        except ray.exceptions.RayActorError as exc:
            self._abandon_start()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} died while starting "
                f"({describe_death(exc, self.placement)})."
            ) from None
        except ray.exceptions.RayError as exc:  # start() raised in the actor
            self._abandon_start()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} could not start: "
                f"{getattr(exc, 'cause', None) or exc}"
            ) from None
        except BaseException:
            self._abandon_start()
            raise
        return self.placement.sys_path

    def _abandon_start(self) -> None:
        if self._token is not None:
            self.pool.forget(self._token)
        self.kill()

    async def _placed(self, started: Any) -> Placement:
        """The actor's answer to ``start``, with a warning now and then while
        Ray has not placed it."""
        future = asyncio.ensure_future(started)
        waited = 0.0
        wait = UNPLACED_AFTER
        try:
            while True:
                try:
                    placement: Placement = await asyncio.wait_for(
                        asyncio.shield(future), wait
                    )
                    return placement
                except TimeoutError:
                    waited += wait
                    wait = PLACEMENT_WARNING
                    self.pool.unplaced[self.slot] = self.pool.asks_for()
                    self.pool.refuse_waiting()
                    LOG.warning(
                        "Model %r: worker %d is not placed after %gs: no Ray node "
                        "has the resources it asks for free (%s)",
                        self.spec.name,
                        self.slot,
                        waited,
                        self.pool.asks_for(),
                    )
        finally:
            self.pool.unplaced.pop(self.slot, None)
            future.cancel()

    # -- its end -----------------------------------------------------------------

    async def _watch(self) -> None:
        """Learn how the worker process ends (or its actor, or its node) as
        it happens; drop its connection then, in case its machine did not."""
        try:
            exitcode = await self.actor.watch.options(
                concurrency_group="watch"
            ).remote()
        except Exception as exc:  # noqa: BLE001 - the actor died, or Ray failed
            how = describe_death(exc, self.placement)
        else:
            self.exitcode = exitcode
            how = exceptions.describe_exit(exitcode)
            if self.remote and self.placement is not None:
                how += f", on {self.placement.address}"
        if not self._ended.done():
            self._ended.set_result(how)
        if self._channel is not None:
            self._channel.abort()

    async def how_it_ended(self) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(self._ended), ENDED_WAIT)
        except TimeoutError:
            where = f" on {self.placement.address}" if self.placement else ""
            return f"its connection{where} closed; Ray said no more"

    async def wait(self, timeout: float = STOP_GRACE) -> int | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        return self.exitcode if self._ended.done() else None

    def kill(self) -> None:
        if self.actor is not None and not self._killed:
            self._killed = True
            with contextlib.suppress(Exception):  # already gone
                ray.kill(self.actor, no_restart=True)

    async def stop(self) -> None:
        """Close the connection (the worker process exits when idle), let the
        actor remove its scratch directories, then end it."""
        if self.state is WorkerState.STARTING:
            self.kill()
        self.state = WorkerState.RETIRED
        if self._channel is not None:
            self._channel.close()
        if self.actor is not None and not self._killed:
            await self.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.actor.close.remote(), STOP_GRACE)
        self.kill()
        if self._token is not None:
            self.pool.forget(self._token)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.placement is not None and not self.remote:
            remove_scratch(self.placement.scratch)  # on this machine: gone now

    def remove_scratch(self) -> None:
        """The actor's directories are its own to remove (``stop``)."""

    # -- calls -------------------------------------------------------------------

    def send_ahead(self, pending: PendingCall) -> bool:
        """Nothing is sent ahead to a Ray worker: a call to another machine
        is staged there first (its uploads, its log), one at a time."""
        return False

    def run(self, calls: list[PendingCall]) -> None:
        message = self._take(calls)
        if not self.remote:
            self._send(message)
            return
        self._track(self._send_remote(message))

    async def _send_remote(self, message: Call | Batch) -> None:
        """Send a call to a worker on another machine: its uploads copied
        there first, its log written there and copied here as it grows."""
        try:
            if has_uploads(message):
                staged = await self.actor.stage.remote(with_remote_uploads(message))
                message = cast(Call | Batch, staged)
        except ray.exceptions.RayActorError:
            return  # its death is being reported
        except Exception as exc:  # noqa: BLE001 - a file that could not be copied
            self._deliver(failed(message, exc))
            return
        if isinstance(message, Call) and message.log_path is not None:
            assert self.placement is not None and self.placement.scratch is not None
            assert self.files is not None  # remote: its actor is placed
            there = os.path.join(self.placement.scratch.disk, f"log-{uuid.uuid4().hex}")
            done = asyncio.Event()
            copy = asyncio.get_running_loop().create_task(
                self.files.copy_log(there, message.log_path, done)
            )
            self._tasks.add(copy)  # cancelled if the worker stops first
            copy.add_done_callback(self._tasks.discard)
            self._log_copy = (copy, done)
            message = dataclasses.replace(message, log_path=there)
        if not self.retired:
            self._send(message)

    def on_message(self, message: protocol.Message) -> None:
        if (
            not self.remote
            or self._greeting is None
            or not self._greeting.done()
            or not isinstance(message, Answer | Failure | Replies)
        ):
            super().on_message(message)
            return
        self._track(self._finish_remote(message))

    async def _finish_remote(self, reply: Answer | Failure | Replies) -> None:
        """A remote call's reply, once its log is all here and its result
        files copied here."""
        if self._log_copy is not None:
            copy, done = self._log_copy
            self._log_copy = None
            done.set()
            with contextlib.suppress(Exception):
                await copy
        assert self.files is not None  # remote: its actor is placed
        try:
            reply = await self.files.bring_back(reply)
        except ray.exceptions.RayActorError:
            return  # its death is being reported
        except Exception as exc:  # noqa: BLE001 - no room here, for one
            reply = Failure(WorkerError.from_exception(exc, "predict"))
        self._deliver(reply)

    def _deliver(self, reply: Answer | Failure | Replies) -> None:
        if not self.retired:
            self.pool.on_reply(self, reply)

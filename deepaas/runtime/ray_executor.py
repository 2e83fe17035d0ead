"""The Ray executor (``--executor ray``): a model's workers on a Ray cluster.

The front end (this process: HTTP, validation, the spec, training records)
keeps the pool of ``deepaas.runtime.pool.WorkerPool``, so queueing, batching,
time limits, cancellation and replacement behave exactly as with local
workers; only where a worker runs changes. Ray places each worker where the
resources it asks for are free (``--worker-num-cpus``, ``--worker-num-gpus``,
``--worker-resources``) as a ``WorkerActor`` (``ray_worker``), which starts
the worker process there. That process connects straight back to this one
over TCP and speaks the protocol a local worker speaks over its socket pair,
so an ``ActorWorker`` here is a ``WorkerProcess`` whose process runs
elsewhere, and a call costs no Ray round trip.

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
import collections
import contextlib
import dataclasses
import logging
import math
import mimetypes
import os
import secrets
import socket
import sys
import tempfile
import threading
import uuid
from typing import Any, cast

# Ray folds log lines of workers that differ only in numbers into one; each
# of a model's lines names its own request, and every one must reach the log.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import ray  # noqa: E402 - after the environment it reads
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from deepaas import exceptions, private
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import ReturnedFile, SpooledResult, UploadedFile
from deepaas.runtime import protocol
from deepaas.runtime.local import Channel, WorkerProcess
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
from deepaas.runtime.ray_worker import (
    CHUNK,
    READ_AHEAD,
    Placement,
    RemoteUpload,
    UploadSource,
    WorkerActor,
    remove_scratch,
)
from deepaas.runtime.workers import PendingCall, WorkerState

LOG = logging.getLogger(__name__)
NAMESPACE = "deepaas"
STOP_GRACE = 5.0  # seconds a worker gets to exit, and its actor to clean up
LOG_INTERVAL = 0.5  # seconds between copies of a remote call's log
PLACEMENT_WARNING = 30.0  # seconds between warnings about a worker not ready
# Seconds after which a worker Ray has not placed counts as unplaced: while
# no worker runs, calls are refused at once (WorkersUnplaced).
UNPLACED_AFTER = 5.0
TOKEN_SIZE = 32  # bytes of the token a worker's connection opens with
HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to send it
CONNECT_TIMEOUT = 60.0  # seconds a started worker has to connect
ENDED_WAIT = 10.0  # seconds to learn from Ray how a lost worker ended
CONNECT_CHECK = 10.0  # seconds a cluster's address has to answer

RemoteWorker = ray.remote(  # type: ignore[call-overload]
    concurrency_groups={"io": 2, "watch": 1}
)(WorkerActor)
RemoteSource = ray.remote(UploadSource)


class Connection:
    """This process's connection to Ray, shared by the executors of every
    model: made by the first to start, closed by the last to stop (unless
    something else connected this process to Ray first)."""

    lock = threading.Lock()
    users = 0
    ours = False

    @classmethod
    def open(cls, address: str, num_cpus: float = 0) -> None:
        """Join the cluster at ``address`` (``auto``, ``HOST:PORT``), or
        with an empty one, the cluster ``RAY_ADDRESS`` names or else a new
        Ray runtime on this machine, with ``num_cpus`` logical CPUs (what
        the workers of every model ask for together: the local executor
        starts them all too) or this machine's count if that is more."""
        with cls.lock:
            cls.users += 1
            if ray.is_initialized():
                return
            address = address or os.environ.get("RAY_ADDRESS", "")
            options: dict[str, Any] = {
                "namespace": NAMESPACE,
                "configure_logging": False,
                "log_to_driver": True,
            }
            try:
                if address:
                    LOG.info("Joining the Ray cluster at %s", address)
                    check_reachable(address)
                    ray.init(address=address, **options)
                else:
                    cpus = max(math.ceil(num_cpus), os.cpu_count() or 1)
                    LOG.info("Starting a Ray runtime on this machine (%d CPUs)", cpus)
                    ray.init(
                        address="local",
                        include_dashboard=False,
                        num_cpus=cpus,
                        **options,
                    )
            except exceptions.DeepaasError:
                cls.users -= 1
                raise
            except Exception as exc:
                cls.users -= 1
                what = f"join the Ray cluster at {address}" if address else "start Ray"
                raise exceptions.ConfigurationError(
                    f"Could not {what}: {type(exc).__name__}: {exc}"
                ) from None
            cls.ours = True

    @classmethod
    def close(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0 and cls.ours:
                cls.ours = False
                ray.shutdown()


def check_reachable(address: str) -> None:
    """Fail at once when a ``HOST:PORT`` address does not answer (Ray itself
    would try to connect for ever)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # auto, or another form Ray reads itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_CHECK).close()
    except OSError as exc:
        raise exceptions.ConfigurationError(
            f"Cannot reach the Ray cluster at {address} (--ray-address or "
            f"RAY_ADDRESS): {exc.strerror or exc}"
        ) from None


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
                lambda: Handshake(self), host=host, port=0
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


def describe_death(exc: BaseException, placement: Placement | None) -> str:
    """How an actor ended, in words, from the error Ray raised for it."""
    text = str(exc)
    if "node has died" in text or "node was terminated" in text:
        why = "its node was lost"
    elif isinstance(exc, ray.exceptions.OutOfMemoryError):
        why = "killed by Ray for lack of memory"
    elif "worker process has died" in text:
        why = "its process ended: it exited, crashed or was killed"
    else:
        why = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if placement is None:
        return f"Ray actor: {why}"
    return f"Ray actor pid {placement.pid} on {placement.address}: {why}"


class Handshake(asyncio.Protocol):
    """A new connection to the front end: it must open with the token of a
    worker that is expected, and then is that worker's channel; anything
    else is dropped."""

    def __init__(self, executor: RayExecutor) -> None:
        self.executor = executor
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self.transport.abort
        )

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.received += data
        if len(self.received) < TOKEN_SIZE:
            return
        if self.timer is not None:
            self.timer.cancel()
        token, rest = bytes(self.received[:TOKEN_SIZE]), self.received[TOKEN_SIZE:]
        channel = self.executor.connected(token, self.transport)
        if channel is None:
            LOG.warning("A connection without a worker's token was dropped")
            self.transport.abort()
        elif rest:
            channel.data_received(bytes(rest))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class ActorWorker(WorkerProcess):
    """A worker process on a Ray node, started by its actor there, and the
    connection to it."""

    pool: RayExecutor  # type: ignore[assignment]

    def __init__(self, spec: ModelSpec, pool: RayExecutor, slot: int = 0) -> None:
        super().__init__(spec, cast(Any, pool), slot)
        self.actor: Any = None
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
            if _has_uploads(message):
                staged = await self.actor.stage.remote(_with_remote_uploads(message))
                message = cast(Call | Batch, staged)
        except ray.exceptions.RayActorError:
            return  # its death is being reported
        except Exception as exc:  # noqa: BLE001 - a file that could not be copied
            self._deliver(_failed(message, exc))
            return
        if isinstance(message, Call) and message.log_path is not None:
            assert self.placement is not None and self.placement.scratch is not None
            there = os.path.join(self.placement.scratch.disk, f"log-{uuid.uuid4().hex}")
            done = asyncio.Event()
            copy = asyncio.get_running_loop().create_task(
                self._copy_log(there, message.log_path, done)
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
        try:
            reply = await self._bring_back(reply)
        except ray.exceptions.RayActorError:
            return  # its death is being reported
        except Exception as exc:  # noqa: BLE001 - no room here, for one
            reply = Failure(WorkerError.from_exception(exc, "predict"))
        self._deliver(reply)

    def _deliver(self, reply: Answer | Failure | Replies) -> None:
        if not self.retired:
            self.pool.on_reply(self, reply)

    async def _copy_log(self, there: str, here: str, done: asyncio.Event) -> None:
        """Append what the call writes to its log there to the log here,
        every ``LOG_INTERVAL`` seconds, and once more when it has ended."""
        offset = 0
        read = self.actor.read.options(concurrency_group="io")
        with open(private.open_private(here, os.O_WRONLY | os.O_APPEND), "ab") as log:
            while True:
                finished = done.is_set()
                while True:
                    try:
                        data = await read.remote(there, offset, CHUNK, True)
                    except ray.exceptions.RayError:
                        return  # the worker is gone: what was copied stays
                    if data:
                        log.write(data)
                        log.flush()
                        offset += len(data)
                    if len(data) < CHUNK:
                        break
                if finished:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), LOG_INTERVAL)
        self.actor.discard.options(concurrency_group="io").remote(there)

    async def _bring_back(
        self, reply: Answer | Failure | Replies
    ) -> Answer | Failure | Replies:
        """``reply`` with each result file of the worker's machine copied to
        a file of this one."""
        if isinstance(reply, Replies):
            return Replies(
                tuple([await self._bring_back_one(r) for r in reply.replies])
            )
        return await self._bring_back_one(reply)

    async def _bring_back_one(self, reply: Answer | Failure) -> Answer | Failure:
        if isinstance(reply, Failure):
            return reply
        value = reply.value
        if isinstance(value, SpooledResult):
            here = await self._copy_file(value.path, value.size)
            self.actor.discard.options(concurrency_group="io").remote(value.path)
            return Answer(dataclasses.replace(value, path=here))
        if isinstance(value, ReturnedFile):  # the model's: left where it is
            here = await self._copy_file(value.filename, None)
            content_type = value.content_type or mimetypes.guess_type(value.filename)[0]
            return Answer(
                SpooledResult(here, os.path.getsize(here), False, content_type)
            )
        return reply

    async def _copy_file(self, there: str, size: int | None) -> str:
        """Copy a file of the worker's machine to a new file here (in memory
        when its ``size`` is known to fit), a few chunks in flight; its path."""
        scratch = self.pool.scratch
        directory = scratch.disk
        if scratch.memory and size is not None and size <= scratch.memory_max:
            directory = scratch.memory
        fd, here = tempfile.mkstemp(prefix="deepaas-result-", dir=directory)
        read = self.actor.read.options(concurrency_group="io")
        pending: collections.deque[Any] = collections.deque()
        try:
            with open(fd, "wb") as f:
                offset = 0
                while True:
                    while len(pending) < READ_AHEAD:
                        pending.append(read.remote(there, offset, CHUNK))
                        offset += CHUNK
                    data = await pending.popleft()
                    f.write(data)
                    if len(data) < CHUNK:
                        break
        except BaseException:
            os.unlink(here)
            raise
        return here


def _has_uploads(message: Call | Batch) -> bool:
    calls = message.calls if isinstance(message, Batch) else (message,)
    return any(
        isinstance(value, UploadedFile)
        or (isinstance(value, list) and any(isinstance(i, UploadedFile) for i in value))
        for call in calls
        for value in call.kwargs.values()
    )


def _with_remote_uploads(message: Call | Batch) -> Call | Batch:
    """``message`` with each ``UploadedFile`` (a path here) a ``RemoteUpload``."""
    if isinstance(message, Batch):
        return Batch(tuple(_call_with_remote_uploads(c) for c in message.calls))
    return _call_with_remote_uploads(message)


def _call_with_remote_uploads(call: Call) -> Call:
    def remote(value: Any) -> Any:
        if isinstance(value, list):
            return [remote(item) for item in value]
        if not isinstance(value, UploadedFile):
            return value
        return RemoteUpload(
            value.name,
            value.filename,
            os.path.getsize(value.filename),
            value.content_type,
            value.original_filename,
        )

    kwargs = {name: remote(value) for name, value in call.kwargs.items()}
    return dataclasses.replace(call, kwargs=kwargs)


def _failed(message: Call | Batch, exc: Exception) -> Failure | Replies:
    """The reply that fails every call of ``message`` with ``exc``."""
    if isinstance(message, Batch):
        failure = Failure(WorkerError.from_exception(exc, "predict"))
        return Replies(tuple(failure for _ in message.calls))
    return Failure(WorkerError.from_exception(exc, message.method))

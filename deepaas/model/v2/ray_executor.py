"""The Ray executor (``--executor ray``): a model's workers as Ray actors.

The front end (this process: HTTP, validation, the spec, training records)
keeps the pool of ``deepaas.model.v2.pool.WorkerPool``, so queueing, batching,
time limits, cancellation and replacement behave exactly as with local
workers; only where a worker runs changes. Each worker is an ``ActorWorker``:
the front end's handle on one ``WorkerActor`` (``ray_worker``), placed by Ray
wherever the resources it asks for (``--worker-num-cpus``,
``--worker-num-gpus``, ``--worker-resources``) are free.

A worker on the front end's own machine reads uploads where the server wrote
them and writes results and logs where the server reads them, as a local
worker does. For a worker on another machine:

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
import mimetypes
import os
import sys
import tempfile
import threading
import uuid
from typing import Any

# Ray folds log lines of workers that differ only in numbers into one; each
# of a model's lines names its own request, and every one must reach the log.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import ray  # noqa: E402 - after the environment it reads
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2 import protocol
from deepaas.model.v2.pool import PendingCall, PoolWorker, WorkerPool, WorkerState
from deepaas.model.v2.protocol import (
    Answer,
    Batch,
    Call,
    Ended,
    Failure,
    Ping,
    Ready,
    Replies,
    Scratch,
    Start,
    WorkerError,
)
from deepaas.model.v2.ray_worker import (
    CHUNK,
    READ_AHEAD,
    Placement,
    RemoteUpload,
    UploadSource,
    WorkerActor,
    remove_scratch,
)
from deepaas.model.v2.types import ReturnedFile, SpooledResult, UploadedFile

LOG = logging.getLogger(__name__)
NAMESPACE = "deepaas"
STOP_GRACE = 5.0  # seconds an idle actor gets to clean up before it is killed
LOG_INTERVAL = 0.5  # seconds between copies of a remote call's log
PLACEMENT_WARNING = 30.0  # seconds between warnings about a worker not ready
PING_FRAME = protocol.encode(Ping())

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
    def open(cls, address: str) -> None:
        """Join the cluster at ``address`` (``auto``, ``HOST:PORT``), or
        with an empty one, the cluster ``RAY_ADDRESS`` names or else a new
        Ray runtime on this machine."""
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
            if address:
                LOG.info("Joining the Ray cluster at %s", address)
                ray.init(address=address, **options)
            else:
                LOG.info("Starting a Ray runtime on this machine")
                ray.init(address="local", include_dashboard=False, **options)
            cls.ours = True

    @classmethod
    def close(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0 and cls.ours:
                cls.ours = False
                ray.shutdown()


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
        **options: Any,
    ) -> None:
        """``address``: the cluster to join (see ``Connection.open``).
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
        self.node_id: str | None = None  # the front end's node
        self.source: Any = None  # the UploadSource actor
        self._connected = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, Connection.open, self.address)
        self._connected = True
        try:
            self.node_id = ray.get_runtime_context().get_node_id()
            self.source = RemoteSource.options(
                num_cpus=0,
                max_concurrency=8,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    self.node_id, soft=False
                ),
            ).remote(self.upload_roots)
            await super().start()
        except BaseException:
            await self._disconnect()
            raise

    def _new_worker(self, slot: int) -> ActorWorker:
        return ActorWorker(self.spec, self, slot)

    async def stop(self) -> None:
        await super().stop()
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


class ActorWorker(PoolWorker):
    """The front end's handle on one worker actor."""

    pool: RayExecutor

    def __init__(self, spec: ModelSpec, pool: RayExecutor, slot: int = 0) -> None:
        super().__init__(spec, slot)
        self.pool = pool
        self.actor: Any = None
        self.placement: Placement | None = None
        self._how = "Ray actor: ended"  # how it ended, once it has
        self._killed = False
        self._lost = False
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def devices(self) -> str | None:
        return self.placement.devices if self.placement else None

    @property
    def remote(self) -> bool:
        """Whether the actor runs on another machine than the front end."""
        return (
            self.placement is not None and self.placement.node_id != self.pool.node_id
        )

    def is_alive(self) -> bool:
        return self.actor is not None and not (self._killed or self._lost)

    async def start(self) -> None:
        pool = self.pool
        options: dict[str, Any] = {
            "num_cpus": pool.num_cpus,
            "num_gpus": pool.num_gpus,
            "max_restarts": 0,
            "max_task_retries": 0,
        }
        if pool.resources:
            options["resources"] = pool.resources
        self.actor = RemoteWorker.options(**options).remote()
        start = Start(
            spec=self.spec,
            warm=pool.warm,
            log_level=pool.log_level,
            log_format=pool.log_format,
            sys_path=list(sys.path),
            scratch=pool.scratch,
        )
        try:
            frame, placement = await self._placed(
                self.actor.start.remote(start, pool.source, pool.scratch.memory)
            )
        except ray.exceptions.RayActorError as exc:
            self.kill()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} died while loading it "
                f"({describe_death(exc, None)})."
            ) from None
        except BaseException:
            self.kill()
            raise
        self.placement = placement
        self.node = placement.address
        greeting = protocol.decode_frame(frame)
        if isinstance(greeting, Ended):
            self.kill()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} died while loading it "
                f"({self._ended_how(greeting)})."
            )
        if isinstance(greeting, Failure):
            self.kill()
            raise greeting.error.to_load_error(self.spec.name)
        assert isinstance(greeting, Ready)
        self.pid = greeting.pid  # the model's process
        self.state = WorkerState.IDLE
        self._track(self._watch())

    def _ended_how(self, ended: Ended) -> str:
        """How the worker process ended, in words (naming its machine when
        it is not this one)."""
        self.exitcode = ended.exitcode
        how = exceptions.describe_exit(ended.exitcode)
        if self.remote and self.placement is not None:
            how += f", on {self.placement.address}"
        return how

    async def _placed(self, started: Any) -> Any:
        """The actor's answer to ``start``, with a warning now and then while
        Ray has not placed it or the model still loads."""
        future = asyncio.ensure_future(started)
        waited = 0.0
        try:
            while True:
                try:
                    return await asyncio.wait_for(
                        asyncio.shield(future), PLACEMENT_WARNING
                    )
                except TimeoutError:
                    waited += PLACEMENT_WARNING
                    LOG.warning(
                        "Model %r: worker %d is not ready after %gs: Ray has not "
                        "placed it yet (it asks for num_cpus=%g, num_gpus=%g%s) or "
                        "the model is still loading",
                        self.spec.name,
                        self.slot,
                        waited,
                        self.pool.num_cpus,
                        self.pool.num_gpus,
                        "".join(f", {k}={v:g}" for k, v in self.pool.resources.items()),
                    )
        finally:
            future.cancel()

    def _track(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """Learn of the worker's death, or the actor's, as it happens."""
        try:
            frame = await self.actor.watch.options(concurrency_group="watch").remote()
        except Exception as exc:  # noqa: BLE001 - the actor died, or Ray failed
            self._lost_with(describe_death(exc, self.placement))
            return
        if frame is None:  # closed on purpose
            self._lost = True
            return
        ended = protocol.decode_frame(frame)
        assert isinstance(ended, Ended)
        self._lost_with(self._ended_how(ended))

    def _lost_with(self, how: str) -> None:
        """The worker died (``how``): its calls fail, the pool replaces it."""
        if self._lost or self._killed:
            return
        self._lost = True
        self._how = how
        if not self.retired:
            self.pool.on_worker_lost(self)

    # -- calls -----------------------------------------------------------------

    def run(self, calls: list[PendingCall]) -> None:
        self.state = WorkerState.BUSY
        for call in calls:
            call.worker = self
        self.calls = calls
        if len(calls) == 1:
            message: Call | Batch = calls[0].message
        else:
            message = Batch(tuple(call.message for call in calls))
        self._track(self._exchange(message))

    async def _exchange(self, message: Call | Batch) -> None:
        """Send one message, wait for its reply (copying a remote log as it
        grows), bring remote result files here, and give the pool the reply."""
        log = None
        if self.remote:
            message, log = self._for_remote(message)
        copying: asyncio.Task[None] | None = None
        done = asyncio.Event()
        if log is not None:
            copying = asyncio.get_running_loop().create_task(self._copy_log(*log, done))
        try:
            frame = await self.actor.handle.remote(protocol.encode(message))
            reply = protocol.decode_frame(frame)
            if isinstance(reply, Ended):
                self._lost_with(self._ended_how(reply))
                return
            assert isinstance(reply, Answer | Failure | Replies)
            if copying is not None:
                done.set()
                await copying
            if self.remote:
                reply = await self._bring_back(reply)
        except ray.exceptions.RayActorError as exc:
            self._lost_with(describe_death(exc, self.placement))
            return
        except Exception as exc:  # a file that could not be copied here
            method = message.method if isinstance(message, Call) else "predict"
            error = Failure(WorkerError.from_exception(exc, method))
            reply = (
                Replies(tuple(error for _ in message.calls))
                if isinstance(message, Batch)
                else error
            )
        finally:
            if copying is not None and not copying.done():
                copying.cancel()
        if not self.retired:
            self.pool.on_reply(self, reply)

    def _for_remote(
        self, message: Call | Batch
    ) -> tuple[Call | Batch, tuple[str, str] | None]:
        """``message`` as a worker on another machine needs it: its uploads
        to be copied there, its log written there (and the two log paths:
        there, here)."""
        if isinstance(message, Batch):
            return Batch(
                tuple(self._with_remote_uploads(c) for c in message.calls)
            ), None
        call = self._with_remote_uploads(message)
        if call.log_path is None:
            return call, None
        assert self.placement is not None and self.placement.scratch is not None
        there = os.path.join(self.placement.scratch.disk, f"log-{uuid.uuid4().hex}")
        return dataclasses.replace(call, log_path=there), (there, call.log_path)

    @staticmethod
    def _with_remote_uploads(call: Call) -> Call:
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

    async def _copy_log(self, there: str, here: str, done: asyncio.Event) -> None:
        """Append what the call writes to its log there to the log here,
        every ``LOG_INTERVAL`` seconds, and once more when it has ended."""
        offset = 0
        with open(here, "ab") as log:
            while True:
                finished = done.is_set()
                while True:
                    data = await self.actor.read.options(concurrency_group="io").remote(
                        there, offset, CHUNK, True
                    )
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
        """``reply`` with each result file of the actor's machine copied to
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
            self.actor.discard.options(concurrency_group="io").remote(
                value.path
            )  # ours to remove
            return Answer(dataclasses.replace(value, path=here))
        if isinstance(value, ReturnedFile):  # the model's: left where it is
            here = await self._copy_file(value.filename, None)
            content_type = value.content_type or mimetypes.guess_type(value.filename)[0]
            return Answer(
                SpooledResult(here, os.path.getsize(here), False, content_type)
            )
        return reply

    async def _copy_file(self, there: str, size: int | None) -> str:
        """Copy a file of the actor's machine to a new file here (in memory
        when its ``size`` is known to fit), a few chunks in flight; its path."""
        scratch = self.pool.scratch
        directory = scratch.disk
        if scratch.memory and size is not None and size <= scratch.memory_max:
            directory = scratch.memory
        fd, here = tempfile.mkstemp(prefix="deepaas-result-", dir=directory)
        pending: collections.deque[Any] = collections.deque()
        try:
            with open(fd, "wb") as f:
                offset = 0
                while True:
                    while len(pending) < READ_AHEAD:
                        pending.append(
                            self.actor.read.options(concurrency_group="io").remote(
                                there, offset, CHUNK
                            )
                        )
                        offset += CHUNK
                    data = await pending.popleft()
                    f.write(data)
                    if len(data) < CHUNK:
                        break
        except BaseException:
            os.unlink(here)
            raise
        return here

    # -- the worker's life -----------------------------------------------------

    def ping(self) -> None:
        self.pinged_at = asyncio.get_running_loop().time()
        self._track(self._answer_ping())

    async def _answer_ping(self) -> None:
        with contextlib.suppress(ray.exceptions.RayError):
            await self.actor.handle.remote(PING_FRAME)
            self.pinged_at = None

    async def how_it_ended(self) -> str:
        return self._how

    def kill(self) -> None:
        if self.actor is not None and not self._killed:
            self._killed = True
            with contextlib.suppress(Exception):  # already gone
                ray.kill(self.actor, no_restart=True)

    async def stop(self) -> None:
        """Let an idle actor remove its scratch directories, then end it."""
        if self.state is WorkerState.STARTING:
            self.kill()
        self.state = WorkerState.RETIRED
        if self.actor is not None and not (self._killed or self._lost):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.actor.close.remote(), STOP_GRACE)
        self.kill()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.placement is not None and not self.remote:
            remove_scratch(self.placement.scratch)  # on this machine: gone now

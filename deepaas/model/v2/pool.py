"""The local executor: a pool of persistent, spawned worker processes.

Each worker loads the model entry point itself (spawned, not forked, so CUDA and
TensorFlow start clean), warms it once, then runs calls one at a time. The
event loop talks to workers over sockets it reads asynchronously, so it never
blocks on a call. A worker that dies mid-call fails only that call and is
replaced; cancelling a call kills its worker, which is replaced too.

Dispatch happens in callbacks: when a worker's answer arrives, the next queued
call is written to it in the same callback, so a busy pool's workers never wait
for the event loop to come round to them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import socket
from multiprocessing.process import BaseProcess
from typing import Any

from deepaas import exceptions, log
from deepaas.model.loading import ModelSpec
from deepaas.model.v2 import worker as worker_main
from deepaas.model.v2.executor import Executor, Health

LOG = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a worker gets to exit after its socket closes
RESTART_DELAYS = (0.5, 1, 2, 5, 10, 30)  # back-off when a replacement fails


def _call_error(method: str, details: dict[str, Any]) -> exceptions.ModelCallError:
    kind = details.get("kind")
    common = {"exc_type": details["type"], "traceback": details.get("traceback", "")}
    if kind == "invalid_response":
        return exceptions.ModelCallError(details["message"], **common)
    if kind == "not_implemented":
        return exceptions.NotImplementedByModel(details["message"], **common)
    if kind == "http":
        return exceptions.ModelCallError(
            details["message"],
            status=details["status"],
            reason=details.get("reason"),
            **common,
        )
    return exceptions.ModelCallError(
        f"{details['type']}: {details['message']}"
        if details["type"] not in details["message"]
        else details["message"],
        **common,
    )


class Channel(asyncio.Protocol):
    """The server's end of a worker socket: frames in, messages to a callback."""

    def __init__(self, owner: WorkerProcess) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.attach(self)

    def data_received(self, data: bytes) -> None:
        header = worker_main.HEADER
        if not self._buffer and len(data) >= header.size:
            # The usual case, exactly one whole frame: decode it without copies.
            if header.size + header.unpack_from(data)[0] == len(data):
                self.owner.on_message(
                    worker_main.decode(memoryview(data)[header.size :])
                )
                return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= header.size:
            end = header.size + header.unpack_from(buffer)[0]
            if len(buffer) < end:
                break
            message = worker_main.decode(bytes(buffer[header.size : end]))
            del buffer[:end]
            self.owner.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.on_closed()

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Job:
    """One call: its encoded request, its result, and where it runs."""

    __slots__ = ("method", "frame", "future", "worker", "timeout", "timer")

    def __init__(
        self,
        method: str,
        frame: bytes,
        future: asyncio.Future[Any],
        timeout: float | None,
    ) -> None:
        self.method = method
        self.frame = frame
        self.future = future
        self.timeout = timeout
        self.worker: WorkerProcess | None = None
        self.timer: asyncio.TimerHandle | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Give the caller its answer (once) and stop the job's timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


class WorkerProcess:
    """One spawned worker and the socket to it."""

    def __init__(self, spec: ModelSpec, pool: WorkerPool) -> None:
        self.spec = spec
        self.pool = pool
        self.process: BaseProcess | None = None
        self.pid: int | None = None
        self.job: Job | None = None
        self.ready = False  # loaded and warmed the model
        self.retired = False  # stopped on purpose: its closing is expected
        self._channel: Channel | None = None
        self._started: asyncio.Future[Any] | None = None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    async def start(self) -> None:
        """Spawn the process and wait until it has loaded and warmed the model."""
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        ours, theirs = socket.socketpair()
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=worker_main.main,
            args=(
                theirs,
                self.spec,
                self.pool.warm,
                self.pool.log_level,
                self.pool.log_format,
            ),
            name=f"deepaas-worker-{self.spec.name}",
        )
        try:
            self.process.start()
        finally:
            theirs.close()
        self.pid = self.process.pid
        await loop.create_connection(lambda: Channel(self), sock=ours)
        message = await self._started
        if message is None:
            exitcode = await self.wait()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} died while loading it "
                f"({exceptions.describe_exit(exitcode)})."
            )
        status, details = message
        if status != "ready":
            await self.wait()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} could not load and warm it: "
                f"{details['type']}: {details['message']}"
            )
        self.ready = True

    def run(self, job: Job) -> None:
        """Send ``job`` to this (idle) worker."""
        assert self._channel is not None
        job.worker = self
        self.job = job
        self._channel.send(job.frame)

    def on_message(self, message: Any) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(message)
            return
        job, self.job = self.job, None
        if job is not None:
            status, value = message
            if status == "ok":
                job.settle(value)
            else:
                job.settle(error=_call_error(job.method, value))
        self.pool.worker_free(self)

    def on_closed(self) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
            return
        self.pool.worker_closed(self)

    def attach(self, channel: Channel) -> None:
        self._channel = channel

    async def wait(self, timeout: float = STOP_GRACE) -> int | None:
        """Wait (without blocking the loop) for the process to end; its exit code."""
        process = self.process
        if process is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if process.exitcode is None:
            ended = loop.create_future()

            def on_exit() -> None:
                # the sentinel stays readable: only the first call counts
                if not ended.done():
                    ended.set_result(None)

            loop.add_reader(process.sentinel, on_exit)
            try:
                await asyncio.wait_for(ended, timeout)
            except TimeoutError:
                pass
            finally:
                loop.remove_reader(process.sentinel)
        # The sentinel closes while the process exits, a moment before the
        # kernel lets it be reaped: poll for the exit code until then.
        while process.exitcode is None and loop.time() < deadline:
            await asyncio.sleep(0.005)
        return process.exitcode

    def kill(self) -> None:
        """End the process at once (SIGKILL)."""
        if self.process is not None and self.process.exitcode is None:
            self.process.kill()

    async def stop(self) -> None:
        """Close the socket (the worker exits when idle), kill it if it lingers."""
        self.retired = True
        if self._channel is not None:
            self._channel.close()
        if self.pid is None:
            return
        if await self.wait() is None:
            self.kill()
            await self.wait()


class WorkerPool(Executor):
    """``size`` workers for one model, shared by predict and train calls."""

    def __init__(
        self,
        spec: ModelSpec,
        size: int = 1,
        *,
        warm: bool = True,
        log_level: int = 0,
        log_format: str = "text",
    ) -> None:
        self.spec = spec
        self.size = size
        self.warm = warm
        self.log_level = log_level or logging.getLogger().getEffectiveLevel()
        self.log_format = log_format
        self._workers: set[WorkerProcess] = set()
        self._idle: list[WorkerProcess] = []
        self._busy: set[WorkerProcess] = set()
        self._pending: collections.deque[Job] = collections.deque()
        self._replacing: set[asyncio.Task[None]] = set()
        self._dying: set[WorkerProcess] = set()  # stopped, not yet reaped
        self._restarts = 0
        self._closed = False

    def _new_worker(self) -> WorkerProcess:
        return WorkerProcess(self.spec, self)

    async def start(self) -> None:
        workers = [self._new_worker() for _ in range(self.size)]
        self._workers.update(workers)
        results = await asyncio.gather(
            *(w.start() for w in workers), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        for w in workers:
            self.worker_free(w)
        LOG.info(
            "Model %r: %d worker(s) ready (pids %s)",
            self.spec.name,
            len(workers),
            ", ".join(str(w.pid) for w in workers),
        )

    async def call(
        self,
        method: str,
        kwargs: dict[str, Any],
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        log_path: str | None = None,
        finish_prediction: bool = False,
    ) -> Any:
        if self._closed:
            raise exceptions.PoolClosed("The server is shutting down.")
        loop = asyncio.get_running_loop()
        options = {
            "log": log_path,
            "finish": finish_prediction,
            "request_id": log.REQUEST_ID.get(),
        }
        frame = worker_main.encode((method, kwargs, options))
        job = Job(method, frame, loop.create_future(), timeout)
        if self._idle:
            self._run(self._idle.pop(), job)
        else:
            self._pending.append(job)
            if queue_timeout is not None:
                job.timer = loop.call_later(
                    queue_timeout, self._expire, job, queue_timeout
                )
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job, "cancelled")
            raise

    def _run(self, worker: WorkerProcess, job: Job) -> None:
        if job.timer is not None:  # it waited for a worker: that wait is over
            job.timer.cancel()
            job.timer = None
        self._busy.add(worker)
        worker.run(job)
        if job.timeout is not None:
            job.timer = asyncio.get_running_loop().call_later(
                job.timeout, self._time_out, job
            )

    def worker_free(self, worker: WorkerProcess) -> None:
        """A worker finished its call (or started): give it the next one now."""
        self._busy.discard(worker)
        if self._closed or worker.retired:
            return
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():  # skip calls cancelled while waiting
                self._run(worker, job)
                return
        self._idle.append(worker)

    def worker_closed(self, worker: WorkerProcess) -> None:
        """A worker's socket closed: expected if retired, else it died."""
        if worker.retired:
            return
        job, worker.job = worker.job, None
        self._busy.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        self._replace(worker)
        if job is not None and not job.future.done():
            self._track(self._report_death(worker, job))
        elif not self._closed:
            LOG.error("Model %r: idle worker %s died", self.spec.name, worker.pid)

    async def _report_death(self, worker: WorkerProcess, job: Job) -> None:
        exitcode = await worker.wait()
        if self._closed:
            job.settle(error=exceptions.PoolClosed("The server is shutting down."))
            return
        error = exceptions.WorkerDied(exitcode, job.method)
        LOG.error("Model %r: %s Replacing it.", self.spec.name, error.message)
        job.settle(error=error)

    def _expire(self, job: Job, seconds: float) -> None:
        """No worker became free within the caller's queue time-out."""
        job.timer = None
        if job.worker is None:
            job.settle(error=exceptions.NoFreeWorker(seconds))

    def _time_out(self, job: Job) -> None:
        """A call ran past its time limit: stop its worker."""
        job.timer = None
        LOG.warning(
            "Model %r: %s() exceeded %gs; stopping worker %s",
            self.spec.name,
            job.method,
            job.timeout,
            job.worker.pid if job.worker else None,
        )
        job.settle(error=exceptions.CallTimedOut(job.method, job.timeout or 0))
        self._abandon(job, "timed out")

    def _abandon(self, job: Job, why: str) -> None:
        """The caller gave up on ``job``: if it runs, its worker is stopped."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        worker = job.worker
        if worker is None or worker.job is not job:
            return  # still queued (it will be skipped) or already answered
        LOG.info(
            "Model %r: stopping worker %s: its %s() call was %s",
            self.spec.name,
            worker.pid,
            job.method,
            why,
        )
        worker.job = None
        worker.retired = True
        self._busy.discard(worker)
        worker.kill()
        self._replace(worker)

    def _track(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    def _replace(self, dead: WorkerProcess) -> None:
        dead.retired = True
        self._workers.discard(dead)
        self._dying.add(dead)
        self._restarts += 1
        if not self._closed:
            self._track(self._start_replacement(dead))

    async def _start_replacement(self, dead: WorkerProcess) -> None:
        await dead.stop()
        self._dying.discard(dead)
        for attempt, delay in enumerate((0, *RESTART_DELAYS)):
            await asyncio.sleep(delay)
            if self._closed:
                return
            worker = self._new_worker()
            self._workers.add(worker)
            try:
                await worker.start()
            except exceptions.DeepaasError as exc:
                self._workers.discard(worker)
                LOG.error(
                    "Model %r: replacement worker failed (attempt %d): %s",
                    self.spec.name,
                    attempt + 1,
                    exc,
                )
                continue
            if self._closed:
                await worker.stop()
                return
            LOG.info("Model %r: worker %s started", self.spec.name, worker.pid)
            self.worker_free(worker)
            return
        LOG.critical("Model %r: giving up replacing a worker", self.spec.name)

    def health(self) -> Health:
        return Health(
            size=self.size,
            alive=sum(1 for w in self._workers if w.ready and w.is_alive()),
            busy=len(self._busy),
            restarts=self._restarts,
        )

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return sorted(w.pid for w in self._workers if w.pid and w.is_alive())

    async def stop(self) -> None:
        self._closed = True
        for task in list(self._replacing):
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        closed = exceptions.PoolClosed("The server is shutting down.")
        while self._pending:
            self._pending.popleft().settle(error=closed)
        for worker in list(self._busy):
            if worker.job is not None:
                worker.job.settle(error=closed)
            worker.retired = True
            worker.kill()
        await asyncio.gather(
            *(w.stop() for w in self._workers | self._dying), return_exceptions=True
        )
        self._workers.clear()
        self._dying.clear()
        self._idle.clear()
        self._busy.clear()

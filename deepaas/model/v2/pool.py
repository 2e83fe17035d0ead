"""The local executor: a pool of persistent, spawned worker processes.

Each worker loads the model entry point itself (spawned, not forked, so CUDA and
TensorFlow start clean), warms it once, then runs calls one at a time. The
event loop talks to workers over sockets it reads asynchronously, so it never
blocks on a call. A worker that dies mid-call fails only that call and is
replaced; cancelling a call kills its worker, which is replaced too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import socket
from multiprocessing.process import BaseProcess
from typing import Any

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2 import worker as worker_main
from deepaas.model.v2.executor import Executor, Health

LOG = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a worker gets to exit after its socket closes
RESTART_DELAYS = (0.5, 1, 2, 5, 10, 30)  # back-off when a replacement fails


def _call_error(method: str, details: dict[str, Any]) -> exceptions.ModelCallError:
    kind = details.get("kind")
    common = {"exc_type": details["type"], "traceback": details.get("traceback", "")}
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
    """The server's end of a worker socket: frames in, messages out.

    Frames are parsed as bytes arrive and the one waiting receiver is woken,
    which costs far less per call than a StreamReader's two ``readexactly``.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._messages: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        header = worker_main.HEADER
        while len(buffer) >= header.size:
            end = header.size + header.unpack_from(buffer)[0]
            if len(buffer) < end:
                break
            self._messages.append(worker_main.decode(bytes(buffer[header.size : end])))
            del buffer[:end]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def send(self, message: Any) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(worker_main.encode(message))

    async def receive(self) -> Any:
        """The next message, or None once the worker has closed its end."""
        while not self._messages:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WorkerProcess:
    """One spawned worker and the socket to it."""

    def __init__(self, spec: ModelSpec, warm: bool, log_level: int) -> None:
        self.spec = spec
        self.warm = warm
        self.log_level = log_level
        self.process: BaseProcess | None = None
        self.pid: int | None = None
        self._channel: Channel | None = None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    async def start(self) -> None:
        """Spawn the process and wait until it has loaded and warmed the model."""
        ours, theirs = socket.socketpair()
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=worker_main.main,
            args=(theirs, self.spec, self.warm, self.log_level),
            name=f"deepaas-worker-{self.spec.name}",
        )
        try:
            self.process.start()
        finally:
            theirs.close()
        self.pid = self.process.pid
        _, self._channel = await asyncio.get_running_loop().create_connection(
            Channel, sock=ours
        )
        message = await self._channel.receive()
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

    async def call(
        self, method: str, kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Any:
        """Run one call; raise ``WorkerDied`` if the process ends first."""
        assert self._channel is not None
        # If the worker has died, the receive below sees the socket close.
        self._channel.send((method, kwargs, options))
        message = await self._channel.receive()
        if message is None:
            raise exceptions.WorkerDied(await self.wait(), method)
        status, value = message
        if status == "ok":
            return value
        raise _call_error(method, value)

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
        self, spec: ModelSpec, size: int = 1, *, warm: bool = True, log_level: int = 0
    ) -> None:
        self.spec = spec
        self.size = size
        self.warm = warm
        self.log_level = log_level or logging.getLogger().getEffectiveLevel()
        self._workers: set[WorkerProcess] = set()
        # None in the queue tells a waiting caller that the pool has stopped.
        self._idle: asyncio.Queue[WorkerProcess | None] = asyncio.Queue()
        self._waiting = 0
        self._busy: set[WorkerProcess] = set()
        self._replacing: set[asyncio.Task[None]] = set()
        self._dying: set[WorkerProcess] = set()  # stopped, not yet reaped
        self._restarts = 0
        self._closed = False

    def _new_worker(self) -> WorkerProcess:
        return WorkerProcess(self.spec, self.warm, self.log_level)

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
            self._idle.put_nowait(w)
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
    ) -> Any:
        if self._closed:
            raise exceptions.PoolClosed("The server is shutting down.")
        worker = await self._acquire(queue_timeout)
        self._busy.add(worker)
        try:
            if timeout is None:
                result = await worker.call(method, kwargs, {"log": log_path})
            else:
                async with asyncio.timeout(timeout):
                    result = await worker.call(method, kwargs, {"log": log_path})
        except TimeoutError:
            LOG.warning(
                "Model %r: %s() exceeded %gs; stopping worker %s",
                self.spec.name,
                method,
                timeout,
                worker.pid,
            )
            worker.kill()
            self._replace(worker)
            raise exceptions.CallTimedOut(method, timeout or 0) from None
        except exceptions.WorkerDied as exc:
            if self._closed:
                raise exceptions.PoolClosed("The server is shutting down.") from exc
            LOG.error("Model %r: %s Replacing it.", self.spec.name, exc.message)
            self._replace(worker)
            raise
        except exceptions.ModelCallError:
            # The model raised and the worker answered: it is ready for more.
            self._idle.put_nowait(worker)
            raise
        except BaseException:
            # Cancelled (or broken) mid-call: the worker's state is unknown.
            LOG.info(
                "Model %r: stopping worker %s after its %s() call was cancelled",
                self.spec.name,
                worker.pid,
                method,
            )
            worker.kill()
            self._replace(worker)
            raise
        finally:
            self._busy.discard(worker)
        self._idle.put_nowait(worker)
        return result

    async def _acquire(self, queue_timeout: float | None) -> WorkerProcess:
        """An idle worker, waiting at most ``queue_timeout`` seconds for one."""
        if not self._idle.empty():  # the common case: no timer, no waiting
            worker = self._idle.get_nowait()
            if worker is None or self._closed:
                raise exceptions.PoolClosed("The server is shutting down.")
            return worker
        self._waiting += 1
        try:
            # Cancelling Queue.get never loses an item: it stays queued.
            async with asyncio.timeout(queue_timeout):
                worker = await self._idle.get()
        except TimeoutError:
            raise exceptions.NoFreeWorker(queue_timeout or 0) from None
        finally:
            self._waiting -= 1
        if worker is None or self._closed:
            raise exceptions.PoolClosed("The server is shutting down.")
        return worker

    def _replace(self, dead: WorkerProcess) -> None:
        self._workers.discard(dead)
        self._dying.add(dead)
        self._restarts += 1
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._start_replacement(dead))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

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
            self._idle.put_nowait(worker)
            return
        LOG.critical("Model %r: giving up replacing a worker", self.spec.name)

    def health(self) -> Health:
        return Health(
            size=self.size,
            alive=sum(1 for w in self._workers if w.is_alive()),
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
        for _ in range(self._waiting):
            self._idle.put_nowait(None)
        for worker in self._busy:
            worker.kill()
        await asyncio.gather(
            *(w.stop() for w in self._workers | self._dying), return_exceptions=True
        )
        self._workers.clear()
        self._dying.clear()

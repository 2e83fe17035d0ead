"""The local executor: worker processes spawned on this machine
(``WorkerProcess``, a ``ConnectedWorker`` talking over a socket pair), pooled by
``LocalExecutor``. The queue, batching, time limits and replacements are the
pool's (``deepaas.runtime.pool``).

The workers are spawned as fresh interpreters (``python -c``) that import only
the worker module, then told what to load with a ``Start`` message, which also
names the worker's scratch directories (created here, removed when it ends), the
memory it shares with the server for results (``ResultSlots``) and, through its
environment, the GPUs it may see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from deepaas import exceptions, leftovers
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import SharedResult
from deepaas.runtime import protocol
from deepaas.runtime.channel import Channel, ConnectedWorker
from deepaas.runtime.pool import WorkerPool
from deepaas.runtime.protocol import Call, ResultMemory, Scratch
from deepaas.runtime.results import RESULT_SLOT_SIZE, ResultSlots
from deepaas.runtime.workers import PendingCall, WorkerState

LOG = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a worker gets to exit after its socket closes
# A worker's scratch directories: deepaas-worker-<server pid>-<random>.
SCRATCH_PREFIX = "deepaas-worker-"


class WorkerProcess(ConnectedWorker):
    """One spawned worker and the socket to it."""

    pool: LocalExecutor

    def __init__(self, spec: ModelSpec, pool: LocalExecutor, slot: int = 0) -> None:
        super().__init__(spec, pool, slot)
        self.process: asyncio.subprocess.Process | None = None
        self.results: ResultSlots | None = None  # memory shared for results

    def result_memory(self) -> ResultMemory | None:
        return self.results.memory if self.results is not None else None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _launch(self) -> list[str]:
        """Spawn the process, connected to this one by a socket pair; the
        import path it is to use.

        The worker is a fresh interpreter that imports only the worker module
        (not the server's main module, as multiprocessing's spawn would), so
        it starts fast, stays small, and needs no ``__main__`` guard in
        whatever script built the server.
        """
        loop = asyncio.get_running_loop()
        self.scratch = self._make_scratch()
        self.results = ResultSlots.make(self.pool.result_slots, RESULT_SLOT_SIZE)
        ours, theirs = socket.socketpair()
        try:
            with theirs:
                fds = [theirs.fileno()]
                if self.results is not None:
                    fds.append(self.results.fd)  # the same number in the worker
                self.process = await asyncio.create_subprocess_exec(
                    *protocol.worker_command(
                        str(theirs.fileno()),
                        self.spec.name,  # for ps
                    ),
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=fds,
                    env=self._environment(),
                )
            self.pid = self.process.pid
            _, self._channel = await loop.create_connection(
                lambda: Channel(self), sock=ours
            )
        except BaseException:  # out of fds or processes: leave nothing behind
            ours.close()
            self.kill()
            self.remove_scratch()
            raise
        finally:
            if self.results is not None:
                self.results.close_fd()
        return list(sys.path)

    @property
    def devices(self) -> str | None:
        """The GPUs this worker sees (its ``CUDA_VISIBLE_DEVICES``), if the
        pool assigns them: the pool's devices, round robin by slot."""
        devices = self.pool.devices
        return devices[self.slot % len(devices)] if devices else None

    def _environment(self) -> dict[str, str] | None:
        """The worker's environment: the server's, with its GPUs when the
        pool assigns them (set before the model is imported)."""
        devices = self.devices
        if devices is None:
            return None
        return {**os.environ, "CUDA_VISIBLE_DEVICES": devices}

    def _make_scratch(self) -> Scratch | None:
        """This worker's own directories under the pool's scratch roots."""
        roots = self.pool.scratch
        if roots is None:
            return None
        memory = None
        prefix = leftovers.owned_prefix(SCRATCH_PREFIX)
        if roots.memory is not None:
            with contextlib.suppress(OSError):  # a full or gone tmpfs: disk only
                memory = tempfile.mkdtemp(prefix=prefix, dir=roots.memory)
        try:
            disk = tempfile.mkdtemp(prefix=prefix, dir=roots.disk)
        except OSError:
            if memory is not None:
                os.rmdir(memory)
            raise
        return Scratch(memory, disk, roots.memory_max)

    def remove_scratch(self) -> None:
        """Remove what the worker left in its directories, and unmap the
        memory it shared (it has ended)."""
        if self.results is not None:
            self.results.close()
        if self.scratch is not None:
            for directory in (self.scratch.memory, self.scratch.disk):
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)
            self.scratch = None

    def _with_slot(self, pending: PendingCall) -> Call:
        """The call's message, with a slot of the result memory for its
        result when it is a prediction answered at once and one is free
        (and its form's body written there: ``protocol.SharedBody``)."""
        message = pending.message
        if self.results is None or not message.finish_prediction or message.stream:
            return message
        slot = pending.slot = self.results.take()
        if slot is None:
            return message
        form = message.form
        if form is not None and type(form.body) is bytes:
            body = self.results.put_body(slot, form.body)
            if body is not None:
                return message.with_slot(slot, form.with_body(body))
        return message.with_slot(slot)

    def received(self, value: Any, slot: int | None) -> Any:
        results = self.results
        if results is not None and slot is not None:
            if isinstance(value, SharedResult) and value.slot == slot:
                return results.result(value)
            results.free(slot)  # not used
        return super().received(value, slot)

    async def wait(self, timeout: float = STOP_GRACE) -> int | None:
        """Wait (without blocking the loop) for the process to end; its exit
        code (negative: the signal that killed it), None if still running."""
        process = self.process
        if process is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout)
        return process.returncode

    async def how_it_ended(self) -> str:
        self.exitcode = await self.wait()
        return exceptions.describe_exit(self.exitcode)

    def kill(self) -> None:
        """End the process at once (SIGKILL)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it just ended
                self.process.kill()

    async def stop(self) -> None:
        """Close the socket (the worker exits when idle), kill it if it lingers.

        A worker still loading or warming the model is killed at once: a long
        warm-up must not hold up a shutdown.
        """
        if self.state is WorkerState.STARTING:
            self.kill()
        self.state = WorkerState.RETIRED
        if self._channel is not None:
            self._channel.close()
        if self.pid is None:
            self.remove_scratch()
            return
        if await self.wait() is None:
            self.kill()
            await self.wait()
        self.remove_scratch()


class LocalExecutor(WorkerPool):
    """``size`` spawned worker processes on this machine (the default)."""

    reads_forms = True

    def __init__(
        self,
        spec: ModelSpec,
        size: int = 1,
        *,
        scratch: Scratch | None = None,
        result_slots: int = 0,
        devices: list[str] | None = None,
        **options: Any,
    ) -> None:
        """``scratch``: the directories under which each worker gets its own
        for large results; None sends every result through the worker's
        socket. ``result_slots``: how many results of up to
        ``RESULT_SLOT_SIZE`` bytes each worker may hold in memory it shares
        with the server, sent to clients from there (0: none, results go
        through ``scratch``). ``devices``: GPU ids (``CUDA_VISIBLE_DEVICES``
        values) given to the workers round robin; None leaves the environment
        as it is. The other ``options`` are ``WorkerPool``'s."""
        super().__init__(spec, size, **options)
        self.scratch = scratch
        self.result_slots = result_slots
        self.devices = list(devices or [])

    async def start(self) -> None:
        if self.scratch is not None:  # what workers of killed servers left
            for root in (self.scratch.memory, self.scratch.disk):
                if root is not None:
                    leftovers.sweep(root, SCRATCH_PREFIX)
        await super().start()

    def _new_worker(self, slot: int) -> WorkerProcess:
        return WorkerProcess(self.spec, self, slot)

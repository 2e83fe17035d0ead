"""Lost workers replaced: a retired worker is stopped and reaped, and a fresh
one started in its slot, tried again with back-off, whatever goes wrong,
until one starts or its pool stops. Capacity that was lost is always won back
once the fault is gone."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from deepaas.runtime.workers import PoolWorker, WorkerState

LOG = logging.getLogger(__name__)

# Back-off between attempts to start a replacement, then every 30 s for good.
RESTART_DELAYS = (0, 0.5, 1, 2, 5, 10)
RESTART_DELAY_MAX = 30.0


class Replacements:
    """The replacing of one pool's workers, and the tasks it runs.

    ``workers`` is the pool's set of live workers (a replacement is in it
    while it starts); ``new_worker`` makes one for a slot, ``started`` hands a
    started one to the pool, ``closed`` tells whether the pool has stopped.
    """

    def __init__(
        self,
        name: str,
        workers: set[PoolWorker],
        new_worker: Callable[[int], PoolWorker],
        started: Callable[[PoolWorker], None],
        closed: Callable[[], bool],
    ) -> None:
        self.name = name
        self.workers = workers
        self.new_worker = new_worker
        self.started = started
        self.closed = closed
        self.tasks: set[asyncio.Task[None]] = set()  # replacements, reports
        self.dying: set[PoolWorker] = set()  # retired, not yet reaped
        self.restarts = 0
        self.start_failures = 0  # replacements that could not start

    def track(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task the pool cancels when it stops."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def replace(self, retired: PoolWorker) -> None:
        """Retire a worker and start a fresh one in its place."""
        retired.state = WorkerState.RETIRED
        self.workers.discard(retired)
        self.dying.add(retired)
        self.restarts += 1
        self.track(self._reap(retired))
        if not self.closed():
            self.track(self._start_replacement(retired.slot))

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _reap(self, retired: PoolWorker) -> None:
        await retired.stop()
        self.dying.discard(retired)

    async def _start_replacement(self, slot: int) -> None:
        delays = itertools.chain(RESTART_DELAYS, itertools.repeat(RESTART_DELAY_MAX))
        for attempt, delay in enumerate(delays, start=1):
            await asyncio.sleep(delay)
            if self.closed():
                return
            worker = self.new_worker(slot)
            self.workers.add(worker)
            try:
                await worker.start()
            except Exception as exc:  # a model that fails, or no fds or memory
                self.workers.discard(worker)
                self.start_failures += 1
                LOG.error(
                    "Model %r: a replacement worker could not start (attempt %d, "
                    "next in %gs): %s",
                    self.name,
                    attempt,
                    RESTART_DELAYS[attempt]
                    if attempt < len(RESTART_DELAYS)
                    else RESTART_DELAY_MAX,
                    getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
                )
                continue
            if self.closed():
                await worker.stop()
                return
            LOG.info("Model %r: worker %s started", self.name, worker.pid)
            self.started(worker)
            return

"""Lost workers replaced: a retired worker is stopped and reaped, and a fresh
one started in its slot, tried again with back-off, whatever goes wrong,
until one starts or its pool stops. Capacity that was lost is always won back
once the fault is gone.

A reload replaces every worker on purpose (``Replacements.roll``): slot by
slot, a fresh worker of the next generation starts, and once it has warmed up
it takes calls and the slot's older worker leaves (at once if idle, else once
its calls are answered). A slot's worker is never gone before its successor
serves, so a pool of one worker serves throughout.
"""

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
    while it starts); ``new_worker`` makes one for a slot (of the pool's
    current generation), ``started`` hands a started one to the pool,
    ``leave`` tells one of an older generation to leave, ``closed`` tells
    whether the pool has stopped.
    """

    def __init__(
        self,
        name: str,
        workers: set[PoolWorker],
        new_worker: Callable[[int], PoolWorker],
        started: Callable[[PoolWorker], None],
        leave: Callable[[PoolWorker], None],
        closed: Callable[[], bool],
    ) -> None:
        self.name = name
        self.workers = workers
        self.new_worker = new_worker
        self.started = started
        self.leave = leave
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
        """Retire a worker and start a fresh one in its place (unless a
        worker of a newer generation has taken its slot)."""
        self.dismiss(retired)
        self.restarts += 1
        if not self.closed():
            self.track(self._start_replacement(retired.slot, retired.generation))

    def dismiss(self, retired: PoolWorker) -> None:
        """Retire a worker, with no replacement: it is stopped and reaped."""
        retired.state = WorkerState.RETIRED
        self.workers.discard(retired)
        self.dying.add(retired)
        self.track(self._reap(retired))

    def succeeded(self, slot: int, generation: int) -> bool:
        """Whether ``slot`` has a worker of a generation after ``generation``
        (one that a reload started there, not leaving)."""
        return any(
            w.slot == slot and w.generation > generation and not w.leaving
            for w in self.workers
        )

    async def roll(
        self, size: int, generation: int, serving: Callable[[], None] | None
    ) -> None:
        """Give each of ``size`` slots a worker of ``generation``, one slot at
        a time; its older workers leave once the new one takes calls.
        ``serving`` is called once the first new worker takes calls.

        Raises what a new worker failed to start with: the slots not yet
        rolled keep their workers.
        """
        for slot in range(size):
            if self.closed():
                return
            if not self.succeeded(slot, generation - 1):
                worker = self.new_worker(slot)
                self.workers.add(worker)
                try:
                    await worker.start()
                except Exception:  # (it has stopped itself)
                    self.workers.discard(worker)
                    raise
                if self.closed():
                    return  # the pool stops it with the others
                LOG.info(
                    "Model %r: worker %s of generation %d started",
                    self.name,
                    worker.pid,
                    generation,
                )
                self.started(worker)
            if slot == 0 and serving is not None:
                try:
                    serving()
                except Exception:  # the new version cannot be served: it goes
                    for new in [w for w in self.workers if w.generation == generation]:
                        self.leave(new)
                    raise
            for old in [
                w for w in self.workers if w.slot == slot and w.generation < generation
            ]:
                self.leave(old)

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _reap(self, retired: PoolWorker) -> None:
        await retired.stop()
        self.dying.discard(retired)

    async def _start_replacement(self, slot: int, generation: int) -> None:
        delays = itertools.chain(RESTART_DELAYS, itertools.repeat(RESTART_DELAY_MAX))
        for attempt, delay in enumerate(delays, start=1):
            await asyncio.sleep(delay)
            if self.closed() or self.succeeded(slot, generation):
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

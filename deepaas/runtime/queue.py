"""The calls waiting for a worker of a pool (``CallQueue``)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator

from deepaas import exceptions
from deepaas.runtime.workers import PendingCall


class CallQueue:
    """The calls waiting for a worker, first come first served.

    Their queue time-outs are kept by one timer for the whole queue (a timer
    per call cost a heap push and a cancelled entry per prediction): it is
    set for the earliest deadline, and each sweep sets it again for the next
    one. A call given up while queued stays until it comes to the head, and
    is skipped then.
    """

    def __init__(self) -> None:
        self._calls: collections.deque[PendingCall] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __bool__(self) -> bool:
        return bool(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[PendingCall]:
        return iter(self._calls)

    def push(
        self,
        pending: PendingCall,
        queue_timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Queue ``pending``; past ``queue_timeout`` seconds still queued, it
        fails (``NoFreeWorker``)."""
        self._calls.append(pending)
        if queue_timeout is not None:
            self._loop = loop
            pending.queue_timeout = queue_timeout
            pending.deadline = deadline = loop.time() + queue_timeout
            if self._sweep is None or deadline < self._sweep.when():
                self._sweep_at(deadline)

    def push_front(self, pending: PendingCall) -> None:
        """Put back at the head a call that had been taken but not started."""
        self._calls.appendleft(pending)

    def head(self) -> PendingCall | None:
        """The first call still waited for (those given up are dropped)."""
        calls = self._calls
        while calls and calls[0].future.done():
            calls.popleft()
        return calls[0] if calls else None

    def pop(self) -> PendingCall:
        """Take the head (as ``head`` found it)."""
        return self._calls.popleft()

    def take(
        self, batch_size: int, batchable: Callable[[PendingCall], bool]
    ) -> list[PendingCall]:
        """The next call, with as many other queued predictions as fit in
        its batch when it is one; calls given up while queued are dropped."""
        calls = self._calls
        while calls:
            first = calls.popleft()
            if first.future.done():
                continue
            if not batchable(first):
                return [first]
            batch, others = [first], list[PendingCall]()
            while calls and len(batch) < batch_size:
                pending = calls.popleft()
                if pending.future.done():
                    continue
                (batch if batchable(pending) else others).append(pending)
            calls.extendleft(reversed(others))  # they keep their place
            return batch
        return []

    def waiting(self) -> int:
        """The calls still waited for."""
        return sum(1 for pending in self._calls if not pending.future.done())

    def fail_all(self, error: BaseException) -> None:
        """Every queued call fails with ``error``."""
        while self._calls:
            self._calls.popleft().settle(error=error)

    def close(self, error: BaseException) -> None:
        self.fail_all(error)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _sweep_at(self, when: float) -> None:
        assert self._loop is not None
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = self._loop.call_at(when, self._sweep_queue)

    def _sweep_queue(self) -> None:
        """Calls still queued past their deadline fail: no worker became free
        within their caller's queue time-out."""
        assert self._loop is not None
        self._sweep = None
        now = self._loop.time()
        upcoming: float | None = None
        for pending in self._calls:
            deadline = pending.deadline
            if deadline is None or pending.future.done():
                continue  # no time-out, or given up (skipped when taken)
            if deadline <= now:
                pending.settle(error=exceptions.NoFreeWorker(pending.queue_timeout))
            elif upcoming is None or deadline < upcoming:
                upcoming = deadline
        if upcoming is not None:
            self._sweep_at(upcoming)

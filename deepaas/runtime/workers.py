"""One worker as its pool sees it (``PoolWorker``), wherever it runs, what
it tells its pool (``WorkerEvents``), and one call as the pool follows it
from its caller to a worker and back (``PendingCall``)."""

from __future__ import annotations

import abc
import asyncio
import enum
from typing import Any, Protocol

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import SharedResult, SpooledResult
from deepaas.runtime.executor import ItemStream, ProgressCallback
from deepaas.runtime.protocol import Answer, Call, Failure, Item, Progress, Replies
from deepaas.runtime.results import take_over


class CallState(enum.Enum):
    """Where a call is.

    The life of one call (a ``PendingCall``) in its pool::

        call() ─► QUEUED ── a worker is idle, or frees up ─► RUNNING
                    │                                      │
                    │ queue time-out: NoFreeWorker         │ reply: its result,
                    │ caller cancelled: skipped when taken │   or the model's error
                    │ pool stopped: PoolClosed             │ time limit: CallTimedOut
                    ▼                                      │ caller cancelled
                  SETTLED ◄────────────────────────────────┘ worker died: WorkerDied
                                                             pool stopped: PoolClosed

    The pool's ``call`` creates it and hands it to ``_dispatch``; ``_run_on``
    (or ``_send_ahead``) moves it to RUNNING on a worker; ``on_reply`` settles
    it and frees the worker for the next queued call. Everything that cuts a
    call short goes through ``_abandon`` (time limit, cancellation) or
    ``on_worker_lost`` (the worker died); either way the worker is killed if
    need be and replaced by a fresh one (``deepaas.runtime.replacements``).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SETTLED = "settled"


class PendingCall:
    """One call: its request, its caller's future, where it runs."""

    __slots__ = (
        "method",
        "message",
        "future",
        "time_limit",
        "worker",
        "timer",
        "state",
        "on_progress",
        "items",
        "slot",
        "deadline",
        "queue_timeout",
        "queue_span",
    )

    def __init__(
        self,
        message: Call,
        future: asyncio.Future[Any],
        time_limit: float | None,
        on_progress: ProgressCallback | None = None,
        items: ItemStream | None = None,
    ) -> None:
        self.method = message.method
        self.items = items
        self.message = message
        self.future = future
        self.time_limit = time_limit
        self.on_progress = on_progress
        self.worker: PoolWorker | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.state = CallState.QUEUED
        self.slot: int | None = None  # of its worker's result memory, if given
        # loop time by which a queued call must have a worker (queue_timeout)
        self.deadline: float | None = None
        self.queue_timeout = 0.0
        # with tracing on: the span of its wait for a worker, until it ends
        self.queue_span: Any = None

    def end_queue_span(self, batch: int = 0) -> None:
        """The call has left the queue: for a worker (in a batch of
        ``batch``), or for good (0)."""
        span, self.queue_span = self.queue_span, None
        if span is not None:
            if batch:
                span.set_attribute("deepaas.batch.size", batch)
            span.end()

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Give the caller its answer (once) and stop the call's timer."""
        self.state = CallState.SETTLED
        self.cancel_timer()
        if self.queue_span is not None:
            self.end_queue_span()
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class WorkerEvents(Protocol):
    """What a worker tells the pool it belongs to."""

    def on_reply(self, worker: PoolWorker, reply: Answer | Failure | Replies) -> None:
        """It answered its calls."""

    def on_progress(self, worker: PoolWorker, progress: Progress) -> None:
        """Its call says how far it has got."""

    def on_item(self, worker: PoolWorker, item: Item) -> None:
        """An item of the streamed prediction it runs."""

    def on_worker_lost(self, worker: PoolWorker) -> None:
        """Its connection closed: it ended."""


class WorkerState(enum.Enum):
    """Where a worker is.

    The life of one worker (a ``WorkerProcess``)::

        STARTING ──Ready──► IDLE ◄──reply──► BUSY
           │                  │               │
           └── Failure ───────┴── killed, died, stopped or ──► RETIRED
                                  missed a heartbeat (idle)
    """

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RETIRED = "retired"


class PoolWorker(abc.ABC):
    """One worker as its pool sees it, wherever it runs: a process here
    (``WorkerProcess``) or an actor on a cluster. It tells the pool of each
    reply (``on_reply``) and of its loss (``on_worker_lost``)."""

    pool: WorkerEvents

    def __init__(self, spec: ModelSpec, slot: int = 0) -> None:
        self.spec = spec
        self.slot = slot  # its place in the pool, kept by its replacements
        self.state = WorkerState.STARTING
        self.pid: int | None = None
        self.node: str | None = None  # the machine it runs on, when not this one
        # What it runs, when BUSY: one call, or the predictions of a batch.
        self.calls: list[PendingCall] = []
        # A prediction sent ahead to run next (never started while it waits
        # here), and when the worker's current calls began (loop time).
        self.ahead: PendingCall | None = None
        self.started = 0.0
        self.pinged_at: float | None = None  # an unanswered ping was sent then
        self.exitcode: int | None = None  # once it has ended, if known
        # The reload it was started by (1: the first workers), and whether
        # a newer one replaces it: it then takes no more calls, and ends
        # once those it has are answered.
        self.generation = 1
        self.leaving = False

    @property
    def retired(self) -> bool:
        """Stopped on purpose or dead: its end is expected."""
        return self.state is WorkerState.RETIRED

    @property
    def devices(self) -> str | None:
        """The GPUs this worker sees (its ``CUDA_VISIBLE_DEVICES``), if any
        were given to it."""
        return None

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the worker; return once it has loaded and warmed the model
        (``ModelLoadError`` when it cannot)."""

    @abc.abstractmethod
    def run(self, calls: list[PendingCall]) -> None:
        """Send one call, or several predictions as a batch, to this (idle)
        worker; its reply comes back through ``pool.on_reply``."""

    def received(self, value: Any, slot: int | None) -> Any:
        """A call's result (None for a failure) as its caller gets it: a
        result file taken over; an error for what cannot be. ``slot`` is the
        call's slot of this worker's result memory, if it was given one."""
        if isinstance(value, SpooledResult):
            return take_over(value)
        if isinstance(value, SharedResult):  # never given a slot
            return exceptions.ModelCallError(
                "The worker answered in memory it does not share with the server."
            )
        return value

    def send_ahead(self, pending: PendingCall) -> bool:
        """Send ``pending`` to this busy worker, to run once its calls are
        answered; False where the worker cannot take calls ahead."""
        return False

    @abc.abstractmethod
    def ping(self) -> None:
        """Ask the worker to show it is alive (answered between calls);
        clear ``pinged_at`` when it answers."""

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the worker still runs."""

    @abc.abstractmethod
    async def how_it_ended(self) -> str:
        """Once it is lost: in words, how it ended (for ``WorkerDied``)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End the worker at once, whatever it is doing."""

    def pause_reading(self) -> None:  # noqa: B027 - optional flow control
        """Stop taking the worker's messages for a while (it then blocks
        sending)."""

    def resume_reading(self) -> None:  # noqa: B027 - optional flow control
        """Take the worker's messages again."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """End the worker once it is idle, and clean up after it."""

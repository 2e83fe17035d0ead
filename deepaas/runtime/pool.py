"""Pools of workers: what every executor shares.

``WorkerPool`` holds what every executor shares (the queue, dispatch,
batching, time limits, replacements and health) over ``PoolWorker``-s, which
may run anywhere; ``deepaas.runtime.local.LocalExecutor`` is the pool of
``WorkerProcess``-es on this machine, and ``deepaas.runtime.ray_executor``
one of Ray actors.

Each local worker loads the model entry point itself (a new process, not a
fork, so CUDA and TensorFlow start clean), warms it once, then runs calls one
at a time. The event loop talks to workers over sockets it reads
asynchronously, so it never blocks on a call, and dispatch happens in
callbacks: when a worker's reply arrives, the next queued call is written to
it in the same callback, so a busy pool's workers never wait for the event
loop to come round to them.

The life of a call is told with ``CallState``, that of a worker with
``WorkerState`` (``deepaas.runtime.workers``).

While recent predictions took under ``SEND_AHEAD_BELOW``, a busy worker is
also sent the next queued prediction ahead (``PoolWorker.ahead``): it reads it
as soon as it has answered, without sleeping in between. A call sent ahead
has not started; if its worker is stopped or lost it goes back to the head of
the queue, and its time limit starts when its worker takes it up.

For a model with ``predict_batch``, a worker that frees up takes up to
``batch_size`` queued predictions at once (one ``Batch``, answered by
``Replies``); each is still its own ``PendingCall``, settled on its own.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from deepaas import exceptions, log
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import (
    MappedResult,
    OpenResult,
)
from deepaas.runtime.executor import (
    Executor,
    Health,
    ItemStream,
    ProgressCallback,
    WorkerInfo,
)
from deepaas.runtime.protocol import (
    Answer,
    Call,
    Failure,
    FormRead,
    FormResult,
    Item,
    Progress,
    RawForm,
    Replies,
)
from deepaas.runtime.queue import CallQueue
from deepaas.runtime.replacements import Replacements
from deepaas.runtime.workers import CallState, PendingCall, PoolWorker, WorkerState
from deepaas.tracing import Tracing, worker_environment

LOG = logging.getLogger(__name__)

# A busy worker is sent the next queued prediction ahead, to read as soon as
# it answers, while recent predictions took less than this (seconds): the
# worker then goes from call to call without sleeping in between.
SEND_AHEAD_BELOW = 0.005


class WorkerPool(Executor):
    """``size`` workers for one model, shared by predict and train: the
    queue, dispatch, batching, time limits and replacements, whatever the
    workers are (``_new_worker`` makes one)."""

    def __init__(
        self,
        spec: ModelSpec,
        size: int = 1,
        *,
        warm: bool = True,
        log_level: int = 0,
        log_format: str = "text",
        heartbeat: float | None = None,
        batch_size: int = 1,
        batch_wait: float = 0.0,
        tracing: Tracing | None = None,
    ) -> None:
        """``heartbeat``: seconds between checks that idle workers answer (a
        worker that misses one is replaced); None for no checks.
        ``batch_size`` above 1 (for a model with ``predict_batch``): up to
        that many waiting predictions go to a worker as one batch; a free
        worker waits up to ``batch_wait`` seconds for a batch to fill.
        ``tracing``: the server's, when it traces: each call's wait in the
        queue is a span, and the call takes its context to the worker,
        which traces too."""
        self.spec = spec
        self.size = size
        self.warm = warm
        self.log_level = log_level or logging.getLogger().getEffectiveLevel()
        self.log_format = log_format
        self._workers: set[PoolWorker] = set()  # STARTING, IDLE or BUSY
        self._idle: list[PoolWorker] = []
        self._busy: set[PoolWorker] = set()
        self._queue = CallQueue()
        self._replacements = Replacements(
            spec.name,
            self._workers,
            self._make_worker,
            self._worker_free,
            self._leave,
            lambda: self._closed,
        )
        self.generation = 1  # of the workers, one more for each reload
        self._unresponsive = 0  # workers replaced for missing a heartbeat
        self._closed = False
        self.heartbeat = heartbeat
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self._flush_timer: asyncio.TimerHandle | None = None
        # how long recent predictions took (seconds; None before the first)
        self.call_time: float | None = None
        self._batches = 0  # batches of more than one prediction run
        self._batched = 0  # predictions they held
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it runs on
        self.tracing = tracing
        self.tracing_environment = worker_environment() if tracing is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the pool runs on (looked up once: on Python 3.11
        each lookup is a system call)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @abc.abstractmethod
    def _new_worker(self, slot: int) -> PoolWorker:
        """A worker (not started) for ``slot``."""

    def _make_worker(self, slot: int) -> PoolWorker:
        """A worker (not started) for ``slot``, of the current generation."""
        worker = self._new_worker(slot)
        worker.generation = self.generation
        return worker

    async def start(self) -> None:
        workers = [self._make_worker(slot) for slot in range(self.size)]
        self._workers.update(workers)
        results = await asyncio.gather(
            *(w.start() for w in workers), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        for w in workers:
            self._worker_free(w)
        if self.heartbeat:
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._watch_idle_workers(self.heartbeat)
            )
        LOG.info(
            "Model %r: %d worker(s) ready (pids %s)",
            self.spec.name,
            len(workers),
            ", ".join(str(w.pid) for w in workers),
        )

    # -- one call, from call() to its answer ---------------------------------

    async def call(
        self,
        method: str,
        kwargs: dict[str, Any],
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        log_path: str | None = None,
        finish_prediction: bool = False,
        validate: bool = False,
        on_progress: ProgressCallback | None = None,
        items: ItemStream | None = None,
        form: RawForm | None = None,
    ) -> Any:
        if self._closed:
            raise exceptions.PoolClosed("The server is shutting down.")
        if not self._idle and not self._busy:  # no worker running
            refusal = self._refusal()
            if refusal is not None:
                raise refusal
        tracing = self.tracing
        if tracing is not None and not tracing.recording():
            tracing = None  # a request the sampler left out
        message = Call(
            method,
            kwargs,
            log_path=log_path,
            finish_prediction=finish_prediction,
            validate=validate or form is not None,
            request_id=log.REQUEST_ID.get(),
            stream=items is not None,
            form=form,
            trace=tracing.traceparent() if tracing is not None else None,
        )
        pending = PendingCall(
            message, self.loop.create_future(), timeout, on_progress, items
        )
        if tracing is not None:
            pending.queue_span = tracing.start_span(
                "queue", attributes={"deepaas.model": self.spec.name}
            )
        self._dispatch(pending, queue_timeout)
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._abandon(pending, "cancelled")
            raise

    def _refusal(self) -> exceptions.DeepaasError | None:
        """Why a call is refused at once while no worker runs (None: it
        waits for one, as a starting or replaced worker comes soon)."""
        return None

    def refuse_waiting(self) -> None:
        """Fail the calls waiting for a worker when none runs and
        ``_refusal`` says why none will come soon."""
        if self._idle or self._busy:
            return
        refusal = self._refusal()
        if refusal is None:
            return
        self._queue.fail_all(refusal)

    def _batchable(self, pending: PendingCall) -> bool:
        """Whether ``pending`` may run in a batch with others."""
        return (
            self.batch_size > 1
            and pending.method == "predict"
            and pending.items is None
        )

    def _dispatch(self, pending: PendingCall, queue_timeout: float | None) -> None:
        """QUEUED: run it on an idle worker at once, or wait for one.

        A prediction of a batching model that finds a worker idle while
        others are busy (under load, then) waits up to ``batch_wait`` for
        more to batch with it; with every worker idle it runs at once.
        """
        forming = self.batch_wait and self._busy and self._batchable(pending)
        if self._idle and not forming:
            self._run_on(self._idle.pop(), [pending])
            return
        self._queue.push(pending, queue_timeout, self.loop)
        if self._idle:  # a batch is forming
            if len(self._queue) >= self.batch_size:
                self._flush()
            elif self._flush_timer is None:
                self._flush_timer = self.loop.call_later(self.batch_wait, self._flush)

    def _flush(self) -> None:
        """A forming batch is full, or has waited long enough: run what is
        queued on the idle workers."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        while self._idle and not self._closed:
            calls = self._take_next()
            if not calls:
                return
            self._run_on(self._idle.pop(), calls)

    def _take_next(self) -> list[PendingCall]:
        """The next queued call, or batch of predictions."""
        return self._queue.take(self.batch_size, self._batchable)

    def _run_on(self, worker: PoolWorker, calls: list[PendingCall]) -> None:
        """QUEUED -> RUNNING: the calls go to ``worker``, their time limits
        start."""
        if len(calls) > 1:
            self._batches += 1
            self._batched += len(calls)
        self._busy.add(worker)
        for pending in calls:
            pending.state = CallState.RUNNING
            if pending.queue_span is not None:
                pending.end_queue_span(len(calls))
        worker.run(calls)
        self._started(worker, calls)
        if self._queue:
            self._send_ahead(worker)

    def _started(self, worker: PoolWorker, calls: list[PendingCall]) -> None:
        """``calls`` are what ``worker`` runs now: their time limits start."""
        worker.started = self.loop.time()
        for pending in calls:
            if pending.time_limit is not None:
                pending.timer = self.loop.call_later(
                    pending.time_limit, self._on_time_limit, pending
                )

    def _send_ahead(self, worker: PoolWorker) -> None:
        """Send the next queued prediction to busy ``worker`` ahead, when
        recent predictions were short and this one is plain (answered at
        once, no progress, no stream; not batched).

        The cost: a call sent ahead runs after the worker's current call,
        even if another worker becomes free first. Kept to short calls,
        that is a few milliseconds at most, while at once the worker never
        sleeps between calls, nor the server wakes it for each (a fifth
        more predictions per second on two cores).
        """
        call_time = self.call_time
        if (
            worker.ahead is not None
            or call_time is None
            or call_time >= SEND_AHEAD_BELOW
            or self.batch_size > 1
            or self._closed
            or worker.retired
            or worker.leaving
        ):
            return
        queue = self._queue
        pending = queue.head()
        if pending is None:
            return
        if (
            pending.method != "predict"
            or pending.items is not None
            or pending.on_progress is not None
        ):
            return
        if worker.send_ahead(pending):
            queue.pop()
            pending.state = CallState.RUNNING
            if pending.queue_span is not None:
                pending.end_queue_span(1)

    def _return_ahead(self, worker: PoolWorker) -> None:
        """The call sent ahead to a worker that is stopped or lost had not
        started: it goes back to the head of the queue."""
        pending, worker.ahead = worker.ahead, None
        if pending is None:
            return
        slot, pending.slot = pending.slot, None
        worker.received(None, slot)  # its result slot goes with the worker
        pending.worker = None
        if pending.future.done():
            return
        if self._closed:
            pending.settle(error=exceptions.PoolClosed("The server is shutting down."))
            return
        pending.state = CallState.QUEUED
        self._queue.push_front(pending)
        if self._idle:
            self._flush()

    def on_progress(self, worker: PoolWorker, progress: Progress) -> None:
        """The call a worker runs says how far it has got (a batch's are not
        told: they are not one caller's)."""
        if len(worker.calls) != 1:
            return
        callback = worker.calls[0].on_progress
        if callback is not None:
            try:
                callback(progress.fraction, progress.message)
            except Exception:  # noqa: BLE001 - a report must not stop the call
                LOG.exception("A progress report could not be recorded")

    def on_item(self, worker: PoolWorker, item: Item) -> None:
        """An item of the streamed prediction a worker runs."""
        if len(worker.calls) == 1 and worker.calls[0].items is not None:
            worker.calls[0].items.put(
                item.data, worker.pause_reading, worker.resume_reading
            )

    def on_reply(self, worker: PoolWorker, reply: Answer | Failure | Replies) -> None:
        """RUNNING -> SETTLED: the worker answered; it takes the next call."""
        calls, worker.calls = worker.calls, []
        if len(calls) == 1 and calls[0].method == "predict":
            took = self.loop.time() - worker.started
            before = self.call_time
            self.call_time = took if before is None else before + (took - before) / 5
        replies = reply.replies if isinstance(reply, Replies) else (reply,)
        for pending, one in zip(calls, replies, strict=False):
            self._settle(worker, pending, one)
        for pending in calls[len(replies) :]:  # never, unless a worker errs
            worker.received(None, pending.slot)
            pending.settle(
                error=exceptions.ModelCallError(
                    "The worker answered a batch without this prediction."
                )
            )
        self._worker_free(worker)

    @staticmethod
    def _settle(
        worker: PoolWorker, pending: PendingCall, reply: Answer | Failure
    ) -> None:
        slot, pending.slot = pending.slot, None
        value = worker.received(
            reply.value if isinstance(reply, Answer) else None, slot
        )
        if isinstance(reply, Failure):
            error = reply.error.to_exception()
            if pending.message.form is not None:
                pending.settle(FormResult(None, reply.read or FormRead(), error))
            else:
                pending.settle(error=error)
        elif pending.future.done():  # nobody waits for it any more
            if isinstance(value, OpenResult):
                value.file.close()
            elif isinstance(value, MappedResult):
                value.release()
        elif isinstance(value, Exception):
            pending.settle(error=value)
        elif pending.message.form is not None:
            pending.settle(FormResult(value, reply.read or FormRead()))
        else:
            pending.settle(value)

    def _worker_free(self, worker: PoolWorker) -> None:
        """A worker is ready for a call: it runs the one sent ahead to it, or
        the next queued one (or batch), or idles."""
        pending = worker.ahead
        if pending is not None and not (
            self._closed or worker.retired or worker.leaving
        ):
            worker.ahead = None
            worker.calls = [pending]
            self._started(worker, worker.calls)
            if self._queue:
                self._send_ahead(worker)
            return
        self._busy.discard(worker)
        self._return_ahead(worker)
        if self._closed or worker.retired:
            return
        if worker.leaving:  # replaced by a reload, and now free to go
            self._replacements.dismiss(worker)
            return
        calls = self._take_next()
        if calls:
            self._run_on(worker, calls)
            return
        worker.state = WorkerState.IDLE
        self._idle.append(worker)

    # -- what cuts a call short ----------------------------------------------

    def _on_time_limit(self, pending: PendingCall) -> None:
        """A call ran past its time limit: its worker is stopped."""
        pending.timer = None
        LOG.warning(
            "Model %r: %s() exceeded %gs; stopping worker %s",
            self.spec.name,
            pending.method,
            pending.time_limit,
            pending.worker.pid if pending.worker else None,
        )
        seconds = pending.time_limit or 0
        pending.settle(error=exceptions.CallTimedOut(pending.method, seconds))
        self._abandon(pending, "timed out")

    def _abandon(self, pending: PendingCall, why: str) -> None:
        """The caller gave up on a call: if it runs, its worker is replaced
        (unless other predictions of its batch still wait for theirs)."""
        pending.cancel_timer()
        worker = pending.worker
        if worker is None or pending not in worker.calls:
            return  # still queued (it will be skipped) or already answered
        if any(not other.future.done() for other in worker.calls):
            return  # the batch runs on; this answer will be dropped
        LOG.info(
            "Model %r: stopping worker %s: its %s() call was %s",
            self.spec.name,
            worker.pid,
            pending.method,
            why,
        )
        worker.calls = []
        self._busy.discard(worker)
        self._return_ahead(worker)
        self._replacements.replace(worker)
        worker.kill()

    def on_worker_lost(self, worker: PoolWorker) -> None:
        """A worker's socket closed: expected if retired, else it died."""
        if worker.retired:
            return
        calls, worker.calls = worker.calls, []
        self._busy.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        self._return_ahead(worker)
        self._replacements.replace(worker)
        waiting = [pending for pending in calls if not pending.future.done()]
        if waiting:
            self._replacements.track(self._report_death(worker, waiting))
        elif not self._closed:
            LOG.error("Model %r: idle worker %s died", self.spec.name, worker.pid)

    async def _report_death(self, worker: PoolWorker, calls: list[PendingCall]) -> None:
        """Fail the calls their worker died in, naming how the worker ended."""
        try:
            how = await worker.how_it_ended()
        except asyncio.CancelledError:  # the pool stops
            for pending in calls:
                pending.settle(
                    error=exceptions.PoolClosed("The server is shutting down.")
                )
            raise
        if self._closed:
            for pending in calls:
                pending.settle(
                    error=exceptions.PoolClosed("The server is shutting down.")
                )
            return
        error = exceptions.WorkerDied(worker.exitcode, calls[0].method, how)
        LOG.error("Model %r: %s Replacing it.", self.spec.name, error.message)
        for pending in calls:
            pending.settle(error=error)

    # -- idle workers are watched --------------------------------------------

    async def _watch_idle_workers(self, interval: float) -> None:
        """Every ``interval`` seconds, ping the idle workers; one that has not
        answered its ping by the next round (stopped, wedged) is replaced."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(interval)
            now = loop.time()
            for worker in list(self._workers):
                if worker.pinged_at is not None:
                    if now - worker.pinged_at >= interval:
                        self._replace_unresponsive(worker, interval)
                elif worker.state is WorkerState.IDLE:
                    worker.ping()

    def _replace_unresponsive(self, worker: PoolWorker, interval: float) -> None:
        LOG.error(
            "Model %r: idle worker %s did not answer for %gs; replacing it",
            self.spec.name,
            worker.pid,
            interval,
        )
        self._unresponsive += 1
        if worker in self._idle:
            self._idle.remove(worker)
        calls, worker.calls = worker.calls, []
        self._busy.discard(worker)
        self._return_ahead(worker)
        self._replacements.replace(worker)
        worker.kill()
        for pending in calls:
            pending.settle(error=exceptions.WorkerDied(None, pending.method))

    # -- reloading -----------------------------------------------------------

    async def reload(
        self,
        spec: ModelSpec,
        *,
        batch_size: int = 1,
        serving: Callable[[], None] | None = None,
    ) -> None:
        if self._closed:
            raise exceptions.PoolClosed("The server is shutting down.")
        before = self.spec, self.generation, self.batch_size
        self.spec = spec
        self.generation += 1
        # Batches only once every worker can take them.
        self.batch_size = min(self.batch_size, batch_size)
        try:
            await self._replacements.roll(self.size, self.generation, serving)
        except Exception:
            if not any(w.generation == self.generation for w in self._workers):
                self.spec, self.generation, self.batch_size = before
            raise
        self.batch_size = batch_size
        LOG.info(
            "Model %r: every worker replaced by one of generation %d",
            self.spec.name,
            self.generation,
        )

    def _leave(self, worker: PoolWorker) -> None:
        """A worker of an older generation leaves: at once when idle, else
        once its calls are answered (a running training keeps it until the
        training ends)."""
        worker.leaving = True
        if worker in self._idle:
            self._idle.remove(worker)
            self._replacements.dismiss(worker)

    # -- the pool as a whole -------------------------------------------------

    def queued(self) -> int:
        # Calls given up while queued stay until dequeued: counted out here.
        # Calls sent ahead wait too, in their worker's socket.
        ahead = (w.ahead for w in self._busy)
        return sum(
            1
            for pending in itertools.chain(self._queue, ahead)
            if pending is not None and not pending.future.done()
        )

    def health(self) -> Health:
        return Health(
            size=self.size,
            alive=sum(
                1
                for w in self._workers
                if w.state is not WorkerState.STARTING
                and not w.leaving
                and w.is_alive()
            ),
            busy=len(self._busy),
            restarts=self._replacements.restarts,
            start_failures=self._replacements.start_failures,
            unresponsive=self._unresponsive,
            queued=self.queued(),
            workers=tuple(
                WorkerInfo(
                    w.slot,
                    w.pid,
                    "leaving" if w.leaving else w.state.value,
                    w.devices,
                    w.node,
                    w.generation,
                )
                for w in sorted(self._workers, key=lambda w: (w.slot, w.generation))
            ),
            batches=self._batches,
            batched=self._batched,
            generation=self.generation,
        )

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return sorted(w.pid for w in self._workers if w.pid and w.is_alive())

    async def stop(self) -> None:
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        await self._replacements.cancel()
        closed = exceptions.PoolClosed("The server is shutting down.")
        self._queue.close(closed)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for worker in list(self._busy):
            for pending in worker.calls:
                pending.settle(error=closed)
            self._return_ahead(worker)
            worker.state = WorkerState.RETIRED
            worker.kill()
        await asyncio.gather(
            *(w.stop() for w in self._workers | self._replacements.dying),
            return_exceptions=True,
        )
        self._workers.clear()
        self._replacements.dying.clear()
        self._idle.clear()
        self._busy.clear()

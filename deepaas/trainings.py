"""Training records and the runner that keeps them current.

A training is started in the background on a model's executor; its record goes
through a ``TrainingStore`` (``deepaas.store`` keeps them in SQLite) so that
where records live is not the runner's concern.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from deepaas import exceptions, private
from deepaas.events import TRAINING as TRAINING_EVENTS
from deepaas.events import EventJournal
from deepaas.model.v2.encoding import jsonable
from deepaas.runtime.executor import ProgressCallback
from deepaas.training_logs import LogCap

LOG = logging.getLogger(__name__)

RUNNING, DONE, ERROR, CANCELLED = "running", "done", "error", "cancelled"
SAVE_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0)  # then every 30 s
LOG_CAP_INTERVAL = 1.0  # seconds between checks of a running training's log size
LOG_EVENT_INTERVAL = 0.1  # seconds between reads of a log for its event stream
LOG_EVENT_MAX = 256 * 1024  # most bytes of log in one event
INTERRUPTED_BY_SHUTDOWN = (
    "Interrupted: the server shut down while this training was running."
)


def _now() -> datetime.datetime:
    return datetime.datetime.now()


@dataclasses.dataclass
class Training:
    """One training of one model."""

    model: str
    args: dict[str, Any]
    uuid: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    date: datetime.datetime = dataclasses.field(default_factory=_now)
    status: str = RUNNING
    output: Any = None
    finish_date: datetime.datetime | None = None
    message: str | None = None
    owner: str | None = None  # who started it, when authentication is on
    # What the model last said of how far it has got (deepaas.progress),
    # while it runs
    progress: float | None = None
    progress_message: str | None = None

    def report(self, fraction: float | None, message: str | None) -> None:
        """Keep a progress report (a missing part keeps its last value)."""
        if fraction is not None:
            self.progress = fraction
        if message is not None:
            self.progress_message = message

    def to_dict(self) -> dict[str, Any]:
        """The training object of the HTTP API."""
        body: dict[str, Any] = {
            "uuid": self.uuid,
            "date": str(self.date),
            "args": self.args,
            "status": self.status,
        }
        if self.status == DONE and self.finish_date is not None:
            body["result"] = {
                "output": self.output,
                "finish_date": str(self.finish_date),
                "duration": str(self.finish_date - self.date),
            }
        if self.message is not None:
            body["message"] = self.message
        if self.owner is not None:
            body["owner"] = self.owner
        if self.status == RUNNING:
            if self.progress is not None:
                body["progress"] = self.progress
            if self.progress_message is not None:
                body["progress_message"] = self.progress_message
        return body


class TrainingStore(abc.ABC):
    """Where training records are kept."""

    @abc.abstractmethod
    def add(self, training: Training) -> None:
        """Keep a new record."""

    @abc.abstractmethod
    def update(self, training: Training) -> None:
        """Save the current state of a kept record."""

    @abc.abstractmethod
    def get(self, model: str, training_id: str) -> Training | None:
        """The record, or None if unknown."""

    @abc.abstractmethod
    def list(self, model: str) -> list[Training]:
        """Every record of a model, oldest first."""

    @abc.abstractmethod
    def remove(self, model: str, training_id: str) -> None:
        """Forget a record (no error if unknown)."""

    @abc.abstractmethod
    def finished_before(self, cutoff: datetime.datetime) -> Sequence[tuple[str, str]]:
        """(model, uuid) of each training that ended before ``cutoff``."""

    @abc.abstractmethod
    def counts(self) -> dict[tuple[str, str], int]:
        """How many records there are, by (model, status)."""

    def close(self) -> None:  # noqa: B027 - optional for stores holding nothing
        """Release what the store holds open."""


class TrainingRunner:
    """Starts trainings in the background and records how they end.

    Each training's output goes to ``<log_dir>/<uuid>.log``.
    """

    def __init__(
        self,
        store: TrainingStore,
        log_dir: str,
        max_running: int = 0,
        max_per_owner: int = 0,
        log_max_bytes: int = 0,
        events: EventJournal | None = None,
    ) -> None:
        """``max_running``: most trainings running at once; ``max_per_owner``:
        most of one owner's; ``log_max_bytes``: most bytes a log keeps (0: no
        limit)."""
        self.store = store
        self.log_dir = log_dir
        self.log_max_bytes = log_max_bytes
        self.events = events
        self._log_read: dict[str, int] = {}  # bytes of each log published
        self.max_running = max_running
        self.max_per_owner = max_per_owner
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, Training] = {}
        # Ended trainings whose final state the store refused (a full disk):
        # answered from here, and written again until the store takes them.
        self._unsaved: dict[str, Training] = {}
        self._saving: asyncio.Task[None] | None = None
        self.store_error: str | None = None  # why the last write failed
        self._stopping = False

    def log_path(self, training_id: str) -> str:
        """Where the output of a training is written."""
        return os.path.join(self.log_dir, f"{training_id}.log")

    def start(
        self,
        model: str,
        args: dict[str, Any],
        run: Callable[[str, ProgressCallback], Awaitable[Any]],
        cleanup: Callable[[], None] = lambda: None,
        owner: str | None = None,
    ) -> Training:
        """Record a new training of ``owner`` and run ``run(log_path,
        on_progress)`` in the background.

        ``cleanup`` runs once the training has ended, however it ended (or
        at once, when the training cannot start: ``TooManyTrainings``).
        """
        try:
            self.check_room(owner)
        except BaseException:
            cleanup()
            raise
        training = Training(model=model, args=jsonable(args), owner=owner)
        try:
            self.store.add(training)
        except BaseException:
            cleanup()
            raise
        self._live[training.uuid] = training
        self._publish(training, "status", {"status": RUNNING})
        task = asyncio.get_running_loop().create_task(
            self._run(training, run, cleanup), name=f"training-{training.uuid}"
        )
        self._tasks[training.uuid] = task
        task.add_done_callback(lambda _: self._forget_task(training.uuid))
        return training

    def check_room(self, owner: str | None = None) -> None:
        """Raise ``TooManyTrainings`` when no other training (of ``owner``)
        may start."""
        if self.max_running and len(self._tasks) >= self.max_running:
            raise exceptions.TooManyTrainings(self.max_running)
        if self.max_per_owner and owner is not None:
            running = sum(1 for t in self._live.values() if t.owner == owner)
            if running >= self.max_per_owner:
                raise exceptions.TooManyTrainingsOfUser(self.max_per_owner)

    def _forget_task(self, training_id: str) -> None:
        self._tasks.pop(training_id, None)
        self._live.pop(training_id, None)

    async def _run(
        self,
        training: Training,
        run: Callable[[str, ProgressCallback], Awaitable[Any]],
        cleanup: Callable[[], None],
    ) -> None:
        following = None
        if self.events is not None:
            following = asyncio.get_running_loop().create_task(
                self._follow_log(training)
            )
        cap = capping = None
        if self.log_max_bytes:
            cap = LogCap(self.log_path(training.uuid), self.log_max_bytes)
            capping = asyncio.get_running_loop().create_task(self._keep_capped(cap))
        try:
            private.private_directory(self.log_dir)
            output = await run(
                self.log_path(training.uuid),
                lambda fraction, message: self._progress(training, fraction, message),
            )
        except asyncio.CancelledError:
            if self._stopping:
                self._finish(training, ERROR, message=INTERRUPTED_BY_SHUTDOWN)
            else:
                self._finish(training, CANCELLED)
            raise
        except exceptions.DeepaasError as exc:
            self._finish(training, ERROR, message=exc.message)
        except Exception as exc:  # never leave a training "running"
            LOG.exception("Training %s failed unexpectedly", training.uuid)
            self._finish(training, ERROR, message=f"{type(exc).__name__}: {exc}")
        else:
            self._finish(training, DONE, output=jsonable(output))
        finally:
            if following is not None:
                following.cancel()
            self._log_read.pop(training.uuid, None)
            if capping is not None and cap is not None:
                capping.cancel()
                self._enforce(cap)  # what was written last
            cleanup()

    async def _keep_capped(self, cap: LogCap) -> None:
        """Hold a running training's log to its cap until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(LOG_CAP_INTERVAL)
            await loop.run_in_executor(None, self._enforce, cap)

    @staticmethod
    def _enforce(cap: LogCap) -> None:
        try:
            cap.enforce()
        except OSError as exc:
            LOG.warning("Cannot hold %s to its size cap: %s", cap.path, exc)

    def _publish(
        self, training: Training, name: str, data: dict[str, Any] | str, **how: bool
    ) -> None:
        if self.events is not None:
            self.events.publish(TRAINING_EVENTS, training.uuid, name, data, **how)

    def _progress(
        self, training: Training, fraction: float | None, message: str | None
    ) -> None:
        training.report(fraction, message)
        self._publish(
            training,
            "progress",
            {"progress": training.progress, "message": training.progress_message},
        )

    async def _follow_log(self, training: Training) -> None:
        """Publish a running training's new log lines, a few times a second."""
        while True:
            await asyncio.sleep(LOG_EVENT_INTERVAL)
            self._publish_log(training, whole=False)

    def _publish_log(self, training: Training, *, whole: bool) -> None:
        """Publish the log lines written since the last time (with
        ``whole``, a last line without its end too)."""
        offset = self._log_read.get(training.uuid, 0)
        try:
            with open(self.log_path(training.uuid), "rb") as f:
                f.seek(offset)
                data = f.read(LOG_EVENT_MAX)
        except OSError:
            return
        if not whole:
            end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            if end == 0 and len(data) < LOG_EVENT_MAX:
                return  # no whole line yet
            data = data[: end or len(data)]
        if not data:
            return
        self._log_read[training.uuid] = offset + len(data)
        text = data.replace(b"\0", b"").decode("utf-8", errors="replace")
        # one event's lines, without the end of the last (SSE data lines)
        text = text.removesuffix("\n").removesuffix("\r")
        if text:
            self._publish(training, "log", text)

    def _finish(
        self, training: Training, status: str, *, output: Any = None, message: str = ""
    ) -> None:
        if self.events is not None:
            self._publish_log(training, whole=True)
        training.status = status
        training.output = output
        training.message = message or None
        training.finish_date = _now()
        if status == ERROR:
            LOG.error(
                "Training %s of %r failed: %s", training.uuid, training.model, message
            )
        else:
            LOG.info("Training %s of %r %s", training.uuid, training.model, status)
        try:
            self.store.update(training)
        except exceptions.DeepaasError as exc:
            self._keep_unsaved(training, exc.message)
        self._publish(training, "status", {"status": status})
        self._publish(training, "result", training.to_dict(), final=True)

    def _keep_unsaved(self, training: Training, why: str) -> None:
        """Answer ``training`` from memory and keep trying to save it."""
        LOG.error(
            "Cannot record how training %s ended (%s); keeping it in memory and "
            "retrying: %s",
            training.uuid,
            training.status,
            why,
        )
        self.store_error = why
        self._unsaved[training.uuid] = training
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save_unsaved())

    async def _save_unsaved(self) -> None:
        """Write the unsaved trainings again, with back-off, until all are."""
        delays = itertools.chain(SAVE_RETRY_DELAYS, itertools.repeat(30.0))
        while self._unsaved and not self._stopping:
            await asyncio.sleep(next(delays))
            self._try_saving()

    def _try_saving(self) -> None:
        for training_id, training in list(self._unsaved.items()):
            try:
                self.store.update(training)
            except exceptions.DeepaasError as exc:
                self.store_error = exc.message
                return
            del self._unsaved[training_id]
            LOG.info("Training %s is recorded after all", training_id)
        self.store_error = None

    @property
    def unsaved(self) -> int:
        """How many ended trainings the store has not taken yet."""
        return len(self._unsaved)

    def get(self, model: str, training_id: str, owner: str | None = None) -> Training:
        """The record (if ``owner``'s, when given); raises ``TrainingNotFound``
        (for another owner's too: its existence is not theirs to know)."""
        training = self._live.get(training_id) or self._unsaved.get(training_id)
        if training is None or training.model != model:
            training = self.store.get(model, training_id)
        if training is None or (owner is not None and training.owner != owner):
            raise exceptions.TrainingNotFound(
                f"No training {training_id!r} for model {model!r}."
            )
        return training

    def list(self, model: str, owner: str | None = None) -> list[Training]:
        """Every training of a model (of ``owner``, when given), oldest
        first, running ones as they are now."""
        return [
            self._live.get(t.uuid) or self._unsaved.get(t.uuid) or t
            for t in self.store.list(model)
            if owner is None or t.owner == owner
        ]

    async def cancel(
        self, model: str, training_id: str, owner: str | None = None
    ) -> Training:
        """Stop the training if it runs, forget it and its log; its last
        state. ``owner``: as for ``get``."""
        training = self.get(model, training_id, owner)
        task = self._tasks.get(training_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._unsaved.pop(training_id, None)
        self.store.remove(model, training_id)
        if self.events is not None:
            self.events.forget(TRAINING_EVENTS, training_id)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.log_path(training_id))
        return training

    def purge(self, retention: float) -> int:
        """Forget the trainings that ended more than ``retention`` seconds ago,
        and remove their logs; how many."""
        cutoff = _now() - datetime.timedelta(seconds=retention)
        purged = 0
        for model, training_id in self.store.finished_before(cutoff):
            if training_id in self._live or training_id in self._unsaved:
                continue
            self.store.remove(model, training_id)
            if self.events is not None:
                self.events.forget(TRAINING_EVENTS, training_id)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.log_path(training_id))
            purged += 1
        return purged

    async def keep_for(self, retention: float) -> None:
        """Purge old trainings now, then regularly, until cancelled."""
        await keep_for(self.purge, retention, "training(s)", "--training-retention")

    async def stop(self) -> None:
        """Interrupt every running training (at shutdown), recording why."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._saving is not None:
            self._saving.cancel()
        self._try_saving()  # a last chance
        for training in self._unsaved.values():
            LOG.critical(
                "Training %s of %r ended (%s) but could not be recorded: %s",
                training.uuid,
                training.model,
                training.status,
                training.to_dict(),
            )


async def keep_for(
    purge: Callable[[float], int], retention: float, what: str, option: str
) -> None:
    """Call ``purge(retention)`` now, then every tenth of ``retention`` (at
    most hourly), until cancelled."""
    interval = min(max(retention / 10, 0.5), 3600.0)
    while True:
        try:
            purged = purge(retention)
        except exceptions.StoreError as exc:
            LOG.error("Old %s could not be removed: %s", what, exc.message)
        else:
            if purged:
                LOG.info("Removed %d %s past %s", purged, what, option)
        await asyncio.sleep(interval)

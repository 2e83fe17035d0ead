"""Trainings as a kind of background work: each writes a log, followed
for its event stream and held to ``--training-log-max-bytes``; a training
cut by a stop ends as an error (the statuses upstream's clients know), and
a DELETE stops and forgets it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from deepaas import exceptions, private
from deepaas.state.records import DONE, ERROR, TRAINING, Record
from deepaas.state.repositories import Outputs
from deepaas.work.events import EventJournal
from deepaas.work.kind import Kind
from deepaas.work.training_logs import LogCap

LOG = logging.getLogger(__name__)

LOG_CAP_INTERVAL = 1.0  # seconds between checks of a running training's log size
LOG_EVENT_INTERVAL = 0.1  # seconds between reads of a log for its event stream
LOG_EVENT_MAX = 256 * 1024  # most bytes of log in one event
LOG_COPY_INTERVAL = 0.5  # seconds between copies of a log into a shared database
LOG_COPY_MAX = 1 << 20  # most bytes of log in one row


class Trainings(Kind):
    name = TRAINING
    noun = "training"
    interrupted_status = ERROR
    interrupted_by_restart = (
        "Interrupted by a restart: the server stopped while this training was running."
    )
    interrupted_by_shutdown = (
        "Interrupted: the server shut down while this training was running."
    )
    forget_cancelled = True
    missing = exceptions.TrainingNotFound
    missing_what = "training"
    too_many_running = exceptions.TooManyTrainings
    too_many_of_user = exceptions.TooManyTrainingsOfUser
    retention_option = "--training-retention"

    def __init__(
        self, log_dir: str, log_max_bytes: int = 0, outputs: Outputs | None = None
    ) -> None:
        """Each training's output goes to ``<log_dir>/<id>.log``, of at most
        ``log_max_bytes`` (0: no limit); with ``outputs`` (a database other
        servers share), it is copied there as it is written, so that every
        server answers it, and the file is removed when the training ends."""
        self.log_dir = log_dir
        self.log_max_bytes = log_max_bytes
        self.outputs = outputs

    def log_path(self, training_id: str) -> str:
        """Where the output of a training is written."""
        return os.path.join(self.log_dir, f"{training_id}.log")

    def files(self, record_id: str) -> list[str]:
        return [self.log_path(record_id)]

    def view(self, record: Record, base: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {
            "uuid": record.id,
            "date": str(record.date),
            "args": record.args,
            "status": record.status,
        }
        if record.status == DONE and record.finish_date is not None:
            body["result"] = {
                "output": record.result,
                "finish_date": str(record.finish_date),
                "duration": str(record.duration()),
            }
        if record.message is not None:
            body["message"] = record.message
        if record.started_by is not None:
            body["owner"] = record.started_by
        self.add_progress(record, body)
        return body

    @contextlib.asynccontextmanager
    async def running(
        self, record: Record, events: EventJournal | None
    ) -> AsyncIterator[None]:
        """Follow the log for the event stream and hold it to its cap while
        the training runs; publish its last lines when it ends."""
        loop = asyncio.get_running_loop()
        private.private_directory(self.log_dir)
        log = LogFollower(self.log_path(record.id), record, events)
        following = loop.create_task(log.follow()) if events else None
        cap = capping = None
        if self.log_max_bytes:
            cap = LogCap(self.log_path(record.id), self.log_max_bytes)
            capping = loop.create_task(_keep_capped(cap))
        copy = copying = None
        if self.outputs is not None:
            copy = LogCopy(self.log_path(record.id), record.id, self.outputs, cap)
            copying = loop.create_task(copy.keep_copying())
        try:
            yield
        finally:
            if following is not None:
                following.cancel()
                log.publish(whole=True)
            if capping is not None and cap is not None:
                capping.cancel()
                _enforce(cap)  # what was written last
            if copying is not None and copy is not None:
                copying.cancel()
                await asyncio.gather(copying, return_exceptions=True)
                await copy.finish()


class LogFollower:
    """Publishes the lines a running training adds to its log, as events."""

    def __init__(self, path: str, record: Record, events: EventJournal | None) -> None:
        self.path = path
        self.record = record
        self.events = events
        self.offset = 0  # bytes of the log published

    async def follow(self) -> None:
        """Publish new lines a few times a second, until cancelled."""
        while True:
            await asyncio.sleep(LOG_EVENT_INTERVAL)
            self.publish(whole=False)

    def publish(self, *, whole: bool) -> None:
        """Publish the lines written since the last time (with ``whole``, a
        last line without its end too)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
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
        self.offset += len(data)
        text = data.replace(b"\0", b"").decode("utf-8", errors="replace")
        # one event's lines, without the end of the last (SSE data lines)
        text = text.removesuffix("\n").removesuffix("\r")
        if text and self.events is not None:
            self.events.publish(TRAINING, self.record.id, "log", text)


class LogCopy:
    """Copies what a running training adds to its log into the database
    (shared with other servers), held to the log's cap there too."""

    def __init__(
        self, path: str, training_id: str, outputs: Outputs, cap: LogCap | None
    ) -> None:
        self.path = path
        self.training_id = training_id
        self.outputs = outputs
        self.cap = cap
        self.copied = 0  # offset in the log up to which it is in the database

    async def keep_copying(self) -> None:
        """Copy what is new a few times a second, until cancelled."""
        while True:
            await asyncio.sleep(LOG_COPY_INTERVAL)
            try:
                await self.copy()
            except exceptions.StoreError as exc:
                LOG.warning("Log of %s not copied yet: %s", self.training_id, exc)

    async def copy(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.cap is not None:  # what was cut is not read (a hole)
                self.copied = max(self.copied, self.cap.kept_from)
            data = await loop.run_in_executor(None, self._read)
            if not data:
                return
            await self.outputs.add(TRAINING, self.training_id, self.copied, data)
            self.copied += len(data)
            if self.cap is not None:
                await self.outputs.trim(TRAINING, self.training_id, self.cap.max_bytes)

    def _read(self) -> bytes:
        # Rows of a quarter of the cap at most: whole rows are trimmed, and
        # the three quarters left are the log's end.
        size = LOG_COPY_MAX if self.cap is None else self.cap.max_bytes // 4
        try:
            with open(self.path, "rb") as f:
                f.seek(self.copied)
                return f.read(max(1, min(size, LOG_COPY_MAX)))
        except FileNotFoundError:
            return b""

    async def finish(self) -> None:
        """Copy the rest of the log, then remove its file."""
        try:
            await self.copy()
        except exceptions.StoreError as exc:
            LOG.error("The end of the log of %s is lost: %s", self.training_id, exc)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


async def _keep_capped(cap: LogCap) -> None:
    """Hold a running training's log to its cap until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(LOG_CAP_INTERVAL)
        await loop.run_in_executor(None, _enforce, cap)


def _enforce(cap: LogCap) -> None:
    try:
        cap.enforce()
    except OSError as exc:
        LOG.warning("Cannot hold %s to its size cap: %s", cap.path, exc)

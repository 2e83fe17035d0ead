"""The record of one piece of background work: a training or an
asynchronous prediction (a job), as the state layer keeps it.

Both kinds share one vocabulary: a record is ``running`` until it ends
``done``, ``error``, ``cancelled`` or ``interrupted``; its dates are local
times, kept as ISO 8601 text with microseconds (so that they sort as text);
``owner`` is the server process that runs it and ``started_by`` the user who
started it (with authentication on).
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

TRAINING, JOB = "training", "job"
KINDS = (TRAINING, JOB)

RUNNING, DONE, ERROR = "running", "done", "error"
CANCELLED, INTERRUPTED = "cancelled", "interrupted"
STATUSES = (RUNNING, DONE, ERROR, CANCELLED, INTERRUPTED)

# What a record that cannot be read is dated
UNREADABLE_DATE = datetime.datetime(1970, 1, 1)


def now() -> datetime.datetime:
    return datetime.datetime.now()


def date_text(date: datetime.datetime) -> str:
    """How a date is kept: ISO 8601, always with microseconds."""
    return date.isoformat(timespec="microseconds")


def parse_date(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def new_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass
class Record:
    """One training or job of one model."""

    kind: str
    model: str
    args: dict[str, Any]
    id: str = dataclasses.field(default_factory=new_id)
    date: datetime.datetime = dataclasses.field(default_factory=now)
    status: str = RUNNING
    finish_date: datetime.datetime | None = None
    message: str | None = None
    # what it ended with: a training's output, a job's {"type", "size"}
    result: Any = None
    # what a synchronous call would have answered (a job that failed)
    error_status: int | None = None
    owner: str | None = None  # the server process that runs it
    started_by: str | None = None  # who started it, with authentication on
    # What the model last said of how far it has got, while it runs
    progress: float | None = None
    progress_message: str | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def report(self, fraction: float | None, message: str | None) -> None:
        """Keep a progress report (a missing part keeps its last value)."""
        if fraction is not None:
            self.progress = fraction
        if message is not None:
            self.progress_message = message

    def duration(self) -> datetime.timedelta | None:
        if self.finish_date is None:
            return None
        return self.finish_date - self.date

"""What a kind of background work is (``Kind``), beside what every kind
shares (``runner.Runner``), and what runs a record (``Work``)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from deepaas import exceptions
from deepaas.runtime.executor import ProgressCallback
from deepaas.state.records import RUNNING, Record
from deepaas.work.events import EventJournal

# What runs a record: given the record and where its progress goes, its
# result as the record keeps it.
Work = Callable[[Record, ProgressCallback], Awaitable[Any]]


def once(function: Callable[[], None]) -> Callable[[], None]:
    """``function``, called the first time only."""
    called = False

    def call() -> None:
        nonlocal called
        if not called:
            called = True
            function()

    return call


async def written(adding: asyncio.Future[None]) -> bool:
    """Whether a record's first write (``adding``) succeeded, once it is
    over: a record that was never written is not ended."""
    await asyncio.gather(adding, return_exceptions=True)
    return not adding.cancelled() and adding.exception() is None


class Kind(abc.ABC):
    """What one kind of background work is, beside what all share."""

    name: str  # the records' kind: state.records.TRAINING or JOB
    noun: str  # in messages: "training", "asynchronous prediction"
    # what a record cut by a stop or a crash ends as, and why
    interrupted_status: str
    interrupted_by_restart: str
    interrupted_by_shutdown: str
    # whether cancelling a running record forgets it (else it is kept,
    # cancelled, until removed by a second DELETE or retention)
    forget_cancelled: bool
    retention_option: str

    # the errors of a record that is not there ("No <what> 'id' for model
    # 'name'."), and of one too many running, of all users or of one
    missing: type[exceptions.DeepaasError]
    missing_what: str
    too_many_running: Callable[[int], exceptions.DeepaasError]
    too_many_of_user: Callable[[int], exceptions.DeepaasError]

    @abc.abstractmethod
    def view(self, record: Record, base: str) -> dict[str, Any]:
        """The record as the HTTP API shows it (``base``: the server's base
        path)."""

    @staticmethod
    def add_progress(record: Record, body: dict[str, Any]) -> None:
        """A running record's last progress report, in its view."""
        if record.status == RUNNING:
            if record.progress is not None:
                body["progress"] = record.progress
            if record.progress_message is not None:
                body["progress_message"] = record.progress_message

    def not_found(self, model: str, record_id: str) -> exceptions.DeepaasError:
        return self.missing(
            f"No {self.missing_what} {record_id!r} for model {model!r}."
        )

    def too_many(self, limit: int, of_user: bool) -> exceptions.DeepaasError:
        if of_user:
            return self.too_many_of_user(limit)
        return self.too_many_running(limit)

    def files(self, record_id: str) -> list[str]:
        """The files a record has, removed with it."""
        return []

    def remove_files(self, record_id: str) -> None:
        for path in self.files(record_id):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def interrupted(self, record: Record) -> None:  # noqa: B027 - optional
        """A record a previous server left running was ended as interrupted
        (its files may be removed)."""

    @contextlib.asynccontextmanager
    async def running(
        self, record: Record, events: EventJournal | None
    ) -> AsyncIterator[None]:
        """What goes on beside a record's work while it runs (its events
        published to ``events``)."""
        yield

"""Asynchronous predictions: jobs run in the background, kept with their results.

A prediction sent with ``Prefer: respond-async`` becomes a job: it runs on
the model's executor like any prediction, its record lives in the state
database (``deepaas.store.SQLiteJobStore``) so that it survives restarts,
and its result, whatever its form, is kept as a file in ``<state>/jobs/``
until the job is removed (by the client, or after ``--job-retention``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from deepaas import exceptions, private
from deepaas.events import JOB as JOB_EVENTS
from deepaas.events import EventJournal
from deepaas.model.v2.encoding import jsonable
from deepaas.runtime.executor import ProgressCallback

if TYPE_CHECKING:
    from deepaas.store import SQLiteJobStore

LOG = logging.getLogger(__name__)

RUNNING, DONE, ERROR = "running", "done", "error"
CANCELLED, INTERRUPTED = "cancelled", "interrupted"
INTERRUPTED_BY_SHUTDOWN = (
    "Interrupted: the server shut down while this prediction was running; send it "
    "again."
)

# What keeps a finished prediction's result in a file: (media type, size).
Keeper = Callable[[Any, str], tuple[str, int]]


def _now() -> datetime.datetime:
    return datetime.datetime.now()


@dataclasses.dataclass
class Job:
    """One asynchronous prediction of one model."""

    model: str
    args: dict[str, Any]
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    date: datetime.datetime = dataclasses.field(default_factory=_now)
    status: str = RUNNING
    finish_date: datetime.datetime | None = None
    message: str | None = None
    error_status: int | None = None  # what a synchronous call would have answered
    result_type: str | None = None
    result_size: int | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    progress: float | None = None  # as the model last said, while it runs
    progress_message: str | None = None

    def report(self, fraction: float | None, message: str | None) -> None:
        """Keep a progress report (a missing part keeps its last value)."""
        if fraction is not None:
            self.progress = fraction
        if message is not None:
            self.progress_message = message

    def url(self, base: str) -> str:
        return f"{base}/v2/models/{self.model}/predict/{self.id}"

    def to_dict(self, base: str) -> dict[str, Any]:
        """The job object of the HTTP API (without its inline result)."""
        url = self.url(base)
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "date": str(self.date),
            "args": self.args,
        }
        if self.finish_date is not None:
            body["finish_date"] = str(self.finish_date)
            body["duration"] = str(self.finish_date - self.date)
        if self.message is not None:
            body["message"] = self.message
        if self.error_status is not None:
            body["error_status"] = self.error_status
        if self.owner is not None:
            body["owner"] = self.owner
        if self.status == RUNNING:
            if self.progress is not None:
                body["progress"] = self.progress
            if self.progress_message is not None:
                body["progress_message"] = self.progress_message
        body["links"] = {"self": url}
        if self.status == DONE:
            body["result_type"] = self.result_type
            body["result_size"] = self.result_size
            body["links"]["result"] = url + "/result"
        return body


class JobRunner:
    """Runs jobs in the background and records how they end."""

    def __init__(
        self,
        store: SQLiteJobStore,
        result_dir: str,
        events: EventJournal | None = None,
        base: str = "",
        *,
        max_running: int = 0,
        max_per_owner: int = 0,
        max_args_bytes: int = 0,
    ) -> None:
        """``base``: the server's base path, for the links of the jobs'
        final events. The limits (0 for none): jobs waiting or running at
        once, all of them and of one owner, and bytes of a job's arguments
        as kept."""
        self.store = store
        self.result_dir = result_dir
        self.events = events
        self.base = base
        self.max_running = max_running
        self.max_per_owner = max_per_owner
        self.max_args_bytes = max_args_bytes
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, Job] = {}
        self._stopping = False

    def result_path(self, job_id: str) -> str:
        return os.path.join(self.result_dir, f"{job_id}.result")

    def interrupted_at_start(self) -> int:
        """Record the jobs a previous server left running as interrupted,
        removing what they may have left; how many."""
        stale = self.store.mark_interrupted()
        for job_id in stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.result_path(job_id))
        return len(stale)

    def submit(
        self,
        model: str,
        args: dict[str, Any],
        run: Callable[[ProgressCallback], Awaitable[Any]],
        keep: Keeper,
        *,
        owner: str | None = None,
        key: str | None = None,
        cleanup: Callable[[], None] = lambda: None,
    ) -> tuple[Job, bool]:
        """Record a job and run ``run(on_progress)`` in the background, its result kept
        by ``keep(result, path)``; ``cleanup`` once it has ended. With an
        ``Idempotency-Key`` already used by ``owner``: that job, and False
        (nothing runs; ``cleanup`` at once)."""
        recorded = jsonable(args)
        try:
            if key is not None:
                existing = self.store.by_key(model, owner, key)
                if existing is not None:
                    if existing.args != recorded:
                        raise exceptions.IdempotencyKeyReused(key)
                    cleanup()
                    return self._live.get(existing.id, existing), False
            self.check_room(owner)
            self._check_size(recorded)
        except BaseException:
            cleanup()
            raise
        job = Job(model=model, args=recorded, owner=owner, idempotency_key=key)
        try:
            self.store.add(job)
        except BaseException:
            cleanup()
            raise
        self._live[job.id] = job
        self._publish(job, "status", {"status": RUNNING})
        task = asyncio.get_running_loop().create_task(
            self._run(job, run, keep, cleanup), name=f"job-{job.id}"
        )
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._forget(job.id))
        return job, True

    def check_room(self, owner: str | None = None) -> None:
        """Raise ``TooManyJobs`` when no other job (of ``owner``) may start."""
        if self.max_running and len(self._tasks) >= self.max_running:
            raise exceptions.TooManyJobs(self.max_running)
        if self.max_per_owner and owner is not None:
            running = sum(1 for job in self._live.values() if job.owner == owner)
            if running >= self.max_per_owner:
                raise exceptions.TooManyJobsOfUser(self.max_per_owner)

    def _check_size(self, recorded: dict[str, Any]) -> None:
        if not self.max_args_bytes:
            return
        size = len(json.dumps(recorded).encode())
        if size > self.max_args_bytes:
            raise exceptions.JobArgumentsTooLarge(size, self.max_args_bytes)

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._live.pop(job_id, None)

    async def _run(
        self,
        job: Job,
        run: Callable[[ProgressCallback], Awaitable[Any]],
        keep: Keeper,
        cleanup: Callable[[], None],
    ) -> None:
        try:
            result = await run(
                lambda fraction, message: self._progress(job, fraction, message)
            )
            private.private_directory(self.result_dir)
            loop = asyncio.get_running_loop()
            media_type, size = await loop.run_in_executor(
                None, keep, result, self.result_path(job.id)
            )
        except asyncio.CancelledError:
            if self._stopping:
                self._finish(job, INTERRUPTED, message=INTERRUPTED_BY_SHUTDOWN)
            else:
                self._finish(job, CANCELLED)
            raise
        except exceptions.DeepaasError as exc:
            self._finish(job, ERROR, message=exc.message, error_status=exc.status)
        except Exception as exc:  # never leave a job "running"
            LOG.exception("Job %s failed unexpectedly", job.id)
            message = f"{type(exc).__name__}: {exc}"
            self._finish(job, ERROR, message=message, error_status=500)
        else:
            job.result_type, job.result_size = media_type, size
            self._finish(job, DONE)
        finally:
            cleanup()

    def _publish(self, job: Job, name: str, data: dict[str, Any], **how: bool) -> None:
        if self.events is not None:
            self.events.publish(JOB_EVENTS, job.id, name, data, **how)

    def _progress(self, job: Job, fraction: float | None, message: str | None) -> None:
        job.report(fraction, message)
        self._publish(
            job, "progress", {"progress": job.progress, "message": job.progress_message}
        )

    def _finish(
        self,
        job: Job,
        status: str,
        *,
        message: str | None = None,
        error_status: int | None = None,
    ) -> None:
        job.status = status
        job.message = message
        job.error_status = error_status
        job.finish_date = _now()
        LOG.info("Job %s of %r %s", job.id, job.model, status)
        try:
            self.store.update(job)
        except exceptions.StoreError as exc:
            LOG.error("Cannot record how job %s ended: %s", job.id, exc.message)
        self._publish(job, "status", {"status": status})
        self._publish(job, "result", job.to_dict(self.base), final=True)

    def get(self, model: str, job_id: str, owner: str | None = None) -> Job:
        """The job (if ``owner``'s, when given); raises ``JobNotFound``."""
        job = self._live.get(job_id)
        if job is None or job.model != model:
            job = self.store.get(model, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise exceptions.JobNotFound(
                f"No prediction job {job_id!r} for model {model!r}."
            )
        return job

    def list(
        self,
        model: str,
        owner: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """A model's jobs (``owner``'s only, when given), oldest first, running
        ones as they are now: at most ``limit``, from the one after job
        ``after`` (``JobNotFound`` if there is no such job)."""
        if after is not None:
            self.get(model, after, owner)
        found = self.store.list(model, owner, after=after, limit=limit)
        return [self._live.get(j.id, j) for j in found]

    async def cancel(self, model: str, job_id: str, owner: str | None = None) -> Job:
        """Stop a running job (its worker is replaced) and record it as
        cancelled; remove an ended one and its result. The job's last state."""
        job = self.get(model, job_id, owner)
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return job
        self.remove(model, job_id)
        return job

    def remove(self, model: str, job_id: str) -> None:
        self.store.remove(model, job_id)
        if self.events is not None:
            self.events.forget(JOB_EVENTS, job_id)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.result_path(job_id))

    def purge(self, retention: float) -> int:
        """Remove the jobs that ended more than ``retention`` seconds ago,
        with their results; how many."""
        cutoff = _now() - datetime.timedelta(seconds=retention)
        purged = 0
        for model, job_id in self.store.finished_before(cutoff):
            if job_id not in self._live:
                self.remove(model, job_id)
                purged += 1
        return purged

    async def stop(self) -> None:
        """Interrupt every running job (at shutdown), recording why."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

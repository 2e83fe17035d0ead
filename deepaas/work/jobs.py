"""Asynchronous predictions as a kind of background work: jobs.

A prediction sent with ``Prefer: respond-async`` becomes a job: it runs on
the model's executor like any prediction, its record lives in the state
database so that it survives restarts, and its result, whatever its form,
is kept as a file in ``<state>/jobs/`` until the job is removed (by the
client, or after ``--job-retention``). A job cut by a stop ends
``interrupted``; a DELETE cancels a running job and removes an ended one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from deepaas import exceptions, private
from deepaas.runtime.executor import ProgressCallback
from deepaas.state.records import DONE, INTERRUPTED, JOB, Record
from deepaas.state.repositories import Outputs
from deepaas.work.kind import Kind, Work

CHUNK = 1 << 20  # bytes of a result kept in the database per row

# What keeps a finished prediction's result in a file: (media type, size).
Keeper = Callable[[Any, str], tuple[str, int]]
# Whether a result is small enough to be kept on the event loop: a thread's
# wake-up costs more than writing a few kilobytes.
Small = Callable[[Any], bool]


class Jobs(Kind):
    name = JOB
    noun = "asynchronous prediction"
    interrupted_status = INTERRUPTED
    interrupted_by_restart = (
        "Interrupted by a restart: the server stopped while this prediction was "
        "running; send it again."
    )
    interrupted_by_shutdown = (
        "Interrupted: the server shut down while this prediction was running; "
        "send it again."
    )
    forget_cancelled = False
    missing = exceptions.JobNotFound
    missing_what = "prediction job"
    too_many_running = exceptions.TooManyJobs
    too_many_of_user = exceptions.TooManyJobsOfUser
    retention_option = "--job-retention"

    def __init__(self, result_dir: str, outputs: Outputs | None = None) -> None:
        """Results are kept in ``result_dir``; with ``outputs`` (a database
        other servers share), there once the job is done instead, so that
        every server answers them."""
        self.result_dir = result_dir
        self.outputs = outputs

    def result_path(self, job_id: str) -> str:
        return os.path.join(self.result_dir, f"{job_id}.result")

    def files(self, record_id: str) -> list[str]:
        return [self.result_path(record_id)]

    def interrupted(self, record: Record) -> None:
        self.remove_files(record.id)

    def work(
        self,
        run: Callable[[ProgressCallback], Awaitable[Any]],
        keep: Keeper,
        small: Small = lambda result: False,
    ) -> Work:
        """The work of a job: ``run(on_progress)``, its result kept by
        ``keep(result, path)`` as the job's file: on a thread, unless the
        result is ``small``."""

        async def work(record: Record, on_progress: ProgressCallback) -> Any:
            result = await run(on_progress)
            private.private_directory(self.result_dir)
            path = self.result_path(record.id)
            loop = asyncio.get_running_loop()
            if small(result):
                media_type, size = keep(result, path)
            else:
                media_type, size = await loop.run_in_executor(None, keep, result, path)
            if self.outputs is not None:
                await self.share(record.id, path)
            return {"type": media_type, "size": size}

        return work

    async def share(self, job_id: str, path: str) -> None:
        """Move a job's result file into the database, a chunk at a time."""
        assert self.outputs is not None
        loop = asyncio.get_running_loop()
        try:
            with open(path, "rb") as f:
                at = 0
                while chunk := await loop.run_in_executor(None, f.read, CHUNK):
                    await self.outputs.add(JOB, job_id, at, chunk)
                    at += len(chunk)
        except BaseException:
            with contextlib.suppress(exceptions.StoreError):
                await self.outputs.remove(JOB, job_id)
            raise
        finally:
            self.remove_files(job_id)

    @staticmethod
    def url(record: Record, base: str) -> str:
        return f"{base}/v2/models/{record.model}/predict/{record.id}"

    def view(self, record: Record, base: str) -> dict[str, Any]:
        """The job object of the HTTP API (without its inline result)."""
        url = self.url(record, base)
        body: dict[str, Any] = {
            "id": record.id,
            "model": record.model,
            "status": record.status,
            "date": str(record.date),
            "args": record.args,
        }
        if record.finish_date is not None:
            body["finish_date"] = str(record.finish_date)
            body["duration"] = str(record.duration())
        if record.message is not None:
            body["message"] = record.message
        if record.error_status is not None:
            body["error_status"] = record.error_status
        if record.started_by is not None:
            body["owner"] = record.started_by
        self.add_progress(record, body)
        body["links"] = {"self": url}
        if record.status == DONE:
            result = record.result if isinstance(record.result, dict) else {}
            body["result_type"] = result.get("type")
            body["result_size"] = result.get("size")
            body["links"]["result"] = url + "/result"
        return body

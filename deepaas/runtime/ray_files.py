"""Files between the front end and a worker on another machine, through
the worker's actor: uploads staged there (``RemoteUpload``), result files
copied here a few chunks in flight, and a call's log copied here as it
grows (``RemoteFiles``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import mimetypes
import os
import tempfile
from typing import Any

import ray

from deepaas import private
from deepaas.model.v2.types import ReturnedFile, SpooledResult, UploadedFile
from deepaas.runtime.protocol import (
    Answer,
    Batch,
    Call,
    Failure,
    Replies,
    Scratch,
    WorkerError,
)
from deepaas.runtime.ray_worker import CHUNK, READ_AHEAD, RemoteUpload

LOG_INTERVAL = 0.5  # seconds between copies of a remote call's log


class RemoteFiles:
    """The files of one worker on another machine, moved through its
    ``actor``; what comes here goes under ``scratch`` (in memory up to its
    ``memory_max``)."""

    def __init__(self, actor: Any, scratch: Scratch) -> None:
        self.actor = actor
        self.scratch = scratch

    async def copy_log(self, there: str, here: str, done: asyncio.Event) -> None:
        """Append what the call writes to its log there to the log here,
        every ``LOG_INTERVAL`` seconds, and once more when it has ended."""
        offset = 0
        read = self.actor.read.options(concurrency_group="io")
        with open(private.open_private(here, os.O_WRONLY | os.O_APPEND), "ab") as log:
            while True:
                finished = done.is_set()
                while True:
                    try:
                        data = await read.remote(there, offset, CHUNK, True)
                    except ray.exceptions.RayError:
                        return  # the worker is gone: what was copied stays
                    if data:
                        log.write(data)
                        log.flush()
                        offset += len(data)
                    if len(data) < CHUNK:
                        break
                if finished:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), LOG_INTERVAL)
        self.actor.discard.options(concurrency_group="io").remote(there)

    async def bring_back(
        self, reply: Answer | Failure | Replies
    ) -> Answer | Failure | Replies:
        """``reply`` with each result file of the worker's machine copied to
        a file of this one."""
        if isinstance(reply, Replies):
            return Replies(
                tuple([await self._bring_back_one(r) for r in reply.replies])
            )
        return await self._bring_back_one(reply)

    async def _bring_back_one(self, reply: Answer | Failure) -> Answer | Failure:
        if isinstance(reply, Failure):
            return reply
        value = reply.value
        if isinstance(value, SpooledResult):
            here = await self.copy_file(value.path, value.size)
            self.actor.discard.options(concurrency_group="io").remote(value.path)
            return Answer(dataclasses.replace(value, path=here))
        if isinstance(value, ReturnedFile):  # the model's: left where it is
            here = await self.copy_file(value.filename, None)
            content_type = value.content_type or mimetypes.guess_type(value.filename)[0]
            return Answer(
                SpooledResult(here, os.path.getsize(here), False, content_type)
            )
        return reply

    async def copy_file(self, there: str, size: int | None) -> str:
        """Copy a file of the worker's machine to a new file here (in memory
        when its ``size`` is known to fit), a few chunks in flight; its path."""
        scratch = self.scratch
        directory = scratch.disk
        if scratch.memory and size is not None and size <= scratch.memory_max:
            directory = scratch.memory
        fd, here = tempfile.mkstemp(prefix="deepaas-result-", dir=directory)
        read = self.actor.read.options(concurrency_group="io")
        pending: collections.deque[Any] = collections.deque()
        try:
            with open(fd, "wb") as f:
                offset = 0
                while True:
                    while len(pending) < READ_AHEAD:
                        pending.append(read.remote(there, offset, CHUNK))
                        offset += CHUNK
                    data = await pending.popleft()
                    f.write(data)
                    if len(data) < CHUNK:
                        break
        except BaseException:
            os.unlink(here)
            raise
        return here


def has_uploads(message: Call | Batch) -> bool:
    calls = message.calls if isinstance(message, Batch) else (message,)
    return any(
        isinstance(value, UploadedFile)
        or (isinstance(value, list) and any(isinstance(i, UploadedFile) for i in value))
        for call in calls
        for value in call.kwargs.values()
    )


def with_remote_uploads(message: Call | Batch) -> Call | Batch:
    """``message`` with each ``UploadedFile`` (a path here) a ``RemoteUpload``."""
    if isinstance(message, Batch):
        return Batch(tuple(_call_with_remote_uploads(c) for c in message.calls))
    return _call_with_remote_uploads(message)


def _call_with_remote_uploads(call: Call) -> Call:
    def remote(value: Any) -> Any:
        if isinstance(value, list):
            return [remote(item) for item in value]
        if not isinstance(value, UploadedFile):
            return value
        return RemoteUpload(
            value.name,
            value.filename,
            os.path.getsize(value.filename),
            value.content_type,
            value.original_filename,
        )

    kwargs = {name: remote(value) for name, value in call.kwargs.items()}
    return dataclasses.replace(call, kwargs=kwargs)


def failed(message: Call | Batch, exc: Exception) -> Failure | Replies:
    """The reply that fails every call of ``message`` with ``exc``."""
    if isinstance(message, Batch):
        failure = Failure(WorkerError.from_exception(exc, "predict"))
        return Replies(tuple(failure for _ in message.calls))
    return Failure(WorkerError.from_exception(exc, message.method))

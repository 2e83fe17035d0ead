"""Request bodies read as they arrive: multipart files streamed to disk.

A file part is written chunk by chunk to a temporary file in a directory owned
by the request, so a 1 GiB upload costs disk, not memory. ``Uploads`` removes the
directory when the request is done with it, whatever happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import shutil
import tempfile
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

from deepaas import exceptions
from deepaas.model.v2.types import UploadedFile

T = TypeVar("T")
CHUNK_SIZE = 256 * 1024
# The errors of a full disk, a full quota and a file-size limit.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    """The 413 for a body over ``limit`` bytes."""
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)


class Uploads:
    """The temporary files of one request; ``with uploads:`` removes them at
    the end of the block."""

    def __init__(self) -> None:
        self._directory: str | None = None
        self.received = 0  # bytes of file content written so far

    def new_path(self, original_filename: str) -> str:
        """A fresh path for an uploaded file, keeping its extension."""
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="deepaas-upload-")
        suffix = os.path.splitext(os.path.basename(original_filename))[1][:16]
        fd, path = tempfile.mkstemp(dir=self._directory, suffix=suffix)
        os.close(fd)
        return path

    def cleanup(self) -> None:
        """Delete every file of the request."""
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> Uploads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds of a multipart body, each 0 for none."""

    body: int = 0  # bytes of the whole body, part headers included
    parts: int = 0  # number of parts
    memory: int = 0  # bytes of the non-file fields, which are held in memory
    gap: float = 0  # seconds the body may go without sending data


async def read_multipart(
    request: web.Request, uploads: Uploads, limits: Limits
) -> tuple[MultiDict[str], dict[str, list[UploadedFile]]]:
    """Read a multipart body: text fields in memory, files to ``uploads``,
    within ``limits`` (checked while the body streams). A body that is not
    valid multipart is a ``BadRequest``.
    """
    try:
        return await _read_parts(request, uploads, limits)
    except (ValueError, HttpProcessingError) as exc:
        raise exceptions.BadRequest(
            "The request body is not valid multipart/form-data: " + _first_words(exc)
        ) from None


def _first_words(exc: Exception) -> str:
    """What aiohttp's parser says is wrong, without its status prefix."""
    text = getattr(exc, "message", None) or str(exc)
    lines = str(text).strip().splitlines()
    return lines[0].removeprefix("400, message:").strip() if lines else ""


async def _read_parts(
    request: web.Request, uploads: Uploads, limits: Limits
) -> tuple[MultiDict[str], dict[str, list[UploadedFile]]]:
    values: MultiDict[str] = MultiDict()
    files: dict[str, list[UploadedFile]] = {}
    received = 0  # bytes of the body
    in_memory = 0  # bytes of the text fields
    parts = 0
    reader = await request.multipart()
    while True:
        part = await _in_time(reader.next(), limits.gap)
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise exceptions.BadRequest("Nested multipart bodies are not accepted.")
        parts += 1
        if limits.parts and parts > limits.parts:
            raise exceptions.TooManyParts(limits.parts)
        # A part's headers count toward the size too: many empty parts are
        # not free.
        received += sum(len(k) + len(v) + 4 for k, v in part.headers.items())
        if limits.body and received > limits.body:
            raise too_large(limits.body)
        name = part.name or ""
        if part.filename is None:
            data = bytearray()
            while chunk := await _in_time(part.read_chunk(CHUNK_SIZE), limits.gap):
                received += len(chunk)
                in_memory += len(chunk)
                if limits.body and received > limits.body:
                    raise too_large(limits.body)
                if limits.memory and in_memory > limits.memory:
                    raise too_large(limits.memory)
                data.extend(chunk)
            values.add(name, _decode(name, data, part.get_charset(default="utf-8")))
            continue
        try:
            path = uploads.new_path(part.filename)
            with open(path, "wb") as target:
                while chunk := await _in_time(part.read_chunk(CHUNK_SIZE), limits.gap):
                    received += len(chunk)
                    if limits.body and received > limits.body:
                        raise too_large(limits.body)
                    target.write(chunk)
                    uploads.received += len(chunk)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise exceptions.InsufficientStorage(
                    f"No room to store the uploaded file {part.filename!r}: "
                    f"{exc.strerror}"
                ) from None
            raise
        content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
        files.setdefault(name, []).append(
            UploadedFile(name, path, content_type, part.filename)
        )
    return values, files


async def _in_time(step: Awaitable[T], seconds: float) -> T:
    """``step``, unless the body sends nothing for ``seconds`` (0: no limit)."""
    if not seconds:
        return await step
    try:
        return await asyncio.wait_for(step, seconds)
    except TimeoutError:
        raise exceptions.RequestTimeout(seconds) from None


def _decode(name: str, data: bytearray, charset: str) -> str:
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        raise exceptions.BadRequest(
            f"Part {name!r} names an unknown charset: {charset}"
        ) from None


def content_length_over(request: web.Request, limit: int) -> bool:
    """True when the declared body length already exceeds ``limit``."""
    return bool(limit) and (request.content_length or 0) > limit


def is_multipart(request: web.Request) -> bool:
    return request.content_type.startswith("multipart/")

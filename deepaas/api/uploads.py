"""Request bodies read as they arrive: multipart files streamed to temporary files.

A multipart body is parsed chunk by chunk as it streams in (by the ``multipart``
library's push parser): text fields are kept in memory, within a limit, and
each file part is written to its own temporary file, so a 1 GiB upload costs
disk, not memory.

Where the files go: the files of a small prediction (its whole body under
``INLINE_MAX``) stay in memory and travel inside the call to the worker, which
writes them; those of a larger one (under ``--upload-memory-max``) are written
to a memory-backed directory (``/dev/shm`` by default); both count against
``--upload-memory-total`` for all requests at once. Anything else goes to the
temporary directory on disk (``TMPDIR``). A memory-backed file that meets a
full file system moves to disk and carries on. Either way the model gets a
path it can open, and the files are removed when the request (or the worker
that wrote them) is done with them, whatever happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import threading

import multipart
from aiohttp import hdrs, web
from multidict import MultiDict

from deepaas import exceptions
from deepaas.model.v2.types import InlineUpload, UploadedFile

LOG = logging.getLogger(__name__)
PREFIX = "deepaas-upload-"
# The errors of a full disk, a full quota and a file-size limit.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# A part's header lines: as long as a request's header line may be, and a few
# more of them than the three a form part uses.
PART_HEADER_SIZE = 8190
PART_HEADER_COUNT = 16
# The files of a prediction body up to this size travel to the worker inside
# its call (``InlineUpload``): the worker writes them, the server does no file
# work at all.
INLINE_MAX = 256 * 1024


def too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    """The 413 for a body over ``limit`` bytes."""
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)


class MemorySpool:
    """A memory-backed directory for small uploads, and the bytes it may hold.

    Requests reserve room for their whole body before their first file is
    written there, and give it back when their files are removed.
    """

    def __init__(self, directory: str, max_request: int, total: int) -> None:
        self.directory = directory
        self.max_request = max_request  # largest body kept in memory
        self.total = total  # bytes held by all requests at once
        self.reserved = 0
        self._lock = threading.Lock()  # the CLI and tests share one from threads

    @classmethod
    def from_options(
        cls, directory: str, max_request: int, total: int
    ) -> MemorySpool | None:
        """The spool the options describe, or None when it is turned off or
        its directory cannot be written."""
        if not directory or not max_request or not total:
            return None
        if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
            LOG.warning("Uploads go to disk: %s is not a writable directory", directory)
            return None
        return cls(directory, max_request, total)

    def reserve(self, size: int) -> bool:
        """Room for ``size`` bytes, if the request is small and room is left."""
        if size > self.max_request:
            return False
        with self._lock:
            if self.reserved + size > self.total:
                return False
            self.reserved += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.reserved -= size


class Uploads:
    """The temporary files of one request; ``with uploads:`` removes them at
    the end of the block.

    ``spool`` and ``expected`` (the body's declared length) say whether the
    files may go to memory; without them they go to disk.
    """

    def __init__(
        self, spool: MemorySpool | None = None, expected: int | None = None
    ) -> None:
        self.paths: list[str] = []
        self.received = 0  # bytes of file content written so far
        self._spool = spool
        self._expected = expected
        self._reserved = 0
        self._directory: str | None = None
        self.inline = False  # files kept in memory for the worker to write

    def travels_inline(self) -> bool:
        """Whether this request's files go inside the call, as data (decided,
        with ``directory``, at its first file)."""
        self.directory  # noqa: B018 - the first use decides
        return self.inline

    @property
    def directory(self) -> str:
        """Where this request's files go, chosen at its first file: in the
        call itself (``inline``), the memory directory, or disk."""
        if self._directory is None:
            self._directory = tempfile.gettempdir()
            spool, expected = self._spool, self._expected
            if spool is not None and expected is not None and spool.reserve(expected):
                self._reserved = expected
                self._directory = spool.directory
                self.inline = expected <= INLINE_MAX
        return self._directory

    def create(
        self, original_filename: str, directory: str | None = None
    ) -> tuple[int, str]:
        """A new empty file, keeping the extension of ``original_filename``:
        its open descriptor and its path."""
        suffix = os.path.splitext(os.path.basename(original_filename))[1][:16]
        fd, path = tempfile.mkstemp(
            prefix=PREFIX, suffix=suffix, dir=directory or self.directory
        )
        self.paths.append(path)
        return fd, path

    def to_disk(self, fd: int, path: str, original_filename: str) -> tuple[int, str]:
        """Move a file that met a full memory-backed directory to disk; the
        new descriptor (at the end of the copy) and path."""
        new_fd, new_path = self.create(original_filename, tempfile.gettempdir())
        with open(path, "rb") as source, open(new_fd, "wb", closefd=False) as target:
            shutil.copyfileobj(source, target)
        os.close(fd)
        self._remove(path)
        return new_fd, new_path

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.paths.remove(path)

    def cleanup(self) -> None:
        """Delete every file of the request."""
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                LOG.warning("Could not remove the upload %s: %s", path, exc)
        self.paths.clear()
        if self._reserved and self._spool is not None:
            self._spool.release(self._reserved)
            self._reserved = 0

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


class _InlinePart:
    """A file part of a small prediction, kept in memory for the worker."""

    def __init__(self, uploads: Uploads, segment: multipart.MultipartSegment) -> None:
        self.uploads = uploads
        self.segment = segment
        self.data = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.data += data
        self.uploads.received += len(data)

    def close(self) -> InlineUpload:
        content_type = self.segment.header("Content-Type", "application/octet-stream")
        return InlineUpload(
            self.segment.name, self.data, content_type, self.segment.filename or ""
        )

    def abandon(self) -> None:
        self.data = bytearray()


class _FilePart:
    """A file part being written to its temporary file."""

    def __init__(self, uploads: Uploads, segment: multipart.MultipartSegment) -> None:
        self.uploads = uploads
        self.segment = segment
        self.original = segment.filename or ""
        self.fd, self.path = uploads.create(self.original)
        self.on_disk = os.path.dirname(self.path) == tempfile.gettempdir()

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self.fd, view) :]
                except OSError as exc:
                    if exc.errno not in NO_SPACE or self.on_disk:
                        raise
                    # A full memory-backed directory: carry on on disk.
                    self.fd, self.path = self.uploads.to_disk(
                        self.fd, self.path, self.original
                    )
                    self.on_disk = True
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise exceptions.InsufficientStorage(
                    f"No room to store the uploaded file {self.original!r}: "
                    f"{exc.strerror}"
                ) from None
            raise
        self.uploads.received += len(data)

    def close(self) -> UploadedFile:
        os.close(self.fd)
        self.fd = -1
        content_type = self.segment.header("Content-Type", "application/octet-stream")
        return UploadedFile(self.segment.name, self.path, content_type, self.original)

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def read_multipart(
    request: web.Request, uploads: Uploads, limits: Limits
) -> tuple[MultiDict[str], dict[str, list[UploadedFile | InlineUpload]]]:
    """Read a multipart body: text fields in memory, files to ``uploads``,
    within ``limits`` (checked while the body streams). A body that is not
    valid multipart is a ``BadRequest``.
    """
    boundary = multipart.parse_options_header(request.headers[hdrs.CONTENT_TYPE])[
        1
    ].get("boundary")
    if not boundary:
        raise exceptions.BadRequest(
            "The request body is not valid multipart/form-data: the Content-Type "
            "header names no boundary."
        )
    try:
        return await _read_parts(request, boundary, uploads, limits)
    except multipart.MultipartError as exc:
        raise exceptions.BadRequest(
            f"The request body is not valid multipart/form-data: {exc.args[0]}."
        ) from None
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise exceptions.InsufficientStorage(
                f"No room to store an uploaded file: {exc.strerror}"
            ) from None
        raise


async def _read_parts(
    request: web.Request, boundary: str, uploads: Uploads, limits: Limits
) -> tuple[MultiDict[str], dict[str, list[UploadedFile | InlineUpload]]]:
    values: MultiDict[str] = MultiDict()
    files: dict[str, list[UploadedFile | InlineUpload]] = {}
    received = 0  # bytes of the body
    in_memory = 0  # bytes of the text fields
    parts = 0
    parser = multipart.PushMultipartParser(
        boundary, max_header_size=PART_HEADER_SIZE, max_header_count=PART_HEADER_COUNT
    )
    segment: multipart.MultipartSegment | None = None
    text = bytearray()
    file: _FilePart | _InlinePart | None = None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as gap:
            while True:
                if limits.gap:
                    gap.reschedule(loop.time() + limits.gap)
                # One piece as it arrived (readany would join what is buffered).
                chunk, http_chunk_ended = await request.content.readchunk()
                if not chunk:
                    if http_chunk_ended:  # a chunked body goes on
                        continue
                    break
                received += len(chunk)
                if limits.body and received > limits.body:
                    raise too_large(limits.body)
                for event in parser.parse(chunk):
                    if event is None:  # the end of a part
                        assert segment is not None
                        if file is not None:
                            files.setdefault(segment.name, []).append(file.close())
                            file = None
                        else:
                            values.add(segment.name, _decode(segment, text))
                            text = bytearray()
                        segment = None
                    elif isinstance(event, multipart.MultipartSegment):
                        parts += 1
                        if limits.parts and parts > limits.parts:
                            raise exceptions.TooManyParts(limits.parts)
                        if (event.content_type or "").startswith("multipart/"):
                            raise exceptions.BadRequest(
                                "Nested multipart bodies are not accepted."
                            )
                        segment = event
                        if event.filename is not None:
                            file = (
                                _InlinePart(uploads, event)
                                if uploads.travels_inline()
                                else _FilePart(uploads, event)
                            )
                    elif file is not None:
                        file.write(event)
                    else:
                        in_memory += len(event)
                        if limits.memory and in_memory > limits.memory:
                            raise too_large(limits.memory)
                        text += event
    except TimeoutError:
        raise exceptions.RequestTimeout(limits.gap) from None
    finally:
        if file is not None:
            file.abandon()
    parser.close()  # a body that ends early is not valid
    return values, files


def _decode(segment: multipart.MultipartSegment, data: bytearray) -> str:
    charset = segment.charset or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        raise exceptions.BadRequest(
            f"Part {segment.name!r} names an unknown charset: {charset}"
        ) from None


def content_length_over(request: web.Request, limit: int) -> bool:
    """True when the declared body length already exceeds ``limit``."""
    return bool(limit) and (request.content_length or 0) > limit


def is_multipart(request: web.Request) -> bool:
    return request.content_type.startswith("multipart/")

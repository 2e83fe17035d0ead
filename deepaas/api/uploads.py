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

A memory-backed file whose prediction was answered is not removed but kept
as a spare (a few, within a share of the memory total, for a minute at most),
and the next upload is written over it: a tmpfs file's pages are costly to
allocate and free (more than writing the bytes), and a spare keeps them. A
spare is only ever a file of ours that nobody else has: one the model
renamed, linked or answered with is removed, as is any file of a call that
was cut short (its worker may still be at it). The spares' names carry the
server's pid, so that those of a server that was killed are removed by the
next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import stat
import tempfile
import threading
import time

import multipart
from aiohttp import hdrs, web
from multidict import MultiDict

from deepaas import exceptions, leftovers
from deepaas.model.v2.filenames import upload_suffix
from deepaas.model.v2.types import InlineUpload, UploadedFile
from deepaas.runtime import forms

LOG = logging.getLogger(__name__)
PREFIX = "deepaas-upload-"
# The errors of a full disk, a full quota and a file-size limit.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The files of a prediction body up to this size travel to the worker inside
# its call (``InlineUpload``): the worker writes them, the server does no file
# work at all.
INLINE_MAX = 256 * 1024
COPY_CHUNK = 1 << 20
# Spare memory-backed files: how many at most, for how long unused, and the
# share of --upload-memory-total they may hold.
SPARES_MAX = 16
SPARE_IDLE = 60.0
SPARES_SHARE = 4  # a quarter


@dataclasses.dataclass
class _Spare:
    """A memory-backed file kept for the next upload (see the module's doc)."""

    path: str
    stem: str  # the path without the original file's extension
    identity: tuple[int, int, int]  # still the file we wrote: see Uploads.closed
    size: int
    used: float  # time.monotonic() when it was last given back


def too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    """The 413 for a body over ``limit`` bytes."""
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)


class MemorySpool:
    """A memory-backed directory for small uploads, the bytes it may hold,
    and its spare files.

    Requests reserve room for their whole body before their first file is
    written there, and give it back when their files are removed or kept
    as spares (which count against the total too, and go first when a
    request needs their room).
    """

    def __init__(self, directory: str, max_request: int, total: int) -> None:
        self.directory = directory
        self.max_request = max_request  # largest body kept in memory
        self.total = total  # bytes held by all requests at once
        self.reserved = 0
        self.prefix = leftovers.owned_prefix(PREFIX)  # of this server's files
        self._spares: list[_Spare] = []
        self.spare_bytes = 0
        self._lock = threading.Lock()  # the CLI and tests share one from threads

    @classmethod
    def from_options(
        cls, directory: str, max_request: int, total: int
    ) -> MemorySpool | None:
        """The spool the options describe, or None when it is turned off or
        its directory cannot be written. Files left there by servers that
        were killed are removed."""
        if not directory or not max_request or not total:
            return None
        if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
            LOG.warning("Uploads go to disk: %s is not a writable directory", directory)
            return None
        leftovers.sweep(directory, PREFIX)
        return cls(directory, max_request, total)

    def reserve(self, size: int) -> bool:
        """Room for ``size`` bytes, if the request is small and room is left
        (spares are removed to make it)."""
        if size > self.max_request:
            return False
        with self._lock:
            evicted = self._expired(time.monotonic())
            while self._spares and self.reserved + self.spare_bytes + size > self.total:
                evicted.append(self._pop(0))
            fits = self.reserved + size <= self.total
            if fits:
                self.reserved += size
        _remove_quietly(evicted)
        return fits

    def release(self, size: int) -> None:
        with self._lock:
            self.reserved -= size

    def spares(self) -> list[str]:
        """The paths of the spare files."""
        with self._lock:
            return [spare.path for spare in self._spares]

    def take_spare(self, suffix: str, size: int | None) -> tuple[int, str] | None:
        """A spare file (the nearest in size to ``size``) opened for writing
        over, named with ``suffix``: its descriptor and path; None if there
        is none (or it cannot be used)."""
        with self._lock:
            if not self._spares:
                return None
            wanted = size or 0
            spare = min(self._spares, key=lambda s: abs(s.size - wanted))
            self._spares.remove(spare)
            self.spare_bytes -= spare.size
        path = spare.stem + suffix
        ours = [spare.path]  # the names to remove if it cannot be used
        fd = -1
        try:
            if path != spare.path:  # renamed, never over a file already there
                os.link(spare.path, path)
                ours.append(path)
                os.unlink(spare.path)
                ours.remove(spare.path)
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            status = os.fstat(fd)
            if (status.st_dev, status.st_ino) == spare.identity[:2]:
                return fd, path
        except (OSError, ValueError):  # ValueError: a name no system call takes
            pass
        if fd >= 0:
            os.close(fd)
        _remove_quietly(ours)
        return None

    def give_back(self, path: str, identity: tuple[int, int, int]) -> bool:
        """Keep the file at ``path`` as a spare if it is still the one we
        wrote, nobody else's, and there is room; whether it was kept."""
        try:
            status = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        if (
            not stat.S_ISREG(status.st_mode)
            or identity_of(status) != identity
            or status.st_nlink != 1
        ):
            return False
        now = time.monotonic()
        with self._lock:
            evicted = self._expired(now)
            kept = (
                len(self._spares) < SPARES_MAX
                and self.spare_bytes + status.st_size <= self.total // SPARES_SHARE
                and self.reserved + self.spare_bytes + status.st_size <= self.total
            )
            if kept:
                stem = path[: len(path) - len(os.path.splitext(path)[1])]
                self._spares.append(_Spare(path, stem, identity, status.st_size, now))
                self.spare_bytes += status.st_size
        _remove_quietly(evicted)
        return kept

    def expire(self) -> None:
        """Remove the spares unused for ``SPARE_IDLE`` seconds."""
        with self._lock:
            evicted = self._expired(time.monotonic())
        _remove_quietly(evicted)

    async def keep_spares_fresh(self) -> None:
        """Remove unused spares as they expire, until cancelled (an idle
        server holds none for long)."""
        while True:
            await asyncio.sleep(SPARE_IDLE)
            self.expire()

    def close(self) -> None:
        """Remove the spare files (the server stops)."""
        with self._lock:
            evicted = [self._pop(0) for _ in range(len(self._spares))]
        _remove_quietly(evicted)

    def _expired(self, now: float) -> list[str]:
        """Take out the spares unused for ``SPARE_IDLE``: their paths, to
        remove (outside the lock)."""
        return [
            self._pop(index)
            for index in range(len(self._spares) - 1, -1, -1)
            if now - self._spares[index].used > SPARE_IDLE
        ]

    def _pop(self, index: int) -> str:
        spare = self._spares.pop(index)
        self.spare_bytes -= spare.size
        return spare.path


def identity_of(status: os.stat_result) -> tuple[int, int, int]:
    """What tells a file we wrote from another at its path: its device and
    inode, which a new file may take over once ours is gone, and the time
    of its last change (in nanoseconds)."""
    return status.st_dev, status.st_ino, status.st_ctime_ns


def _remove_quietly(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


class Uploads:
    """The temporary files of one request; ``with uploads:`` removes them at
    the end of the block (or keeps memory-backed ones as spares, once the
    handler has said they may be: ``done_with()``).

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
        self._in_memory: set[str] = set()  # memory-backed files, by path
        # those completely written, by path: their identity (identity_of)
        self._identities: dict[str, tuple[int, int, int]] = {}
        self._reusable = False

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
        """A new empty file (or a spare one to write over: ``take_spare``),
        keeping the extension of ``original_filename``: its open descriptor
        and its path."""
        suffix = upload_suffix(original_filename)
        directory = directory or self.directory
        spool = self._spool
        if spool is not None and directory != spool.directory:
            spool = None  # a file on disk
        taken = spool.take_spare(suffix, self._expected) if spool else None
        if taken is not None:
            fd, path = taken
        else:
            prefix = spool.prefix if spool is not None else PREFIX
            fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        self.paths.append(path)
        if spool is not None:
            self._in_memory.add(path)
        return fd, path

    def closed(self, path: str, fd: int) -> None:
        """The file ``fd`` at ``path`` is completely written (and about to
        be closed): what it is now is what may be kept as a spare."""
        if path in self._in_memory:
            self._identities[path] = identity_of(os.fstat(fd))

    def done_with(self) -> None:
        """The model's call has ended with an answer: nothing uses the files
        any more, so memory-backed ones may be kept as spares."""
        self._reusable = True

    def in_answer(self, status: os.stat_result) -> None:
        """The file ``status`` describes is the answer: it is sent after the
        request's end, so it is removed, never kept as a spare."""
        for path, known in list(self._identities.items()):
            if known[:2] == (status.st_dev, status.st_ino):
                del self._identities[path]

    def to_disk(
        self, fd: int, path: str, original_filename: str, written: int
    ) -> tuple[int, str]:
        """Move a file that met a full memory-backed directory (its first
        ``written`` bytes) to disk; the new descriptor (at the end of the
        copy) and path."""
        new_fd, new_path = self.create(original_filename, tempfile.gettempdir())
        with open(path, "rb") as source, open(new_fd, "wb", closefd=False) as target:
            while written and (chunk := source.read(min(written, COPY_CHUNK))):
                target.write(chunk)
                written -= len(chunk)
        os.close(fd)
        self._remove(path)
        return new_fd, new_path

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.paths.remove(path)
        self._in_memory.discard(path)
        self._identities.pop(path, None)

    def cleanup(self) -> None:
        """Delete every file of the request (or keep it as a spare)."""
        if self._reserved and self._spool is not None:
            self._spool.release(self._reserved)
            self._reserved = 0
        spool = self._spool if self._reusable else None
        for path in self.paths:
            identity = self._identities.get(path)
            if spool is not None and identity and spool.give_back(path, identity):
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                LOG.warning("Could not remove the upload %s: %s", path, exc)
        self.paths.clear()
        self._in_memory.clear()
        self._identities.clear()

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


class _InlinePart(forms.MemoryPart):
    """A file part of a small prediction, kept in memory for the worker."""

    def __init__(self, uploads: Uploads, segment: multipart.MultipartSegment) -> None:
        super().__init__(segment)
        self.uploads = uploads

    def write(self, data: bytes | memoryview) -> None:
        super().write(data)
        self.uploads.received += len(data)


class _FilePart:
    """A file part being written to its temporary file."""

    def __init__(self, uploads: Uploads, segment: multipart.MultipartSegment) -> None:
        self.uploads = uploads
        self.segment = segment
        self.original = segment.filename or ""
        self.fd, self.path = uploads.create(self.original)
        self.on_disk = os.path.dirname(self.path) == tempfile.gettempdir()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(self.fd, view)
                except OSError as exc:
                    if exc.errno not in NO_SPACE or self.on_disk:
                        raise
                    # A full memory-backed directory: carry on on disk.
                    self.fd, self.path = self.uploads.to_disk(
                        self.fd, self.path, self.original, self.size
                    )
                    self.on_disk = True
                    continue
                self.size += written
                view = view[written:]
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise exceptions.InsufficientStorage(
                    f"No room to store the uploaded file {self.original!r}: "
                    f"{exc.strerror}"
                ) from None
            raise
        self.uploads.received += len(data)

    def close(self) -> UploadedFile:
        try:
            os.ftruncate(self.fd, self.size)  # a spare written over may be longer
            self.uploads.closed(self.path, self.fd)
        finally:
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
    boundary = forms.boundary_of(request.headers[hdrs.CONTENT_TYPE])

    def new_file(segment: multipart.MultipartSegment) -> forms.Part:
        if uploads.travels_inline():
            return _InlinePart(uploads, segment)
        return _FilePart(uploads, segment)

    reader = forms.FormReader(
        boundary, new_file, max_parts=limits.parts, max_memory=limits.memory
    )
    try:
        await _read_parts(request, reader, limits)
        return reader.close()
    except forms.FieldsTooLarge as exc:
        raise too_large(exc.limit) from None
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise exceptions.InsufficientStorage(
                f"No room to store an uploaded file: {exc.strerror}"
            ) from None
        raise
    finally:
        reader.abandon()


async def _read_parts(
    request: web.Request, reader: forms.FormReader, limits: Limits
) -> None:
    """Push the body through ``reader`` as it arrives."""
    received = 0  # bytes of the body
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
                reader.feed(chunk)
    except TimeoutError:
        raise exceptions.RequestTimeout(limits.gap) from None


def content_length_over(request: web.Request, limit: int) -> bool:
    """True when the declared body length already exceeds ``limit``."""
    return bool(limit) and (request.content_length or 0) > limit


def is_multipart(request: web.Request) -> bool:
    return request.content_type.startswith("multipart/")

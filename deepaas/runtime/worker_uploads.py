"""A worker's side of uploads: the files of uploads sent inside a call,
written to its memory-backed scratch directory (over spare files kept from
earlier calls) and removed when the call ends."""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import stat
import tempfile
from typing import Any

from deepaas import exceptions
from deepaas.model.v2.filenames import upload_suffix
from deepaas.model.v2.types import (
    InlineUpload,
    SpooledResult,
    StagedUpload,
    UploadedFile,
)
from deepaas.runtime.protocol import (
    Scratch,
)

LOG = logging.getLogger(__name__)

TRAVELLING = (InlineUpload, StagedUpload)


SPARES_KEPT = 4  # files a worker keeps to write the next uploads over
SPARE_PREFIX = ".spare-"  # their names in its memory-backed scratch directory


def identity_of(status: os.stat_result) -> tuple[int, int, int]:
    """What tells the file we wrote from another at its path: its device,
    inode and time of last change (any write, chmod or link changes it)."""
    return status.st_dev, status.st_ino, status.st_ctime_ns


class SpareFiles:
    """Files of the worker's memory-backed scratch directory that held an
    upload of an earlier call, kept under hidden names (a few) to be written
    over by the next uploads: a tmpfs file's pages cost more to allocate and
    free than the bytes cost to write. The path the model was given is gone
    when its call ends, as for any upload; a file is kept only as the worker
    left it (same inode and change time, one link), so one the model
    renamed, linked, changed or answered with is not."""

    def __init__(self, directory: str | None, limit: int = SPARES_KEPT) -> None:
        self.directory = directory
        self.limit = limit
        self._kept: list[tuple[str, tuple[int, int]]] = []  # path, (dev, inode)
        self._count = 0  # spares made, which names them
        self._taken = 0  # spares taken, which names the uploads they become

    def take(self, suffix: str) -> tuple[int, str] | None:
        """A spare under a new name of its own ending with ``suffix``,
        opened for writing over: its descriptor and path; None if there is
        none (or it cannot be used)."""
        while self._kept and self.directory is not None:
            spare, identity = self._kept.pop()
            # Unique in the worker's own directory, never used twice (and no
            # random number: on Linux each is a system call)
            self._taken += 1
            path = os.path.join(self.directory, f"upload-{self._taken:x}{suffix}")
            try:
                os.link(spare, path)  # never over a file already there
            except (OSError, ValueError):  # ValueError: a name no call takes
                _unlink_quietly(spare)
                continue
            _unlink_quietly(spare)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                _unlink_quietly(path)
                continue
            status = os.fstat(fd)
            if (status.st_dev, status.st_ino) == identity and status.st_nlink == 1:
                return fd, path
            os.close(fd)
            _unlink_quietly(path)
        return None

    def give_back(self, path: str, identity: tuple[int, int, int]) -> bool:
        """Keep the file at ``path`` (under a hidden name) if it is still as
        we wrote it and there is room; whether it was kept."""
        if self.directory is None or len(self._kept) >= self.limit:
            return False
        try:
            status = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        if (
            not stat.S_ISREG(status.st_mode)
            or status.st_nlink != 1
            or identity_of(status) != identity
        ):
            return False
        self._count += 1
        spare = os.path.join(self.directory, f"{SPARE_PREFIX}{self._count}")
        try:
            os.rename(path, spare)
        except OSError:
            return False
        self._kept.append((spare, identity[:2]))
        return True


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class InlineFiles:
    """The files a worker writes for uploads sent inside calls (and those
    staged on its machine), removed when the block ends (those handed over
    as results excepted; memory-backed ones may be kept as ``spares``)."""

    def __init__(
        self, scratch: Scratch | None, spares: SpareFiles | None = None
    ) -> None:
        self.scratch = scratch
        self.spares = spares
        self.paths: set[str] = set()
        # memory-backed files as written, by path: their identity_of
        self._written: dict[str, tuple[int, int, int]] = {}

    def written(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with each ``InlineUpload`` (or list of them) replaced by
        an ``UploadedFile`` for a file holding it."""
        if not any(
            isinstance(v, TRAVELLING)
            or (isinstance(v, list) and any(isinstance(i, TRAVELLING) for i in v))
            for v in kwargs.values()
        ):
            return kwargs
        written = {}
        for name, value in kwargs.items():
            try:
                if isinstance(value, list):
                    written[name] = [self._write(i) for i in value]
                else:
                    written[name] = self._write(value)
            except ValueError:  # a name or path no system call takes
                raise exceptions.InvalidArguments(
                    {name: ["The uploaded file cannot be stored under its name."]}
                ) from None
        return written

    def _write(self, value: Any) -> Any:
        if isinstance(value, StagedUpload):  # already written: removed with ours
            self.paths.add(value.path)
            return UploadedFile(
                value.name, value.path, value.content_type, value.original_filename
            )
        if not isinstance(value, InlineUpload):
            return value
        suffix = upload_suffix(value.original_filename)
        directories = [tempfile.gettempdir()]
        if self.scratch is not None:
            directories = [d for d in (self.scratch.memory, self.scratch.disk) if d]
        error: OSError | None = None
        for directory in directories:
            try:
                fd, path = self._create(directory, suffix)
            except OSError as exc:
                error = exc
                continue
            self.paths.add(path)
            try:
                with open(fd, "wb") as f:
                    f.write(value.data)
                    f.flush()
                    os.ftruncate(fd, len(value.data))  # a spare may be longer
                    if self.spares is not None and directory == self.spares.directory:
                        self._written[path] = identity_of(os.fstat(fd))
            except OSError as exc:  # no room here: the next directory
                error = exc
                self._remove(path)
                continue
            return UploadedFile(
                value.name, path, value.content_type, value.original_filename
            )
        assert error is not None
        raise exceptions.InsufficientStorage(
            f"No room to store the uploaded file {value.original_filename!r}: "
            f"{error.strerror}"
        )

    def _create(self, directory: str, suffix: str) -> tuple[int, str]:
        """A file to write an upload to: a spare, or a new one."""
        if self.spares is not None and directory == self.spares.directory:
            taken = self.spares.take(suffix)
            if taken is not None:
                return taken
        return tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=directory)

    def hand_over(self, path: str) -> SpooledResult | None:
        """A returned upload of this call, given to the server as a result
        (which removes it); None if ``path`` is not one."""
        if path not in self.paths:
            return None
        self.paths.discard(path)
        self._written.pop(path, None)
        return SpooledResult(
            path, os.path.getsize(path), False, mimetypes.guess_type(path)[0]
        )

    def _remove(self, path: str) -> None:
        self.paths.discard(path)
        self._written.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def __enter__(self) -> InlineFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for path in list(self.paths):
            identity = self._written.get(path)
            if identity and self.spares and self.spares.give_back(path, identity):
                self.paths.discard(path)
                continue
            self._remove(path)
        self._written.clear()

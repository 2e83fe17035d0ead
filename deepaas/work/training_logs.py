"""Training logs kept under a size cap (``--training-log-max-bytes``).

A training's worker appends to its log (``O_APPEND``) for as long as it
runs, so the log cannot be rewritten or replaced under it. Instead the
oldest output is dropped in place: its disk blocks are freed with
``fallocate(PUNCH_HOLE)``, which leaves every offset as it was, so the
writer is undisturbed and nothing it writes meanwhile is lost. The file
becomes sparse: its apparent size keeps growing while the disk it takes
stays near the cap. A reader (``open_log``) starts at the first line still
kept, after a line saying how much was cut.

Where the filesystem cannot punch holes (ext3, vfat, older NFS), the log is
rewritten in place instead: its tail after a marker line. Output the worker
writes during that rewrite (a few microseconds) may then land before the
tail instead of after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import logging
import os
from typing import BinaryIO

LOG = logging.getLogger(__name__)

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
SCAN_BYTES = 1 << 16  # read to find where kept lines begin


def cut_notice(cut: int, limit: int | None = None) -> bytes:
    """The line that stands for ``cut`` bytes of dropped output."""
    why = f" (--training-log-max-bytes {limit})" if limit else ""
    return (
        f"[deepaas: the first {cut} bytes of this log were cut{why}; "
        "what follows is its end]\n"
    ).encode()


def _libc_fallocate():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _libc_fallocate()


def punch_hole(fd: int, length: int) -> bool:
    """Free the first ``length`` bytes' blocks of a file, its size unchanged;
    False when the filesystem cannot."""
    if _FALLOCATE is None:
        return False
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if _FALLOCATE(fd, mode, 0, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code))


@dataclasses.dataclass
class LogCap:
    """Keeps one log at most ``max_bytes`` long (on disk)."""

    path: str
    max_bytes: int
    punching: bool = True  # False once the filesystem has said it cannot
    kept_from: int = 0  # offset of the oldest output kept
    dropped: int = 0  # bytes of output dropped so far

    def enforce(self) -> None:
        """Drop the oldest output beyond the cap (no error if no log yet)."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return
        if size - self.kept_from <= self.max_bytes:
            return
        if self.punching:
            with open(self.path, "r+b") as f:  # (punching needs write access)
                # up to a line's end, so that the kept output starts a line
                cut = size - self.max_bytes
                f.seek(cut)
                newline = f.read(SCAN_BYTES).find(b"\n")
                if newline >= 0:
                    cut += newline + 1
                if punch_hole(f.fileno(), cut):
                    self.kept_from = self.dropped = cut
                    return
            self.punching = False
            LOG.warning(
                "The filesystem of %s cannot free part of a file; training logs "
                "are cut by rewriting them instead",
                self.path,
            )
        self._rewrite(size)

    def _rewrite(self, size: int) -> None:
        """Rewrite the log as a cut notice and its last lines (the fallback)."""
        with open(self.path, "r+b") as f:
            keep = self.max_bytes // 2  # room for output before the next cut
            f.seek(size - keep - 1)  # from the end of the line before
            tail = f.read()
            newline = tail.find(b"\n")
            tail = tail[newline + 1 :] if 0 <= newline < len(tail) - 1 else tail[1:]
            if self.dropped:  # the notice of the previous cut goes too
                notice = len(cut_notice(self.dropped, self.max_bytes))
                self.dropped -= notice
            self.dropped += size - len(tail)
            f.truncate(0)
            f.seek(0)
            f.write(cut_notice(self.dropped, self.max_bytes) + tail)


@dataclasses.dataclass
class OpenLog:
    """A log opened for reading where its kept output begins."""

    file: BinaryIO
    start: int  # offset of the first kept line
    notice: bytes  # what to show before it (empty: nothing was cut)

    def close(self) -> None:
        self.file.close()


def open_log(path: str) -> OpenLog:
    """Open a log at its first kept line (raises ``FileNotFoundError``)."""
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    try:
        start = _data_start(f)
        if start == 0:
            return OpenLog(f, 0, b"")
        # Skip the zeros of the partly freed block before the kept lines.
        f.seek(start)
        while True:
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                break
            nonzero = len(chunk) - len(chunk.lstrip(b"\0"))
            if nonzero < len(chunk):
                start += nonzero
                break
            start += len(chunk)
        f.seek(start)
        return OpenLog(f, start, cut_notice(start))
    except BaseException:
        f.close()
        raise


def _data_start(f: BinaryIO) -> int:
    """The offset of a file's first data (past the holes punched at its start)."""
    first = f.read(1)
    if first != b"\0":
        return 0  # never punched (or empty)
    try:
        return os.lseek(f.fileno(), 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nothing but a hole
            return os.fstat(f.fileno()).st_size
        return 0

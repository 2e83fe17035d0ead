"""Files and directories of the server's state, readable by its user alone.

Training records, job results and training logs hold what clients sent and
what models answered: they are created 0600 in 0700 directories whatever
the umask says, and those found more open are closed up.
"""

from __future__ import annotations

import os
import stat

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private_directory(path: str) -> str:
    """``path``, made if missing, as a directory of this user's alone."""
    os.makedirs(path, mode=DIRECTORY_MODE, exist_ok=True)
    _restrict(path, DIRECTORY_MODE)
    return path


def private_file(path: str) -> None:
    """Make the file at ``path`` (empty if missing) this user's alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def restrict_if_present(path: str) -> None:
    """Make an existing file this user's alone; nothing if there is none."""
    try:
        _restrict(path, FILE_MODE)
    except FileNotFoundError:
        pass


def open_private(path: str, flags: int) -> int:
    """``os.open`` of ``path`` creating it 0600 (the umask cannot widen it:
    an existing file keeps its mode, made 0600 here)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _restrict(path: str, mode: int) -> None:
    status = os.stat(path)
    if status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) & 0o077:
        os.chmod(path, mode)

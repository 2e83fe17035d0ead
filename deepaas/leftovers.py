"""What a killed process left behind, found by name and removed.

Temporary files and directories that outlive a request or a worker are named
``<prefix><pid>-<random>`` after the process that owns them. A process that
ends normally removes its own; those of a process killed outright are
removed by ``sweep``, called by the next one that uses the same place.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil


def owned_prefix(prefix: str) -> str:
    """The start of the names of this process's entries with ``prefix``."""
    return f"{prefix}{os.getpid()}-"


def sweep(directory: str, prefix: str) -> None:
    """Remove the entries (files or directories) of ``directory`` named
    ``<prefix><pid>-...`` whose process has ended."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = pattern.match(entry.name)
            if match is None or running(int(match.group(1))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def running(pid: int) -> bool:
    """Whether a process ``pid`` exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

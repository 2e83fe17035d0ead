"""Who runs a record: the identity of a server process on its host, and
whether a process so named still runs (a record it left running was cut by
a stop or a crash)."""

from __future__ import annotations

import os
import socket


def process_identity(pid: int | None = None) -> str | None:
    """``host:pid:start-time`` of a live process (None if it is not running).

    The start time (from /proc) tells a live owner from a new process that
    happens to reuse its pid.
    """
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return f"{socket.gethostname()}:{pid}:{fields[19]}"


def this_process() -> str:
    """This process's identity (without /proc: its pid alone)."""
    return process_identity() or f"{socket.gethostname()}:{os.getpid()}:0"


def is_gone(owner: str | None) -> bool:
    """Whether the process ``owner`` names has ended; a process of another
    host is not this one's to judge (it counts as running)."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return False
    pid = rest.partition(":")[0]
    return not (pid.isdigit() and process_identity(int(pid)) == owner)

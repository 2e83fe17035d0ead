"""The code a Ray actor runs to be a deepaas worker (``--executor ray``).

An actor is one worker. On its machine it starts the same worker process the
local pool starts (``deepaas.model.v2.worker``), which loads the model entry
point itself and warms it, and relays the front end's messages
(``deepaas.model.v2.protocol``) to it over a socket, one call at a time, in
the actor's default concurrency group. So the model runs in the main thread
of a process of its own, as with local workers, and when that process dies
the actor, its parent, says exactly how (``Ended``: the exit code or the
signal), before the front end replaces the actor. The actor's other groups
serve the front end while a call runs: ``io`` reads files of its machine in
chunks (results, a training's log) and ``watch`` holds a call open for the
worker's whole life, so that the front end learns of a death at once, busy
or idle.

On another machine than the front end, an uploaded file arrives as a
``RemoteUpload``: the actor copies it, chunk by chunk, from the front end's
``UploadSource`` actor into its scratch directory, and the model gets an
``UploadedFile`` there, removed after the call. The scratch directories are
named after the actor's process id; an actor removes those of actors of its
machine that are gone (killed actors cannot clean up after themselves).

This module imports Ray lazily: the front end imports it to name the actor
classes, a worker to run them. The worker process imports no Ray at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

from deepaas.model.v2 import protocol
from deepaas.model.v2.protocol import Batch, Call, Ended, Ping, Scratch, Start
from deepaas.model.v2.types import StagedUpload

WORKER_COMMAND = "from deepaas.model.v2.worker import main; main()"

LOG = logging.getLogger(__name__)
CHUNK = 1024 * 1024  # bytes per piece of a file copied between machines
READ_AHEAD = 4  # pieces asked for before the first arrives
SCRATCH_PREFIX = "deepaas-ray-"
SCRATCH_NAME = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteUpload:
    """An uploaded file on the front end's machine, for a worker on another:
    ``path`` there, ``size`` bytes, read through the ``UploadSource``."""

    name: str
    path: str
    size: int
    content_type: str
    original_filename: str


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """Where an actor runs: its process, its machine, the GPUs it sees and
    its scratch directories there."""

    pid: int
    node_id: str
    address: str
    devices: str | None
    scratch: Scratch | None


def read_chunk(path: str, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of the file at ``path`` from ``offset`` (fewer at
    its end)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


class UploadSource:
    """Serves the front end's uploaded files, in chunks, to workers on other
    machines; it runs on the front end's machine and reads only under the
    directories the front end writes uploads to."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = [os.path.realpath(r) for r in roots]

    def read(self, path: str, offset: int, size: int) -> bytes:
        real = os.path.realpath(path)
        if not any(os.path.dirname(real).startswith(root) for root in self.roots):
            raise PermissionError(f"not an upload of this server: {path}")
        return read_chunk(real, offset, size)


class WorkerActor:
    """One deepaas worker as a Ray actor (see the module's docstring)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.reader: protocol.SocketReader | None = None
        self.scratch: Scratch | None = None
        self.source: Any = None
        self._closing = False

    # -- the default group: start, then one call at a time -------------------

    def start(
        self, start: Start, source: Any, memory_root: str | None
    ) -> tuple[bytes, Placement]:
        """Start the worker process and have it load and warm the model;
        its ``Ready`` or ``Failure`` (``Ended`` if it died), and where this
        actor runs."""
        import ray

        self.source = source
        memory_max = start.scratch.memory_max if start.scratch else 0
        self.scratch = make_scratch(memory_root, memory_max)
        context = ray.get_runtime_context()
        placement = Placement(
            os.getpid(),
            context.get_node_id(),
            ray.util.get_node_ip_address(),
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            self.scratch,
        )
        # This machine's import path, and the front end's where it exists
        # here too: the model may be installed in a directory the server was
        # told about.
        sys_path = [*sys.path]
        sys_path += [
            p for p in start.sys_path if p not in sys_path and os.path.isdir(p)
        ]
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER_COMMAND, str(theirs.fileno()),
                 start.spec.name],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        self.sock = ours
        self.reader = protocol.SocketReader(ours)
        start = dataclasses.replace(start, sys_path=sys_path, scratch=self.scratch)
        return self._exchange(protocol.encode(start)), placement

    def handle(self, frame: bytes) -> bytes:
        """Relay one message (a ``Call``, a ``Batch`` or a ``Ping``) to the
        worker process; its reply, or ``Ended``."""
        message = protocol.decode_frame(frame)
        if isinstance(message, Ping):
            return self._exchange(frame)
        assert isinstance(message, Call | Batch), f"not a call: {message!r}"
        staged: list[str] = []
        if isinstance(message, Batch):
            calls = tuple(self._staged(call, staged) for call in message.calls)
            if staged:
                frame = protocol.encode(Batch(calls))
        else:
            call = self._staged(message, staged)
            if staged:
                frame = protocol.encode(call)
        try:
            return self._exchange(frame)
        finally:
            # The worker removes them after the call; not if it died in it.
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    if self.process is not None and self.process.poll() is not None:
                        os.unlink(path)

    def _exchange(self, frame: bytes) -> bytes:
        """Send ``frame`` to the worker process and return its reply's frame,
        or ``Ended`` when it dies first."""
        assert self.sock is not None and self.reader is not None
        with contextlib.suppress(OSError):  # a dead worker: seen below
            self.sock.sendall(frame)
            reply = self.reader.receive()
            if reply is not None:
                return protocol.encode(reply)
        return protocol.encode(Ended(self._wait()))

    def _wait(self) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def _staged(self, call: Call, staged: list[str]) -> Call:
        """``call`` with each ``RemoteUpload`` copied to this machine (a
        ``StagedUpload``, its path added to ``staged``)."""

        def stage(value: Any) -> Any:
            if isinstance(value, list):
                return [stage(item) for item in value]
            if not isinstance(value, RemoteUpload):
                return value
            copy = self._copy(value)
            staged.append(copy.path)
            return copy

        if not any(
            isinstance(v, RemoteUpload)
            or (isinstance(v, list) and any(isinstance(i, RemoteUpload) for i in v))
            for v in call.kwargs.values()
        ):
            return call
        try:
            kwargs = {name: stage(value) for name, value in call.kwargs.items()}
        except BaseException:
            for path in staged:
                os.unlink(path)
            raise
        return dataclasses.replace(call, kwargs=kwargs)

    def _copy(self, upload: RemoteUpload) -> StagedUpload:
        """Copy one upload from the front end, a few chunks in flight."""
        import ray

        directory = self.scratch.disk if self.scratch else tempfile.gettempdir()
        if (
            self.scratch
            and self.scratch.memory
            and upload.size <= self.scratch.memory_max
        ):
            directory = self.scratch.memory
        suffix = os.path.splitext(upload.original_filename)[1][:16]
        fd, path = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=directory)
        try:
            with open(fd, "wb") as f:
                offsets = iter(range(0, upload.size, CHUNK))
                pending = [
                    self.source.read.remote(upload.path, offset, CHUNK)
                    for offset in _take(offsets, READ_AHEAD)
                ]
                while pending:
                    f.write(ray.get(pending.pop(0)))
                    for offset in _take(offsets, 1):
                        pending.append(
                            self.source.read.remote(upload.path, offset, CHUNK)
                        )
        except BaseException:
            os.unlink(path)
            raise
        return StagedUpload(
            upload.name, path, upload.content_type, upload.original_filename
        )

    # -- the io group: files of this machine, for the front end --------------

    def read(
        self, path: str, offset: int, size: int, missing_ok: bool = False
    ) -> bytes:
        """A chunk of a result or log file of this machine (nothing, with
        ``missing_ok``, from a file not written yet)."""
        try:
            return read_chunk(path, offset, size)
        except FileNotFoundError:
            if missing_ok:
                return b""
            raise

    def discard(self, path: str) -> None:
        """Remove a file the front end has copied."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def close(self) -> None:
        """End the worker process (it exits when its socket closes, and is
        killed if it lingers), then remove this actor's scratch directories:
        the actor is about to end."""
        self._closing = True
        if self.sock is not None:
            self.sock.close()
        if self.process is not None and self._wait() is None:
            self.process.kill()
            self.process.wait()
        remove_scratch(self.scratch)
        self.scratch = None

    # -- the watch group ------------------------------------------------------

    def watch(self) -> bytes | None:
        """Return when the worker process ends: ``Ended`` if it died, None
        if the front end closed it. A front end awaiting this learns of a
        death as it happens, busy or idle (and of the actor's own, as Ray
        fails the call)."""
        assert self.process is not None
        exitcode = self.process.wait()
        return None if self._closing else protocol.encode(Ended(exitcode))


def _take(iterator: Any, count: int) -> list[Any]:
    return [value for _, value in zip(range(count), iterator, strict=False)]


def make_scratch(memory_root: str | None, memory_max: int) -> Scratch:
    """This actor's scratch directories on its machine (in memory under
    ``memory_root`` when it exists here), after removing those of gone
    actors."""
    disk_root = tempfile.gettempdir()
    roots = [disk_root]
    if memory_root and os.path.isdir(memory_root):
        roots.append(memory_root)
    for root in roots:
        sweep(root)
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-"
    memory = None
    if len(roots) > 1:
        with contextlib.suppress(OSError):  # a full tmpfs: disk only
            memory = tempfile.mkdtemp(prefix=prefix, dir=roots[1])
    disk = tempfile.mkdtemp(prefix=prefix, dir=disk_root)
    return Scratch(memory, disk, memory_max if memory else 0)


def remove_scratch(scratch: Scratch | None) -> None:
    if scratch is not None:
        for directory in (scratch.memory, scratch.disk):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


def sweep(root: str) -> None:
    """Remove the scratch directories, under ``root``, of actors whose
    process has ended."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            match = SCRATCH_NAME.match(entry.name)
            if match and entry.is_dir() and not _running(int(match.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

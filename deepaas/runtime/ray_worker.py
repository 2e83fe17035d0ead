"""The code a Ray actor runs to host a deepaas worker (``--executor ray``).

An actor is one worker's home on its machine. It starts the same worker
process the local pool starts (``deepaas.runtime.worker``), connected by TCP
straight to the front end, which talks to it as to a local worker
(``deepaas.runtime.protocol``): calls do not pass through Ray, so a call
costs what it costs locally. The worker process loads the model entry point
itself, warms it and runs it in its main thread. The actor, its parent,
stays to:

- say how the worker process ended (``watch``: its exit code or signal),
  and learn the front end of the actor's own death as Ray reports it;
- copy uploaded files from the front end's machine (``stage``: a
  ``RemoteUpload`` becomes a ``StagedUpload``, read in chunks from the
  ``UploadSource`` actor that runs beside the front end);
- serve files of its machine in chunks (``read``: large results, returned
  files, a training's log) and remove them (``discard``);
- remove its scratch directories (``close``). They are named after the
  actor's process id, and an actor removes those of gone actors of its
  machine at start (a killed actor cannot clean up after itself).

The connection is opened by the actor and proven by a one-time random token
the front end gave it through Ray, so that nobody else can pose as a worker.

This module imports Ray lazily: the front end imports it to name the actor
classes, a worker to run them. The worker process imports no Ray at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

from deepaas import leftovers
from deepaas.model.v2.filenames import upload_suffix
from deepaas.model.v2.types import StagedUpload
from deepaas.runtime.protocol import Batch, Call, Scratch, worker_command

LOG = logging.getLogger(__name__)
CHUNK = 1024 * 1024  # bytes per piece of a file copied between machines
READ_AHEAD = 4  # pieces asked for before the first arrives
SCRATCH_PREFIX = "deepaas-ray-"


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
    """Where a worker runs: its process, its machine, the GPUs it sees, its
    scratch directories there and its import path."""

    pid: int  # the worker process
    node_id: str
    address: str
    devices: str | None
    scratch: Scratch | None
    sys_path: list[str]  # the worker's import path


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
        if not any(os.path.commonpath([real, root]) == root for root in self.roots):
            raise PermissionError(f"not an upload of this server: {path}")
        return read_chunk(real, offset, size)


class WorkerActor:
    """One deepaas worker's home, as a Ray actor (see the module's docstring)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.scratch: Scratch | None = None
        self.source: Any = None

    # -- the default group ---------------------------------------------------

    def start(
        self,
        name: str,
        address: tuple[str, int],
        token: bytes,
        sys_path: list[str],
        source: Any,
        memory_root: str | None,
        memory_max: int,
    ) -> Placement:
        """Start the worker process of model ``name``, connected to the front
        end at ``address`` (proven with ``token``); where it runs."""
        import ray

        self.source = source
        self.scratch = make_scratch(memory_root, memory_max)
        # This machine's import path, and the front end's where it exists
        # here too: the model may be installed in a directory the server was
        # told about.
        path = [*sys.path]
        path += [p for p in sys_path if p not in path and os.path.isdir(p)]
        sock = socket.create_connection(address, timeout=30)
        with sock:
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(token)
            self.process = subprocess.Popen(
                worker_command(str(sock.fileno()), name),
                stdin=subprocess.DEVNULL,
                pass_fds=(sock.fileno(),),
            )
        return Placement(
            self.process.pid,
            ray.get_runtime_context().get_node_id(),
            ray.util.get_node_ip_address(),
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            self.scratch,
            path,
        )

    def stage(self, message: Call | Batch) -> Call | Batch:
        """``message`` with each ``RemoteUpload`` copied to this machine (a
        ``StagedUpload``, which the worker removes after the call)."""
        if isinstance(message, Batch):
            return Batch(tuple(self._staged(call) for call in message.calls))
        return self._staged(message)

    def _staged(self, call: Call) -> Call:
        staged: list[str] = []

        def stage(value: Any) -> Any:
            if isinstance(value, list):
                return [stage(item) for item in value]
            if not isinstance(value, RemoteUpload):
                return value
            copy = self._copy(value)
            staged.append(copy.path)
            return copy

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
        suffix = upload_suffix(upload.original_filename)
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
        """End the worker process if it still runs, then remove this actor's
        scratch directories: the actor is about to end."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        remove_scratch(self.scratch)
        self.scratch = None

    # -- the watch group ------------------------------------------------------

    def watch(self) -> int | None:
        """Return when the worker process ends: its exit code (negative: the
        signal that killed it). A front end awaiting this learns of the
        worker's end as it happens, busy or idle, and of the actor's own as
        Ray fails the call."""
        assert self.process is not None
        return self.process.wait()


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
        leftovers.sweep(root, SCRATCH_PREFIX)
    prefix = leftovers.owned_prefix(SCRATCH_PREFIX)
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

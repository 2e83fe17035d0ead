"""The code a Ray actor runs to be a deepaas worker (``--executor ray``).

An actor is one worker: it loads the model entry point itself, warms it, then
answers the same messages a local worker answers on its socket
(``deepaas.model.v2.protocol``), one call at a time, in its default
concurrency group. Its other groups serve the front end while a call runs:
``io`` reads files of its machine in chunks (results, a training's log) and
``watch`` holds a call open for the actor's whole life, so that the front end
learns of its death at once, busy or idle.

On another machine than the front end, an uploaded file arrives as a
``RemoteUpload``: the actor copies it, chunk by chunk, from the front end's
``UploadSource`` actor into its scratch directory, and the model gets an
``UploadedFile`` there, removed after the call. The scratch directories are
named after the actor's process id; an actor removes those of actors of its
machine that are gone (killed actors cannot clean up after themselves).

This module imports Ray lazily: the front end imports it to name the actor
classes, a worker to run them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from typing import Any

from deepaas import log
from deepaas.model.v2 import protocol
from deepaas.model.v2.protocol import Batch, Call, Failure, Ping, Ready, Scratch, Start
from deepaas.model.v2.types import StagedUpload
from deepaas.model.v2.worker import (
    PONG_FRAME,
    LoadedModel,
    WorkerError,
    batch_request_id,
    encode_reply,
)

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
        self.model: LoadedModel | None = None
        self.scratch: Scratch | None = None
        self.source: Any = None
        self._ended = threading.Event()

    # -- the default group: start, then one call at a time -------------------

    def start(
        self, start: Start, source: Any, memory_root: str | None
    ) -> tuple[bytes, Placement]:
        """Load and warm the model; say ``Ready`` (or the ``Failure``) and
        where this actor runs."""
        import ray

        # The front end's import path, where it exists here too: the model
        # may be installed in a directory the server was told about.
        sys.path.extend(
            p for p in start.sys_path if p not in sys.path and os.path.isdir(p)
        )
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(line_buffering=True)
        log.configure(
            start.log_level, start.log_format, label=f"{start.spec.name} worker"
        )
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
        try:
            self.model = LoadedModel.load(
                start.spec, warm=start.warm, scratch=self.scratch
            )
        except BaseException as exc:  # report anything, even SystemExit
            error = WorkerError.from_exception(exc, "warm")
            return protocol.encode(Failure(error)), placement
        return protocol.encode(Ready(os.getpid())), placement

    def handle(self, frame: bytes) -> bytes:
        """Answer one message: a ``Call``, a ``Batch`` or a ``Ping``."""
        message = protocol.decode_frame(frame)
        if isinstance(message, Ping):
            return PONG_FRAME
        assert self.model is not None, "a worker starts before it takes calls"
        if isinstance(message, Batch):
            log.REQUEST_ID.set(batch_request_id(message))
            calls = tuple(self._staged(call) for call in message.calls)
            return encode_reply(self.model.run_batch(Batch(calls)))
        assert isinstance(message, Call), f"a worker receives calls, not {message!r}"
        # The model's log lines during this call name the request it serves.
        log.REQUEST_ID.set(message.request_id)
        return encode_reply(self.model.run(self._staged(message)))

    def _staged(self, call: Call) -> Call:
        """``call`` with each ``RemoteUpload`` copied to this machine (a
        ``StagedUpload``); the model's run removes the copies."""

        def stage(value: Any) -> Any:
            if isinstance(value, list):
                return [stage(item) for item in value]
            if not isinstance(value, RemoteUpload):
                return value
            return self._copy(value)

        if not any(
            isinstance(v, RemoteUpload)
            or (isinstance(v, list) and any(isinstance(i, RemoteUpload) for i in v))
            for v in call.kwargs.values()
        ):
            return call
        kwargs = {name: stage(value) for name, value in call.kwargs.items()}
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
        """Remove this actor's scratch directories (it is about to end)."""
        remove_scratch(self.scratch)
        self.scratch = None
        self._ended.set()

    # -- the watch group ------------------------------------------------------

    def watch(self) -> None:
        """Return only when the actor is closed: a front end awaiting this
        learns of the actor's death as it happens."""
        self._ended.wait()


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

"""The code a spawned worker process runs.

A worker is told which model to serve (``Start``), loads the model entry point
itself, warms it, says ``Ready``, then answers one ``Call`` at a time over its
socket (``deepaas.model.v2.protocol``).
A worker ends when its socket closes or its parent process dies. It imports
the model layer only: the protocol, the value types and the encoding of
results, never the server (aiohttp included).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from deepaas import log
from deepaas.model.loading import ModelSpec
from deepaas.model.v2 import protocol
from deepaas.model.v2.encoding import finish_prediction, response_schema_of
from deepaas.model.v2.protocol import (
    Answer,
    Call,
    Failure,
    Ping,
    Pong,
    Ready,
    Start,
    WorkerError,
)
from deepaas.model.v2.types import ReturnedFile

LOG = logging.getLogger(__name__)
PONG_FRAME = protocol.encode(Pong())


def portable(result: Any) -> Any:
    """``result`` made fit to cross the process boundary: an open file becomes
    a ``ReturnedFile`` pointing at its path."""
    if not isinstance(result, io.IOBase):
        return result
    name = getattr(result, "name", None)
    if isinstance(name, str):
        path = os.path.abspath(name)
        result.close()
        return ReturnedFile(
            name=None,
            filename=path,
            content_type=None,
            original_filename=os.path.basename(path),
        )
    return result


def encode_reply(reply: Answer | Failure) -> bytes:
    """The frame of a reply; a result that does not pickle goes as its str()."""
    try:
        return protocol.encode(reply)
    except Exception:
        assert isinstance(reply, Answer)  # a WorkerError is plain data
        return protocol.encode(Answer(str(reply.value)))


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
    """Send file descriptors 1 and 2 (so print, logging and C code) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (target, *saved):
            os.close(fd)


def die_with_parent() -> None:
    """End this process when the server that spawned it dies, even by SIGKILL.

    Linux delivers SIGKILL on the parent's death (prctl); a watcher thread that
    sees the process re-parented covers other systems.
    """
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class LoadedModel:
    """A model object in the process that runs its calls."""

    def __init__(self, name: str, model: Any, *, warm: bool) -> None:
        self.name = name
        self.model = model
        self.response_schema = response_schema_of(name, model)
        if warm and callable(getattr(model, "warm", None)):
            model.warm()

    @classmethod
    def load(cls, spec: ModelSpec, *, warm: bool) -> LoadedModel:
        """Import the model from its entry point, then warm it."""
        return cls(spec.name, spec.load(), warm=warm)

    def run(self, call: Call) -> Answer | Failure:
        """Run ``call`` (its output to its log file, if it names one)."""
        if call.log_path is None:
            return self._run(call)
        with output_to(call.log_path):
            return self._run(call)

    def _run(self, call: Call) -> Answer | Failure:
        function = getattr(self.model, call.method, None)
        if function is None:
            return Failure(WorkerError.missing_method(call.method))
        try:
            result = portable(function(**call.kwargs))
            if call.finish_prediction:
                result = finish_prediction(
                    self.name, self.response_schema, result, call.kwargs.get("accept")
                )
            return Answer(result)
        except Exception as exc:
            if call.log_path is not None:
                # The call's own log (a training's) ends with what went wrong.
                traceback.print_exc(file=sys.stderr)
            # Whoever receives the failure reports it once; the traceback is
            # for whoever runs with debug logging.
            LOG.debug("%s() raised", call.method, exc_info=True)
            return Failure(WorkerError.from_exception(exc, call.method))


def main() -> None:
    """Entry point of a worker process, started by the server as
    ``python -c <import and call this> <socket fd> <model name>``."""
    # The server decides when workers stop; a Ctrl-C on its terminal reaches
    # the whole process group and must not kill a worker mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    sock = socket.socket(fileno=int(sys.argv[1]))
    reader = protocol.SocketReader(sock)
    try:
        start = reader.receive()
        if start is None:  # the server gave up before we started
            return
        assert isinstance(start, Start), f"a worker starts with Start, not {start!r}"
        sys.path[:] = start.sys_path
        # Line buffering, so that a training's log shows its prints as they
        # happen.
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(line_buffering=True)
        log.configure(
            start.log_level, start.log_format, label=f"{start.spec.name} worker"
        )
        serve(reader, start.spec, start.warm)
    except ConnectionError:
        pass  # the server is gone: nobody is left to answer to


def serve(reader: protocol.SocketReader, spec: ModelSpec, warm: bool) -> None:
    """Load and warm the model, then answer calls until the socket closes."""
    sock = reader.sock
    try:
        model = LoadedModel.load(spec, warm=warm)
    except BaseException as exc:  # report anything, even SystemExit, then end
        error = WorkerError.from_exception(exc, "warm")
        sock.sendall(protocol.encode(Failure(error)))
        return
    sock.sendall(protocol.encode(Ready(os.getpid())))
    while True:
        call = reader.receive()
        if call is None:  # the server closed the socket: time to go
            return
        if isinstance(call, Ping):
            sock.sendall(PONG_FRAME)
            continue
        assert isinstance(call, Call), f"a worker receives calls, not {call!r}"
        # The model's log lines during this call name the request it serves.
        log.REQUEST_ID.set(call.request_id)
        sock.sendall(encode_reply(model.run(call)))

"""The code a spawned worker process runs.

A worker loads the model entry point itself, warms it, then answers one call at
a time over a socket: a request is ``(method, kwargs, options)``, an answer is
``("ok", result)`` or ``("error", details)``. Frames are an 8-byte big-endian
length followed by a pickle. With ``options["log"]`` the call's standard output,
standard error and logging go to that file. A worker ends when its socket
closes or its parent process dies. This module imports nothing from the server
side.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from deepaas import log
from deepaas.exceptions import InvalidResponse
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.wrapper import ReturnedFile, finish_prediction, response_schema_of

HEADER = struct.Struct("!Q")
LOG = logging.getLogger(__name__)


def encode(message: Any) -> bytes:
    """One frame carrying ``message``."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes | memoryview) -> Any:
    """The message carried by a frame's payload."""
    return pickle.loads(payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> Any:
    """Block until a frame arrives and return its message; None at EOF.

    The server sends one frame and waits for the answer, so a single recv
    usually brings the whole frame.
    """
    first = sock.recv(1 << 16)
    if len(first) < HEADER.size:
        rest = _recv_exactly(sock, HEADER.size - len(first)) if first else None
        if rest is None:
            return None
        first += rest
    size = HEADER.unpack_from(first)[0]
    payload = first[HEADER.size :]
    if len(payload) < size:
        rest = _recv_exactly(sock, size - len(payload))
        if rest is None:
            return None
        payload += rest
    return decode(payload)


def describe_exception(exc: BaseException, method: str) -> dict[str, Any]:
    """What the server needs to know about an exception the model raised."""
    details: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "traceback": traceback.format_exc(),
        "kind": "error",
    }
    if isinstance(exc, NotImplementedError):
        details["kind"] = "not_implemented"
        details["message"] = str(exc) or f"The model does not implement {method}()."
    elif _is_http_exception(exc):
        # aiohttp is not imported here: recognise its exceptions by class.
        details["kind"] = "http"
        details["status"] = int(exc.status_code)  # type: ignore[attr-defined]
        details["reason"] = str(getattr(exc, "reason", ""))
        details["message"] = str(getattr(exc, "text", None) or details["reason"])
    return details


def _is_http_exception(exc: BaseException) -> bool:
    return any(
        cls.__name__ == "HTTPException" and cls.__module__.startswith("aiohttp")
        for cls in type(exc).__mro__
    )


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


def encode_answer(answer: tuple[str, Any]) -> bytes:
    """The frame of an answer; a result that does not pickle goes as its str()."""
    try:
        return encode(answer)
    except Exception:
        status, value = answer
        return encode((status, str(value)))


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


def run_call(
    model: Any, method: str, kwargs: dict[str, Any], log: str | None = None
) -> tuple[str, Any]:
    """Call ``model.<method>(**kwargs)``; return the answer to send."""
    function = getattr(model, method, None)
    if function is None:
        return "error", {
            "type": "NotImplementedError",
            "message": f"The model does not implement {method}().",
            "traceback": "",
            "kind": "not_implemented",
        }
    try:
        if log is None:
            return "ok", portable(function(**kwargs))
        with output_to(log):
            return "ok", portable(function(**kwargs))
    except Exception as exc:
        # The server (or the CLI) reports the failure once; the traceback is
        # for whoever runs with debug logging.
        LOG.debug("%s() raised", method, exc_info=True)
        return "error", describe_exception(exc, method)


def main(
    sock: socket.socket,
    spec: ModelSpec,
    warm: bool,
    log_level: int,
    log_format: str = "text",
) -> None:
    """Entry point of a worker process."""
    # The server decides when workers stop; a Ctrl-C on its terminal reaches
    # the whole process group and must not kill a worker mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    # Line buffering, so that a training's log shows its prints as they happen.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    log.configure(log_level, log_format, label=f"{spec.name} worker")
    try:
        serve(sock, spec, warm)
    except ConnectionError:
        pass  # the server is gone: nobody is left to answer to


def serve(sock: socket.socket, spec: ModelSpec, warm: bool) -> None:
    """Load and warm the model, then answer calls until the socket closes."""
    try:
        model = spec.load()
        schema = response_schema_of(spec.name, model)
        if warm and callable(getattr(model, "warm", None)):
            model.warm()
    except BaseException as exc:  # report anything, even SystemExit, then end
        sock.sendall(encode(("failed", describe_exception(exc, "warm"))))
        return
    sock.sendall(encode(("ready", os.getpid())))
    while True:
        request = receive(sock)
        if request is None:  # the server closed the socket: time to go
            return
        method, kwargs, options = request
        # The model's log lines during this call name the request it serves.
        log.REQUEST_ID.set(options.get("request_id") or "-")
        answer = run_call(model, method, kwargs, options.get("log"))
        if options.get("finish") and answer[0] == "ok":
            answer = finish(spec.name, schema, answer[1], kwargs.get("accept"))
        sock.sendall(encode_answer(answer))


def finish(name: str, schema: Any, result: Any, accept: str | None) -> tuple[str, Any]:
    """A prediction's answer as the client gets it: validated and encoded here,
    in parallel with the other workers, rather than on the server's loop."""
    try:
        return "ok", finish_prediction(name, schema, result, accept)
    except InvalidResponse as exc:
        return "error", {
            "type": "InvalidResponse",
            "message": exc.message,
            "traceback": "",
            "kind": "invalid_response",
        }

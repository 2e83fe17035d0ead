"""The code a spawned worker process runs.

A worker is told which model to serve (``Start``), loads the model entry point
itself, warms it, says ``Ready``, then answers one ``Call`` (or one ``Batch``
of predictions, with ``Replies``) at a time over its socket
(``deepaas.runtime.protocol``). It writes the files of uploads sent inside a
call (``worker_uploads``), and large results (``worker_results``), in its own
scratch directories.
A worker ends when its socket closes or its parent process dies. It imports
the model layer only: the protocol, the value types and the encoding of
results, never the server (aiohttp included).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import marshmallow

from deepaas import exceptions, log, reports
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.arguments import (
    Arguments,
    by_field,
    load_arguments,
    read_declaration,
)
from deepaas.model.v2.encoding import (
    finish_prediction,
    jsonable,
    prediction_body,
    response_schema_of,
)
from deepaas.model.v2.types import (
    EncodedJSON,
    ReturnedFile,
)
from deepaas.runtime import protocol
from deepaas.runtime.protocol import (
    Answer,
    Batch,
    Call,
    Failure,
    FormRead,
    Item,
    Ping,
    Pong,
    RawForm,
    Ready,
    Replies,
    Scratch,
    SharedBody,
    Start,
    Streamed,
    WorkerError,
)
from deepaas.runtime.worker_results import (
    SharedSlots,
    encode_reply,
    is_stream,
    portable,
    spooled,
)
from deepaas.runtime.worker_uploads import InlineFiles, SpareFiles
from deepaas.tracing import TRACE_ID, Tracing, sampled

LOG = logging.getLogger(__name__)
PONG_FRAME = protocol.encode(Pong())
BATCH_IDS_SHOWN = 3  # request ids named in the log lines of a batch
PROGRESS_INTERVAL = 0.1  # fewest seconds between progress reports sent


# What reading a call's arguments may raise that is the client's to fix (or,
# for a file, the worker's disk): the call's own failure.
ARGUMENT_ERRORS = (
    marshmallow.ValidationError,
    exceptions.InvalidArguments,
    exceptions.UnreadableRequest,
    exceptions.InsufficientStorage,
)


def argument_error(exc: Exception, method: str) -> WorkerError:
    """The failure of a call whose arguments could not be read."""
    if isinstance(exc, marshmallow.ValidationError):
        return WorkerError.invalid_arguments(by_field(exc.messages))
    if isinstance(exc, exceptions.InvalidArguments):
        return WorkerError.invalid_arguments(exc.all_errors)
    return WorkerError.from_exception(exc, method)


@dataclasses.dataclass(frozen=True, slots=True)
class ReadCall:
    """A call of a batch whose arguments were read: its place in the batch."""

    index: int
    call: Call
    kwargs: dict[str, Any]
    read: FormRead | None


def batch_request_id(batch: Batch) -> str:
    """The request ids of a batch, for its log lines (the first few)."""
    ids = [call.request_id for call in batch.calls]
    shown = ",".join(ids[:BATCH_IDS_SHOWN])
    if len(ids) > BATCH_IDS_SHOWN:
        shown += f",+{len(ids) - BATCH_IDS_SHOWN}"
    return shown


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
    """Send file descriptors 1 and 2 (so print, logging and C code) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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

    def __init__(
        self,
        name: str,
        model: Any,
        *,
        warm: bool,
        scratch: Scratch | None = None,
        shared: SharedSlots | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.scratch = scratch
        self.shared = shared
        self._declared: dict[str, Arguments] = {}  # argument schemas, when needed
        self.spares = SpareFiles(scratch.memory if scratch is not None else None)
        self.response_schema = response_schema_of(name, model)
        if warm and callable(getattr(model, "warm", None)):
            model.warm()

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        *,
        warm: bool,
        scratch: Scratch | None = None,
        shared: SharedSlots | None = None,
    ) -> LoadedModel:
        """Import the model from its entry point, then warm it."""
        return cls(spec.name, spec.load(), warm=warm, scratch=scratch, shared=shared)

    def run(
        self, call: Call, emit: Callable[[bytes], None] | None = None
    ) -> Answer | Failure:
        """Run ``call`` (its output to its log file, if it names one); a
        streamed prediction's items go to ``emit`` as they are made."""
        if call.log_path is None:
            return self._run(call, emit)
        with output_to(call.log_path):
            return self._run(call, emit)

    def _run(
        self, call: Call, emit: Callable[[bytes], None] | None = None
    ) -> Answer | Failure:
        function = getattr(self.model, call.method, None)
        if function is None:
            return Failure(WorkerError.missing_method(call.method))
        with InlineFiles(self.scratch, self.spares) as files:
            kwargs, read = self._arguments(call, files)
            if isinstance(kwargs, WorkerError):
                return Failure(kwargs, read)
            accept = kwargs.get("accept")
            try:
                result = function(**kwargs)
                if is_stream(result):
                    if call.stream and emit is not None:
                        return Answer(self._stream(result, emit), read)
                    return Answer(self._collected(call, result, files, accept), read)
                return Answer(self._finish(call, result, files, accept), read)
            except Exception as exc:
                return self._failed(call, exc, read)

    def _item(self, item: Any) -> bytes:
        """One streamed item as JSON: checked against the response schema,
        which describes one item, when the model has one."""
        if self.response_schema is not None:
            item = prediction_body(self.name, self.response_schema, item)
        try:
            return json.dumps(item).encode()
        except (TypeError, ValueError):
            return json.dumps(jsonable(item)).encode()

    def _stream(self, items: Iterator[Any], emit: Callable[[bytes], None]) -> Streamed:
        """Send each item as JSON as the model makes it (``emit`` blocks
        while the server does not take more: the model waits)."""
        count = 0
        for item in items:
            emit(self._item(item))
            count += 1
        return Streamed(count)

    def _collected(
        self, call: Call, items: Iterator[Any], files: InlineFiles, accept: str | None
    ) -> Any:
        """Items answered as one list, for a client that did not ask for a
        stream: a JSON array of the items when the response schema
        describes one item, else the list as any prediction."""
        if call.finish_prediction and self.response_schema is not None:
            body = b"[" + b", ".join(self._item(item) for item in items) + b"]"
            return spooled(EncodedJSON(body), self.scratch, self.shared, call.slot)
        return self._finish(call, list(items), files, accept)

    def _arguments(
        self, call: Call, files: InlineFiles
    ) -> tuple[dict[str, Any] | WorkerError, FormRead | None]:
        """The call's keyword arguments (or why there are none): read out of
        the call's form when it has one, files sent inline written to files
        of this worker's, and loaded through the method's schema when the
        server left that to the worker; and what the form told, for the
        server's answer."""
        read: FormRead | None = None
        try:
            kwargs = call.kwargs
            if call.form is not None:
                kwargs, read = self._read_form(call.method, call.form)
            kwargs = files.written(kwargs)
            if call.validate:
                kwargs = load_arguments(self._declaration(call.method).schema, kwargs)
        except ARGUMENT_ERRORS as exc:
            return argument_error(exc, call.method), read
        except Exception as exc:
            # Whatever a client sends, reading it never ends the worker: only
            # the model's own code may.
            LOG.warning(
                "The arguments of a %s() call cannot be read: %r", call.method, exc
            )
            LOG.debug("Reading the arguments failed", exc_info=exc)
            error = {"_request": ["The arguments sent cannot be read."]}
            return WorkerError.invalid_arguments(error), read
        if read is not None:
            read = dataclasses.replace(read, accept=kwargs.get("accept"))
        return kwargs, read

    def _declaration(self, method: str) -> Arguments:
        """The arguments ``method`` declares (read once, when first needed)."""
        arguments = self._declared.get(method)
        if arguments is None:
            getter = getattr(self.model, f"get_{method}_args", None)
            if getter is None and method == "predict":
                getter = getattr(self.model, "get_test_args", None)
            arguments = self._declared[method] = read_declaration(
                self.name,
                f"get_{method}_args",
                getter,
                any_media_type=method == "predict",
            )
        return arguments

    def _read_form(self, method: str, form: RawForm) -> tuple[dict[str, Any], FormRead]:
        """The arguments of a forwarded form, not yet loaded through their
        schema, read as the server reads a form (``deepaas.runtime.forms``: the
        same parser, limits and merge); what it told, but ``accept``."""
        from multidict import MultiDict

        from deepaas.runtime import forms

        arguments = self._declaration(method)
        schema = arguments.schema
        body = form.body
        if isinstance(body, SharedBody):
            if self.shared is None:
                raise ValueError("A form in memory this worker does not share")
            body = self.shared.body(body)
        try:
            values, parts = forms.read_whole_form(
                body, form.boundary, forms.MemoryPart, max_parts=form.max_parts
            )
        except exceptions.DeepaasError as exc:  # BadRequest, TooManyParts
            raise exceptions.UnreadableRequest(exc.message, exc.status) from None
        merged, ignored = forms.merge_arguments(
            arguments,
            forms.values_of(MultiDict(form.query), schema),
            forms.values_of(values, schema),
            files=parts,
            accept_header=form.accept_header,
            strict=form.strict,
        )
        if ignored and form.strict:
            raise forms.refuse_unknown(ignored)
        file_bytes = sum(len(part.data) for named in parts.values() for part in named)
        return merged, FormRead(None, tuple(ignored), file_bytes)

    def run_batch(self, batch: Batch) -> Replies:
        """Run a batch of predictions as one ``predict_batch`` call: each gets
        its own result or its own error; an exception from ``predict_batch``
        itself is the error of every one of them."""
        function = getattr(self.model, "predict_batch", None)
        if function is None:  # not a batching model: one call at a time
            return Replies(tuple(self.run(call) for call in batch.calls))
        replies: dict[int, Answer | Failure] = {}
        calls: list[ReadCall] = []
        with InlineFiles(self.scratch, self.spares) as files:
            for index, call in enumerate(batch.calls):
                kwargs, read = self._arguments(call, files)
                if isinstance(kwargs, WorkerError):
                    replies[index] = Failure(kwargs, read)
                else:
                    calls.append(ReadCall(index, call, kwargs, read))
            if calls:
                replies.update(self._run_batch(function, calls, files))
        return Replies(tuple(replies[index] for index in range(len(batch.calls))))

    def _run_batch(
        self, function: Any, calls: list[ReadCall], files: InlineFiles
    ) -> dict[int, Answer | Failure]:
        """The replies of one predict_batch call, by position in the batch."""
        try:
            results = list(function([one.kwargs for one in calls]))
            if len(results) != len(calls):
                raise ValueError(
                    f"predict_batch() returned {len(results)} results for "
                    f"{len(calls)} predictions"
                )
        except Exception as exc:
            error = self._failed(calls[0].call, exc).error
            return {one.index: Failure(error, one.read) for one in calls}
        replies: dict[int, Answer | Failure] = {}
        for one, result in zip(calls, results, strict=True):
            if isinstance(result, Exception):  # this prediction's own error
                replies[one.index] = self._failed(one.call, result, one.read)
                continue
            try:
                accept = one.kwargs.get("accept")
                value = self._finish(one.call, result, files, accept)
                replies[one.index] = Answer(value, one.read)
            except Exception as exc:
                replies[one.index] = self._failed(one.call, exc, one.read)
        return replies

    def _finish(
        self, call: Call, result: Any, files: InlineFiles, accept: str | None
    ) -> Any:
        """A result as it crosses back: finished for the client (as
        ``accept`` asks) when the call asks for it, large ones through a
        scratch file (one of the call's own uploads, returned, is handed
        over as it is)."""
        result = portable(result)
        if not call.finish_prediction:
            return result
        if isinstance(result, ReturnedFile):
            handed = files.hand_over(result.filename)
            if handed is not None:
                return handed
        return spooled(
            finish_prediction(self.name, self.response_schema, result, accept),
            self.scratch,
            self.shared,
            call.slot,
        )

    def _failed(
        self, call: Call, exc: Exception, read: FormRead | None = None
    ) -> Failure:
        if call.log_path is not None:
            # The call's own log (a training's) ends with what went wrong.
            traceback.print_exception(exc, file=sys.stderr)
        # Whoever receives the failure reports it once; the traceback is for
        # whoever runs with debug logging.
        LOG.debug("%s() raised", call.method, exc_info=exc)
        return Failure(WorkerError.from_exception(exc, call.method), read)


def main() -> None:
    """Entry point of a worker process, started by the server as
    ``python -c <import and call this> <socket fd> <model name>``."""
    # The server decides when workers stop; a Ctrl-C on its terminal reaches
    # the whole process group and must not kill a worker mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    sock = socket.socket(fileno=int(sys.argv[1]))
    reader = protocol.SocketReader(sock)
    tracing: Tracing | None = None
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
            start.log_level,
            start.log_format,
            label=f"{start.spec.name} worker",
            traced=start.tracing is not None,
        )
        if start.tracing is not None:
            tracing = Tracing.start(f"{start.spec.name} worker", start.tracing)
        shared = SharedSlots(start.results) if start.results is not None else None
        serve(reader, start.spec, start.warm, start.scratch, shared, tracing)
    except ConnectionError:
        pass  # the server is gone: nobody is left to answer to
    finally:
        if tracing is not None:
            tracing.shutdown()  # what is still buffered goes now


class ProgressSender:
    """Sends a call's progress reports to the server, a few a second at most
    (the last one always, before the reply); from any of the model's
    threads, never after the call has ended."""

    def __init__(self, sock: socket.socket, interval: float = PROGRESS_INTERVAL):
        self.sock = sock
        self.interval = interval
        self._lock = threading.Lock()
        self._sent_at = -interval
        self._pending: protocol.Progress | None = None
        self._timer: threading.Timer | None = None
        self._ended = False

    def __call__(self, fraction: float | None, message: str | None) -> None:
        with self._lock:
            if self._ended:
                return
            previous = self._pending
            self._pending = protocol.Progress(
                fraction
                if fraction is not None or previous is None
                else previous.fraction,
                message
                if message is not None or previous is None
                else previous.message,
            )
            wait = self._sent_at + self.interval - time.monotonic()
            if wait <= 0:
                self._send()
            elif self._timer is None:  # the last report goes out in time too
                self._timer = threading.Timer(wait, self._send_late)
                self._timer.daemon = True
                self._timer.start()

    def _send(self) -> None:
        if self._pending is not None:
            self.sock.sendall(protocol.encode(self._pending))
            self._pending = None
            self._sent_at = time.monotonic()

    def _send_late(self) -> None:
        with self._lock:
            self._timer = None
            if not self._ended:
                self._send()

    def send_item(self, data: bytes) -> None:
        """Send one streamed item (after the report before it)."""
        with self._lock:
            self._send()
            self.sock.sendall(protocol.encode(Item(data)))

    def end(self) -> None:
        """Send the last report not sent yet; send none after."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._send()
            self._ended = True


def run_reporting(model: LoadedModel, call: Call, sock: socket.socket) -> bytes:
    """Run ``call``, its progress reports and streamed items going to the
    server; the reply."""
    sender = ProgressSender(sock)
    reports.install(sender)
    try:
        reply = model.run(call, sender.send_item)
    finally:
        reports.install(None)
        sender.end()
    return encode_reply(reply)


def serve(
    reader: protocol.SocketReader,
    spec: ModelSpec,
    warm: bool,
    scratch: Scratch | None = None,
    shared: SharedSlots | None = None,
    tracing: Tracing | None = None,
) -> None:
    """Load and warm the model, then answer calls until the socket closes
    (with ``tracing``, each call in a span, a child of its request's)."""
    sock = reader.sock
    try:
        model = LoadedModel.load(spec, warm=warm, scratch=scratch, shared=shared)
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
        if isinstance(call, Batch):
            log.REQUEST_ID.set(batch_request_id(call))
            if tracing is None:
                sock.sendall(encode_reply(model.run_batch(call)))
                continue
            with batch_spans(tracing, model.name, call):
                reply = encode_reply(model.run_batch(call))
            sock.sendall(reply)
            continue
        assert isinstance(call, Call), f"a worker receives calls, not {call!r}"
        # The model's log lines during this call name the request it serves.
        log.REQUEST_ID.set(call.request_id)
        if tracing is None or not sampled(call.trace):
            sock.sendall(run_reporting(model, call, sock))
            continue
        with tracing.span(
            call.method,
            parent=call.trace,
            attributes=call_attributes(model.name, call.method, 1),
        ) as span:
            TRACE_ID.set(tracing.trace_id(span))
            reply = run_reporting(model, call, sock)
        sock.sendall(reply)


def call_attributes(model: str, method: str, batch: int) -> dict[str, Any]:
    """What a worker's span of a call says of it."""
    return {
        "deepaas.model": model,
        "deepaas.method": method,
        "deepaas.batch.size": batch,
        "process.pid": os.getpid(),
        "host.name": socket.gethostname(),
    }


@contextlib.contextmanager
def batch_spans(tracing: Tracing, model: str, batch: Batch) -> Iterator[None]:
    """A span for each call of a batch, each a child of its own request's,
    for as long as the batch runs."""
    attributes = call_attributes(model, "predict_batch", len(batch.calls))
    spans = [
        tracing.start_span("predict_batch", parent=call.trace, attributes=attributes)
        for call in batch.calls
        if sampled(call.trace)
    ]
    try:
        yield
    finally:
        for span in spans:
            span.end()

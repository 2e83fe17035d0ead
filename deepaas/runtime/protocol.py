"""The messages between the server and a worker, and how they travel.

Every executor and the command line speak this protocol, so that what a call
is, what its answer is and what a failure means is written once:

- the server sends a ``Call``;
- a worker answers it with an ``Answer`` (the result) or a ``Failure`` (a
  ``WorkerError`` describing what the model raised);
- for a model that takes batches, the server may send several predictions as
  one ``Batch``, answered by ``Replies``: one ``Answer`` or ``Failure`` per
  prediction, in order;
- once, at start-up, the server sends ``Start`` (which model, how to log) and
  the worker says ``Ready`` or, when it cannot load and warm the model, sends
  a ``Failure``;
- between calls, the server may send ``Ping``, which the worker answers with
  ``Pong`` (a worker that does not is stopped or wedged).

A local worker's socket is one end of a socket pair; a worker on a Ray node
is connected to the server by TCP.

On a socket each message is one frame: an 8-byte big-endian length, then the
message pickled (a call, and the usual answer, as a plain tuple: see
``_pack``). A failure travels as data (a ``WorkerError``), never as a
pickled exception: the model's exception classes may not exist on the server,
and ``WorkerError.to_exception()`` turns it back into the project's own error
type wherever it is received.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import operator
import pickle
import socket
import struct
import sys
import traceback
from typing import Any

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import EncodedJSON, pickled_by_fields

HEADER = struct.Struct("!Q")


class ErrorKind(enum.Enum):
    """What kind of failure a ``WorkerError`` reports."""

    RAISED = "raised"  # the model raised an exception
    NOT_IMPLEMENTED = "not_implemented"  # NotImplementedError or no such method
    HTTP = "http"  # the model raised one of aiohttp's HTTP exceptions
    INVALID_RESPONSE = "invalid_response"  # the result fails the response schema
    INVALID_ARGUMENTS = "invalid_arguments"  # the arguments fail their schema
    NO_SPACE = "no_space"  # an uploaded file found no room in the worker
    UNREADABLE = "unreadable"  # a forwarded form cannot be read (400, 413)


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class WorkerError:
    """An exception raised in a worker, as data that any process can read."""

    kind: ErrorKind
    type: str  # the exception's class name
    message: str
    traceback: str = ""
    status: int | None = None  # HTTP only: the status the model chose
    reason: str | None = None  # HTTP only: its reason phrase
    errors: dict[str, Any] | None = None  # INVALID_ARGUMENTS only: by field

    @classmethod
    def from_exception(cls, exc: BaseException, method: str) -> WorkerError:
        """Describe ``exc``, raised while running ``method``."""
        type_name = type(exc).__name__
        text = "".join(traceback.format_exception(exc)) if exc.__traceback__ else ""
        if isinstance(exc, NotImplementedError):
            message = str(exc) or f"The model does not implement {method}()."
            return cls(ErrorKind.NOT_IMPLEMENTED, type_name, message, text)
        if isinstance(exc, exceptions.InvalidResponse):
            return cls(ErrorKind.INVALID_RESPONSE, type_name, exc.message)
        if isinstance(exc, exceptions.InsufficientStorage):
            return cls(ErrorKind.NO_SPACE, type_name, exc.message)
        if isinstance(exc, exceptions.UnreadableRequest):
            return cls(ErrorKind.UNREADABLE, type_name, exc.message, status=exc.status)
        if _is_http_exception(exc):
            reason = str(getattr(exc, "reason", ""))
            return cls(
                ErrorKind.HTTP,
                type_name,
                str(getattr(exc, "text", None) or reason),
                text,
                status=int(exc.status_code),  # type: ignore[attr-defined]
                reason=reason,
            )
        return cls(ErrorKind.RAISED, type_name, str(exc) or type_name, text)

    @classmethod
    def invalid_arguments(cls, errors: dict[str, Any]) -> WorkerError:
        """Arguments the worker validated and found wrong, by field."""
        return cls(
            ErrorKind.INVALID_ARGUMENTS,
            "ValidationError",
            "Invalid arguments",
            errors=errors,
        )

    @classmethod
    def missing_method(cls, method: str) -> WorkerError:
        """The model has no ``method`` at all."""
        return cls(
            ErrorKind.NOT_IMPLEMENTED,
            "NotImplementedError",
            f"The model does not implement {method}().",
        )

    def describe(self) -> str:
        """The message, prefixed with the exception's type unless it says it."""
        if self.kind is ErrorKind.RAISED and self.type not in self.message:
            return f"{self.type}: {self.message}"
        return self.message

    def to_exception(self) -> exceptions.DeepaasError:
        """The project's exception for this failure of a call."""
        if self.kind is ErrorKind.INVALID_ARGUMENTS:
            return exceptions.InvalidArguments(self.errors or {})
        if self.kind is ErrorKind.NO_SPACE:
            return exceptions.InsufficientStorage(self.message)
        if self.kind is ErrorKind.UNREADABLE:
            return exceptions.UnreadableRequest(self.message, self.status or 400)
        common: dict[str, Any] = {"exc_type": self.type, "traceback": self.traceback}
        if self.kind is ErrorKind.NOT_IMPLEMENTED:
            return exceptions.NotImplementedByModel(self.message, **common)
        if self.kind is ErrorKind.HTTP:
            return exceptions.ModelCallError(
                self.message, status=self.status or 500, reason=self.reason, **common
            )
        return exceptions.ModelCallError(self.describe(), **common)

    def to_load_error(self, model: str) -> exceptions.ModelLoadError:
        """The project's exception for a worker that could not load ``model``."""
        return exceptions.ModelLoadError(
            f"Worker for model {model!r} could not load and warm it: "
            f"{self.type}: {self.message}"
        )


def _is_http_exception(exc: BaseException) -> bool:
    # aiohttp is not imported on this side: recognise its exceptions by class.
    return any(
        cls.__name__ == "HTTPException" and cls.__module__.startswith("aiohttp")
        for cls in type(exc).__mro__
    )


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """Load (and with ``warm``, warm) the model of ``spec``.

    ``sys_path`` is the server's import path, so that the worker finds the
    model where the server did. ``scratch`` names the worker's own
    directories for large results (``SpooledResult``): one in memory for
    results up to ``Scratch.memory_max`` bytes (or None), one on disk; the
    server removes both when the worker ends. Without them every result
    comes back through the socket. ``results`` is memory the server shares
    with the worker for finished results of moderate size (see
    ``ResultMemory``), or None.
    """

    spec: ModelSpec
    warm: bool
    log_level: int
    log_format: str
    sys_path: list[str]
    scratch: Scratch | None = None
    results: ResultMemory | None = None
    # with tracing on, the server's OTEL_* variables (deepaas.tracing)
    tracing: dict[str, str] | None = None


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Scratch:
    """Where a worker writes large results (see ``Start``)."""

    memory: str | None
    disk: str
    memory_max: int = 0


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class ResultMemory:
    """Memory shared by the server and one local worker: an anonymous file
    (``memfd``) the worker inherits as descriptor ``fd``, cut into ``slots``
    slots of ``slot_size`` bytes. A call may name a free slot
    (``Call.slot``); the worker writes a finished result that fits into it
    and answers a ``SharedResult``, and the server sends the bytes to the
    client from there, then frees the slot. Its pages stay allocated from
    one result to the next, so a result costs one copy and no page faults.
    """

    fd: int
    slots: int
    slot_size: int


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """Run ``model.<method>(**kwargs)``.

    With ``log_path`` the call's standard output, standard error and logging
    go to that file; with ``finish_prediction`` a JSON prediction comes back
    validated and encoded (``EncodedJSON``); with ``validate`` the worker
    loads ``kwargs`` through the method's argument schema first (the server
    leaves that to the workers for predictions answered at once); with
    ``form`` the worker
    reads the arguments out of a form the server forwarded unread, and
    loads them (``kwargs`` is then empty); ``request_id`` labels the
    model's log lines.
    """

    method: str
    kwargs: dict[str, Any]
    log_path: str | None = None
    validate: bool = False
    finish_prediction: bool = False
    request_id: str = "-"
    # a prediction that returns an iterator sends its items one by one
    # (``Item``) instead of as one list
    stream: bool = False
    # the slot of the worker's ``ResultMemory`` its result may be written to
    slot: int | None = None
    form: RawForm | None = None
    # with tracing on, the W3C traceparent of the span the call is part of
    trace: str | None = None

    def with_slot(self, slot: int, form: RawForm | None = None) -> Call:
        """This call with a slot for its result (and its form, when given,
        in place of its own: see ``SharedBody``); what
        ``dataclasses.replace`` does, at a fraction of its cost: it runs for
        every prediction."""
        return Call(
            self.method,
            self.kwargs,
            self.log_path,
            self.validate,
            self.finish_prediction,
            self.request_id,
            self.stream,
            slot,
            self.form if form is None else form,
            self.trace,
        )


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class RawForm:
    """A small prediction's multipart body with what else of the request
    its arguments may come from, for the worker to read (``deepaas.runtime.forms``):
    the query string's items, the Accept header, and the limits that apply
    to the form."""

    body: bytes | SharedBody
    boundary: str
    query: tuple[tuple[str, str], ...] = ()
    accept_header: str | None = None
    strict: bool = False  # undeclared arguments are a 422
    max_parts: int = 0

    def with_body(self, body: bytes | SharedBody) -> RawForm:
        """This form with its body elsewhere."""
        return dataclasses.replace(self, body=body)


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class SharedBody:
    """A form's body that the server wrote into the slot its call has of
    the worker's ``ResultMemory`` (its first ``size`` bytes), instead of
    sending it through the socket: a copy into memory already mapped costs
    far less than the socket's. The worker reads the form out of it before
    the model runs, so the slot is free again for the call's result.
    """

    slot: int
    size: int


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class FormRead:
    """What the server needs to know of a form a worker read, to answer:
    the ``accept`` the arguments chose, the names of those the model does
    not declare, and the bytes of the files it held."""

    accept: str | None = None
    ignored: tuple[str, ...] = ()
    file_bytes: int = 0


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class FormResult:
    """The outcome of a call with a ``RawForm``, as ``call()`` returns it:
    its result, or the error it ended with (which the caller raises once it
    has used ``read``)."""

    value: Any
    read: FormRead
    error: exceptions.DeepaasError | None = None


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """Run several predictions as one ``model.predict_batch([kwargs, ...])``
    call; answered by one ``Replies``, in the same order."""

    calls: tuple[Call, ...]


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Replies:
    """The answers to a ``Batch``, one per call, in its order."""

    replies: tuple[Answer | Failure, ...]


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A call succeeded with ``value``; ``read`` tells what the worker found
    in the call's form, when it had one."""

    value: Any
    read: FormRead | None = None


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A call (or loading the model, at start-up) failed; ``read`` as for
    ``Answer``."""

    error: WorkerError
    read: FormRead | None = None


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """The worker loaded and warmed the model and takes calls."""

    pid: int


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    """Are you there? (sent to idle workers)"""


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    """I am (a worker's answer to a ``Ping``)."""


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """How far the running call has got (``deepaas.progress``): a fraction
    from 0 to 1 and a message, either of which may be missing."""

    fraction: float | None
    message: str | None


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One item of a streamed prediction, as JSON, sent as it is made."""

    data: bytes


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class Streamed:
    """A streamed prediction's answer: every item has been sent."""

    items: int


Message = (
    Start
    | Call
    | Batch
    | Answer
    | Failure
    | Replies
    | Ready
    | Ping
    | Pong
    | Progress
    | Item
)


def worker_command(*args: str) -> list[str]:
    """The command line of a worker process: this interpreter, importing the
    worker module and running it with ``args``.

    ``-P``: a working directory that holds a ``deepaas`` of its own (a source
    checkout) must not give the worker another one than the server's; the
    server's import path reaches the worker in ``Start``.
    """
    return [sys.executable, "-P", "-c", WORKER_COMMAND, *args]


WORKER_COMMAND = "from deepaas.runtime.worker import main; main()"


# Every prediction crosses as a Call one way and, most often, an Answer
# holding EncodedJSON the other. Pickle names a class by its module and
# qualified name in every message, and looks it up again on loading, which
# costs more than the rest of a small message: these two go as tuples.
_CALL, _ANSWER, _JSON_ANSWER = 0, 1, 2
_call_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(Call)))


def _pack(message: Message) -> Any:
    kind = type(message)
    if kind is Call:
        return (_CALL, _call_fields(message))
    if kind is Answer:
        assert isinstance(message, Answer)
        if type(message.value) is EncodedJSON:
            return (_JSON_ANSWER, message.value.data, message.read)
        return (_ANSWER, message.value, message.read)
    return message


def _unpack(loaded: Any) -> Message:
    if type(loaded) is not tuple:  # no message is a tuple itself
        message: Message = loaded
        return message
    if loaded[0] == _CALL:
        return Call(*loaded[1])
    if loaded[0] == _JSON_ANSWER:
        return Answer(EncodedJSON(loaded[1]), loaded[2])
    return Answer(loaded[1], loaded[2])


def encode(message: Message) -> bytes:
    """One frame carrying ``message``."""
    payload = pickle.dumps(_pack(message), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes | memoryview) -> Message:
    """The message carried by a frame's payload."""
    return _unpack(pickle.loads(payload))


def decode_frame(frame: bytes | memoryview) -> Message:
    """The message of one whole frame, as ``encode`` made it."""
    return decode(memoryview(frame)[HEADER.size :])


class FrameReader:
    """Messages from a byte stream that arrives in arbitrary pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by ``data``, oldest first."""
        size = HEADER.size
        if not self._buffer and len(data) >= size:
            # The usual case, exactly one whole frame: decode it without copies.
            if size + HEADER.unpack_from(data)[0] == len(data):
                return [decode(memoryview(data)[size:])]
        buffer = self._buffer
        buffer += data
        messages = []
        while len(buffer) >= size:
            end = size + HEADER.unpack_from(buffer)[0]
            if len(buffer) < end:
                break
            messages.append(decode(bytes(buffer[size:end])))
            del buffer[:end]
        return messages


class SocketReader:
    """Messages from a blocking socket (the worker's side), one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._frames = FrameReader()
        self._ready: collections.deque[Message] = collections.deque()

    def receive(self) -> Message | None:
        """Block until a message arrives; None once the socket is closed."""
        while not self._ready:
            data = self.sock.recv(1 << 18)
            if not data:
                return None
            self._ready.extend(self._frames.feed(data))
        return self._ready.popleft()

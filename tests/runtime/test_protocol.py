"""The server-worker protocol: messages, framing and the error mapping."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest
from aiohttp import web

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import EncodedJSON, SpooledResult
from deepaas.runtime import protocol
from deepaas.runtime.protocol import (
    Answer,
    Batch,
    Call,
    ErrorKind,
    Failure,
    FormRead,
    RawForm,
    Ready,
    Replies,
    Scratch,
    Start,
    WorkerError,
)


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a worker catches it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


class TestWorkerError:
    def test_a_plain_exception_is_500_naming_its_type(self):
        error = WorkerError.from_exception(raised(ValueError("bad value")), "predict")
        assert error.kind is ErrorKind.RAISED
        assert error.type == "ValueError"
        assert "Traceback" in error.traceback
        exc = error.to_exception()
        assert type(exc) is exceptions.ModelCallError
        assert exc.status == 500
        assert exc.message == "ValueError: bad value"
        assert exc.exc_type == "ValueError"

    def test_a_message_that_names_its_type_is_not_prefixed_again(self):
        error = WorkerError.from_exception(raised(KeyError("KeyError: x")), "predict")
        assert error.to_exception().message.count("KeyError") == 1

    def test_an_exception_without_a_message_says_its_type(self):
        error = WorkerError.from_exception(raised(RuntimeError()), "train")
        assert error.message == "RuntimeError"

    def test_not_implemented_is_501_with_a_default_message(self):
        error = WorkerError.from_exception(raised(NotImplementedError()), "train")
        assert error.kind is ErrorKind.NOT_IMPLEMENTED
        exc = error.to_exception()
        assert isinstance(exc, exceptions.NotImplementedByModel)
        assert exc.status == 501
        assert exc.message == "The model does not implement train()."

    def test_a_missing_method_is_501(self):
        exc = WorkerError.missing_method("warm_up").to_exception()
        assert isinstance(exc, exceptions.NotImplementedByModel)
        assert "warm_up()" in exc.message

    def test_an_aiohttp_http_exception_keeps_status_and_reason(self):
        http = web.HTTPConflict(reason="Busy", text="try later")
        error = WorkerError.from_exception(raised(http), "predict")
        assert (error.kind, error.status, error.reason) == (ErrorKind.HTTP, 409, "Busy")
        exc = error.to_exception()
        assert (exc.status, exc.reason, exc.message) == (409, "Busy", "try later")

    def test_an_invalid_response_is_500_with_the_schema_errors(self):
        invalid = exceptions.InvalidResponse("m", {"label": ["Not a string."]})
        error = WorkerError.from_exception(raised(invalid), "predict")
        assert error.kind is ErrorKind.INVALID_RESPONSE
        exc = error.to_exception()
        assert exc.status == 500
        assert "does not match its schema" in exc.message
        assert "label: Not a string." in exc.message

    def test_a_load_failure_names_the_model(self):
        error = WorkerError.from_exception(raised(OSError("no weights")), "warm")
        exc = error.to_load_error("plants")
        assert isinstance(exc, exceptions.ModelLoadError)
        assert exc.message == (
            "Worker for model 'plants' could not load and warm it: OSError: no weights"
        )

    def test_invalid_arguments_are_the_same_422_as_the_servers(self):
        errors = {"count": ["Not a valid integer."], "values": {"3": ["Bad."]}}
        error = WorkerError.invalid_arguments(errors)
        assert error.kind is ErrorKind.INVALID_ARGUMENTS
        exc = error.to_exception()
        assert isinstance(exc, exceptions.InvalidArguments)
        assert exc.status == 422
        assert exc.errors == exceptions.InvalidArguments(errors).errors
        assert exc.message == exceptions.InvalidArguments(errors).message

    def test_an_unreadable_form_keeps_the_status_the_server_would_answer(self):
        for exc in (
            exceptions.BadRequest("The request body is not valid multipart."),
            exceptions.TooManyParts(3),
        ):
            unreadable = exceptions.UnreadableRequest(exc.message, exc.status)
            error = WorkerError.from_exception(unreadable, "predict")
            assert error.kind is ErrorKind.UNREADABLE
            back = pickle.loads(pickle.dumps(error)).to_exception()
            assert (back.status, back.message) == (exc.status, exc.message)

    def test_every_undeclared_argument_is_counted_after_the_trip(self):
        errors = {f"extra{n}": ["Unknown field."] for n in range(30)}
        sent = exceptions.InvalidArguments(errors)
        back = WorkerError.invalid_arguments(sent.all_errors).to_exception()
        assert back.message == sent.message
        assert "and 10 more" in back.message

    def test_errors_are_plain_data_that_pickle(self):
        class Unpicklable(Exception):
            def __reduce__(self):
                raise TypeError("no")

        error = WorkerError.from_exception(raised(Unpicklable("x")), "predict")
        assert pickle.loads(pickle.dumps(error)) == error


MESSAGES = [
    Start(ModelSpec("m", "pkg.mod:Model"), True, 20, "json", ["/a", "/b"]),
    Call("predict", {"x": 1}, log_path="/tmp/l", finish_prediction=True),
    Call("predict", {"x": "1"}, validate=True, request_id="r1"),
    Batch((Call("predict", {"x": 1}), Call("predict", {"x": 2}))),
    Answer({"predictions": [1, 2]}),
    Replies((Answer(1), Failure(WorkerError.invalid_arguments({"x": ["Bad."]})))),
    Answer(SpooledResult("/dev/shm/deepaas-worker-x/result-y", 70_000, True)),
    Start(
        ModelSpec("m", "pkg.mod:Model"),
        True,
        20,
        "text",
        [],
        scratch=Scratch("/dev/shm/w", "/tmp/w", 1024),
    ),  # fmt: skip
    Failure(WorkerError.missing_method("train")),
    Ready(1234),
    Call(
        "predict",
        {},
        validate=True,
        form=RawForm(b"--b\r\n...", "b", (("k", "v"),), "image/*", True, 500),
    ),
    Answer(EncodedJSON(b"{}"), FormRead("image/png", ("zzz",), 1024)),
    Answer(EncodedJSON(b"[1]")),
    Answer((0, "a tuple, like the packed messages")),
    Failure(WorkerError.invalid_arguments({"x": ["Bad."]}), FormRead(None, ("y",))),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_frame(message):
    frame = protocol.encode(message)
    size = protocol.HEADER.unpack_from(frame)[0]
    assert size == len(frame) - protocol.HEADER.size
    assert protocol.decode(frame[protocol.HEADER.size :]) == message


def test_frame_reader_joins_pieces_and_splits_frames():
    frames = b"".join(protocol.encode(m) for m in MESSAGES)
    reader = protocol.FrameReader()
    received = []
    for start in range(0, len(frames), 7):  # pieces that cut headers too
        received += reader.feed(frames[start : start + 7])
    assert received == MESSAGES
    assert reader.feed(frames) == MESSAGES  # and all at once


def test_socket_reader_reads_frames_until_the_socket_closes():
    ours, theirs = socket.socketpair()
    big = Answer(b"x" * (3 << 20))  # more than one recv
    data = protocol.encode(MESSAGES[1]) + protocol.encode(big)
    with ours, theirs:
        # the frames outgrow the socket's buffer: send them from a thread
        sender = threading.Thread(target=ours.sendall, args=(data,))
        sender.start()
        reader = protocol.SocketReader(theirs)
        assert reader.receive() == MESSAGES[1]
        assert reader.receive() == big
        sender.join(timeout=10)
        ours.shutdown(socket.SHUT_WR)
        assert reader.receive() is None


def test_a_call_with_a_slot_is_the_same_call_but_its_slot():
    """``Call.with_slot`` names every field: a field added to ``Call`` and
    not to it would be dropped on the way to the worker."""
    import dataclasses

    from deepaas.runtime.protocol import Call, RawForm

    values = {field.name: f"value-{field.name}" for field in dataclasses.fields(Call)}
    values["form"] = RawForm(b"body", "boundary")
    call = Call(**values)
    assert call.with_slot(7) == dataclasses.replace(call, slot=7)

"""POST /v2/models/<name>/predict/: one route per model, from its arguments."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import shutil
import stat
from typing import Any, BinaryIO

import aiohttp_apigami
from aiohttp import web

from deepaas import exceptions, private
from deepaas.api import auth, keys, routing
from deepaas.api.parser import PARSER
from deepaas.api.traces import TRACING
from deepaas.api.uploads import Uploads
from deepaas.api.v2 import jobs, responses, streams
from deepaas.model.v2.encoding import JSON_MEDIA_TYPES, raw_answer_headers
from deepaas.model.v2.types import (
    EncodedJSON,
    MappedResult,
    OpenResult,
    ReturnedFile,
)
from deepaas.runtime.protocol import RawForm
from deepaas.runtime.wrapper import ModelWrapper
from deepaas.tracing import Tracing, span
from deepaas.work import webhooks

COPY_CHUNK = 1 << 20
OCTET_STREAM = "application/octet-stream"
EMPTY_POLL = 0.005  # seconds between looks at a transport's buffer

ERRORS = {
    413: {"description": "Request body too large", "schema": responses.Failure},
    422: {"description": "Invalid arguments", "schema": responses.Failure},
    500: {"description": "The model failed", "schema": responses.Failure},
    501: {
        "description": "The model does not implement predict",
        "schema": responses.Failure,
    },
    503: {
        "description": "No worker became free in time, or too many predictions "
        "wait (--max-queued-predictions); see Retry-After",
        "schema": responses.Failure,
    },
    504: {"description": "The prediction ran out of time", "schema": responses.Failure},
}


def result_media_type(result: Any, accept: str | None) -> str:
    """The media type a finished prediction is answered with."""
    if isinstance(result, EncodedJSON):
        return "application/json"
    asked = accept if accept and accept not in JSON_MEDIA_TYPES else None
    if isinstance(result, OpenResult):
        if result.is_json:
            return "application/json"
        # else the type asked for, or a returned file's type, by its name
        return asked or result.content_type or "application/octet-stream"
    if isinstance(result, MappedResult):
        return "application/json" if result.is_json else asked or OCTET_STREAM
    if isinstance(result, ReturnedFile):
        return (
            asked
            or result.content_type
            or mimetypes.guess_type(result.filename)[0]
            or "application/octet-stream"
        )
    if isinstance(result, bytes | bytearray | memoryview):
        return asked or "application/octet-stream"
    if not isinstance(result, str):
        raise TypeError(f"unfinished prediction: a {type(result).__name__}")
    return str(accept)  # text answering a non-JSON accept (encoding.is_raw_result)


def open_returned_file(result: ReturnedFile) -> BinaryIO:
    """The file a prediction returned, opened; ``ModelCallError`` if it
    cannot be."""
    try:
        return open(result.filename, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise exceptions.ModelCallError(
            f"predict() returned a file that cannot be read: "
            f"{result.filename}: {exc.strerror}"
        ) from None


# A job's result up to this size is written on the event loop.
SMALL_RESULT = 64 * 1024


def small_result(result: Any) -> bool:
    """Whether a result is bytes in memory, few enough to write at once."""
    if isinstance(result, EncodedJSON):
        return len(result.data) <= SMALL_RESULT
    return isinstance(result, bytes | str) and len(result) <= SMALL_RESULT


def keep_result(result: Any, path: str, accept: str | None) -> tuple[str, int]:
    """Write a finished prediction's answer to ``path`` (an asynchronous
    job's result); its media type and size."""
    media_type = result_media_type(result, accept)
    partial = path + ".part"
    fd = private.open_private(partial, os.O_WRONLY | os.O_TRUNC)
    with open(fd, "wb") as out:
        if isinstance(result, EncodedJSON):
            out.write(result.data)
        elif isinstance(result, OpenResult):
            with result.file:
                shutil.copyfileobj(result.file, out, COPY_CHUNK)
        elif isinstance(result, MappedResult):
            try:
                out.write(result.view)
            finally:
                result.release()
        elif isinstance(result, ReturnedFile):
            with open_returned_file(result) as returned:
                shutil.copyfileobj(returned, out, COPY_CHUNK)
        elif isinstance(result, str):
            out.write(result.encode())
        else:
            out.write(result)
        size = out.tell()
    os.replace(partial, path)
    return media_type, size


async def prediction_response(
    request: web.Request, result: Any, accept: str | None
) -> web.StreamResponse:
    """The answer for a finished prediction: JSON the worker encoded, or a
    file, bytes or text sent as they are."""
    content_type = result_media_type(result, accept)
    if isinstance(result, EncodedJSON):
        return web.Response(body=result.data, content_type=content_type)
    if isinstance(result, OpenResult):
        with result.file:
            return await send_file(request, result.file, result.size, content_type)
    if isinstance(result, MappedResult):
        return await send_mapped(request, result, content_type)
    if isinstance(result, ReturnedFile):
        opened = open_returned_file(result)
        status = os.fstat(opened.fileno())
        uploads = request.get(keys.UPLOADS)
        if uploads is not None:  # answering with an upload: it is not reused
            uploads.in_answer(status)
        if not stat.S_ISREG(status.st_mode):
            # A pipe or a device: streamed in chunks; the answer closes it.
            return web.Response(body=opened, headers=raw_answer_headers(content_type))
        with opened:
            return await send_file(request, opened, status.st_size, content_type)
    if isinstance(result, bytes | bytearray | memoryview):
        return web.Response(body=result, headers=raw_answer_headers(content_type))
    return web.Response(text=result, headers=raw_answer_headers(content_type))


async def send_file(
    request: web.Request, file: BinaryIO, size: int, content_type: str
) -> web.StreamResponse:
    """Answer with the first ``size`` bytes of an open regular file, sent by
    the kernel (sendfile) where the connection allows, so that the bytes do
    not pass through the server's memory."""
    response = web.StreamResponse(headers=raw_answer_headers(content_type))
    response.content_length = size
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    if size:
        # Falls back to reads and writes where sendfile is not possible (TLS).
        await asyncio.get_running_loop().sendfile(transport, file, 0, size)
    await response.write_eof()
    return response


async def send_mapped(
    request: web.Request, result: MappedResult, content_type: str
) -> web.StreamResponse:
    """Answer with a result in memory shared with its worker, written to
    the connection from there, then free its slot.

    The connection's transport may keep a reference to what the socket did
    not take at once (asyncio does, from Python 3.12), so the slot is freed
    only once the transport's buffer is empty: while the result goes out,
    flow control pauses writing for any byte buffered (high-water mark 0)
    and resumes when none is (low-water mark 0), and the write waits for
    that. A write cut short drops the connection, and what it buffered,
    before the slot is freed.
    """
    try:
        response = web.StreamResponse(headers=raw_answer_headers(content_type))
        response.content_length = result.size
        await response.prepare(request)  # the headers go out at once
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client went away")
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(0, 0)
        try:
            # aiohttp drains a write that takes it past 64 KiB since the
            # last drain; a shared result is at least that.
            await response.write(result.view)
            while transport.get_write_buffer_size():
                await asyncio.sleep(EMPTY_POLL)  # only if it did not drain
        except BaseException:
            transport.abort()
            raise
        finally:
            transport.set_write_buffer_limits(high, low)
    finally:
        result.release()
    await response.write_eof()
    return response


def make_handler(
    model: ModelWrapper,
    timeout: float | None,
    queue_timeout: float | None,
    max_queued: int = 0,
    webhook_policy: webhooks.WebhookPolicy | None = None,
    tracing: Tracing | None = None,
) -> Any:
    declaration = model.declaration
    arguments = declaration.predict_arguments
    policy = webhook_policy or webhooks.WebhookPolicy(())
    accept_choices = declaration.accept_choices
    # small forms are read by the worker that runs the prediction
    reads_forms = model.executor.reads_forms
    produces = [*accept_choices, "*/*"] if accept_choices else ["application/json"]
    # a predict() that returns an iterator streams its items in these
    produces += [streams.SSE, streams.NDJSON]
    # What ``accept`` is when the worker validates the arguments and the
    # request left it out.
    accept_field = arguments.fields.get("accept")
    default_accept = (
        accept_field.load_default
        if accept_field is not None and isinstance(accept_field.load_default, str)
        else None
    )

    async def predict(request: web.Request) -> web.StreamResponse:
        if max_queued and model.executor.queued() >= max_queued:
            raise exceptions.TooManyQueued(max_queued)  # before any work
        parser = request.app[PARSER]
        if jobs.prefers_async(request):
            key = jobs.idempotency_key(request)  # checked before any work
            if key is None:  # (a retry is answered its job, room or not)
                request.app[keys.JOBS].check_room(auth.owner_of(request))
            hook = webhooks.hook_from(request.headers, policy)
            with span(tracing, "read arguments"):
                kwargs, uploads, validated = await parser.parse_arguments(
                    request, arguments, short_lived=False
                )
            accept = kwargs.get("accept", None if validated else default_accept)
            return await jobs.submit(
                request,
                model,
                kwargs,
                lambda on_progress: model.predict(
                    kwargs,
                    timeout=timeout,
                    validate=not validated,
                    on_progress=on_progress,
                ),
                lambda result, path: keep_result(result, path, accept),
                small_result,
                key=key,
                hook=hook,
                cleanup=uploads.cleanup,
            )
        if "Webhook-URL" in request.headers:
            raise exceptions.InvalidWebhook(
                "A Webhook-URL needs Prefer: respond-async (a prediction answered "
                "at once calls nobody back)."
            )
        stream_type = streams.requested(request)
        if reads_forms and stream_type is None:
            with span(tracing, "read arguments"):
                forwarded = await parser.read_form(request)
            if forwarded is not None:
                return await predict_form(request, *forwarded)
        with span(tracing, "read arguments"):
            kwargs, uploads, validated = await parser.parse_arguments(
                request, arguments
            )
        with uploads:
            declaration.require("predict")
            if stream_type is not None:
                accept = kwargs.get("accept", None if validated else default_accept)
                return await streams.respond(
                    request,
                    stream_type,
                    lambda items: model.predict(
                        kwargs,
                        timeout=timeout,
                        queue_timeout=queue_timeout,
                        validate=not validated,
                        items=items,
                    ),
                    lambda result: prediction_response(request, result, accept),
                )
            result = await model.predict(
                kwargs,
                timeout=timeout,
                queue_timeout=queue_timeout,
                validate=not validated,
            )
            uploads.done_with()  # the worker has answered: the files are free
            accept = kwargs.get("accept", None if validated else default_accept)
            # A returned file is opened here, before the uploads go: the
            # model may answer with one of them.
            with span(tracing, "send answer"):
                return await prediction_response(request, result, accept)

    async def predict_form(
        request: web.Request, form: RawForm, uploads: Uploads
    ) -> web.StreamResponse:
        """A prediction whose worker reads its arguments out of its form."""
        with uploads:
            declaration.require("predict")
            answer = await model.predict_form(
                form, timeout=timeout, queue_timeout=queue_timeout
            )
            read = answer.read
            uploads.received = read.file_bytes
            if read.ignored:
                request[keys.IGNORED_ARGUMENTS] = list(read.ignored)
            if answer.error is not None:
                raise answer.error
            uploads.done_with()
            with span(tracing, "send answer"):
                return await prediction_response(request, answer.value, read.accept)

    handler: Any = predict
    handler = aiohttp_apigami.response_schema(
        declaration.response_schema or responses.Prediction(),
        200,
        description="The prediction",
    )(handler)
    handler = aiohttp_apigami.request_schema(
        arguments.value_schema, location="querystring"
    )(handler)
    if arguments.file_names:
        handler = aiohttp_apigami.request_schema(
            arguments.file_schema, location="form"
        )(handler)
    return aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Make a prediction with model {model.name}",
        description="Arguments may be sent in the query string, a form or a JSON "
        "object body; files as multipart parts. With `Prefer: respond-async` the "
        "prediction runs in the background: the answer is 202 with the job, "
        "whose `Location` tells how it goes and, once done, its result.",
        produces=produces,
        consumes=["multipart/form-data"] if arguments.file_names else None,
        parameters=[*jobs.HEADER_PARAMETERS, *jobs.WEBHOOK_PARAMETERS],
        responses={**ERRORS, **jobs.ACCEPTED},
    )(handler)


def setup_routes(app: web.Application, base: str, model: ModelWrapper) -> None:
    workers = app[keys.SETTINGS].workers
    handler = make_handler(
        model,
        workers.predict_timeout or None,
        workers.queue_timeout or None,
        workers.max_queued_predictions,
        app[keys.WEBHOOKS].policy,
        app[TRACING],
    )
    routing.add_route(
        app,
        "POST",
        f"{base}/v2/models/{model.name}/predict/",
        handler,
        access=auth.PREDICT,
    )

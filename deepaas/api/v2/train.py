"""Trainings of a model: start (POST), list (GET), status (GET), cancel (DELETE)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from typing import Any, BinaryIO

import aiohttp_apigami
from aiohttp import web
from aiohttp.typedefs import Handler
from marshmallow import Schema, fields, validate

from deepaas.api import auth, keys, routing
from deepaas.api.parser import PARSER
from deepaas.api.v2 import jobs, responses
from deepaas.api.v2.records import RecordRoutes, output_of
from deepaas.model.v2.encoding import jsonable
from deepaas.runtime.executor import ProgressCallback
from deepaas.runtime.wrapper import ModelWrapper
from deepaas.state.records import TRAINING, Record
from deepaas.work import webhooks
from deepaas.work.runner import Runner
from deepaas.work.training_logs import OpenLog, cut_notice, open_log

NOT_FOUND = {404: {"description": "Unknown training", "schema": responses.Failure}}
TEXT = "text/plain; charset=utf-8"
TAIL_MAX_BYTES = 4 << 20  # the most of a log that ?tail= reads
STREAM_CHUNK = 256 * 1024


def make_handlers(model: ModelWrapper) -> dict[str, Any]:
    # trainings' views have no links
    routes = RecordRoutes(keys.TRAININGS, model.name, "uuid", False, NOT_FOUND)
    arguments = model.declaration.train_arguments

    async def start_training(request: web.Request) -> web.Response:
        parser = request.app[PARSER]
        owner = auth.owner_of(request)
        request.app[keys.TRAININGS].check_room(owner)  # before any work
        hook = webhooks.hook_from(request.headers, request.app[keys.WEBHOOKS].policy)
        kwargs, uploads, _ = await parser.parse_arguments(
            request, arguments, short_lived=False
        )
        try:
            model.declaration.require("train")
        except BaseException:
            uploads.cleanup()
            raise
        runner = request.app[keys.TRAININGS]
        log_path = runner.kind.log_path

        async def train(record: Record, on_progress: ProgressCallback) -> Any:
            output = await model.train(
                kwargs, log_path=log_path(record.id), on_progress=on_progress
            )
            return jsonable(output)

        # The runner removes the uploads once the training has ended.
        training, _ = await runner.start(
            model.name, kwargs, train, cleanup=uploads.cleanup, started_by=owner
        )
        view = runner.kind.view(training, "")
        if hook is not None:
            sender = request.app[keys.WEBHOOKS]
            sender.watch(TRAINING, training.id, model.name, hook, view)
            await sender.flushed()  # kept before the client hears of it
        return web.json_response(view)

    start: Any = aiohttp_apigami.request_schema(
        arguments.value_schema, location="querystring"
    )(start_training)
    if arguments.file_names:
        start = aiohttp_apigami.request_schema(arguments.file_schema, location="form")(
            start
        )
    start = aiohttp_apigami.response_schema(responses.Training(), 200)(start)
    start = aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Start a training of model {model.name}",
        consumes=["multipart/form-data"] if arguments.file_names else None,
        parameters=jobs.WEBHOOK_PARAMETERS,
        responses={
            422: {
                "description": "Invalid arguments, or a webhook that cannot be used",
                "schema": responses.Failure,
            },
            429: {
                "description": "As many trainings as allowed already run "
                "(--max-trainings, --max-trainings-per-user); see Retry-After",
                "schema": responses.Failure,
            },
            501: {
                "description": "The model does not implement train",
                "schema": responses.Failure,
            },
        },
    )(start)

    @aiohttp_apigami.docs(
        tags=["models"], summary=f"List the trainings of {model.name}"
    )
    @aiohttp_apigami.response_schema(responses.Training(many=True), 200)
    async def list_trainings(request: web.Request) -> web.Response:
        runner = request.app[keys.TRAININGS]
        trainings = await runner.list(model.name, auth.owner_filter(request))
        return web.json_response([runner.kind.view(t, "") for t in trainings])

    def documented(summary: str, handler: Handler) -> Handler:
        return aiohttp_apigami.docs(
            tags=["models"], summary=summary, responses=NOT_FOUND
        )(aiohttp_apigami.response_schema(responses.Training(), 200)(handler))

    get_training = documented(
        f"Get the status of a training of {model.name}", routes.answer(Runner.get)
    )
    cancel_training = documented(
        f"Cancel a training of {model.name} and forget it",
        routes.answer(Runner.cancel),
    )

    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Read the output of a training of {model.name}",
        description="Standard output, standard error and logging of the training, "
        "as written so far (it grows while the training runs).",
        produces=["text/plain"],
        responses={
            200: {"description": "The log text"},
            **NOT_FOUND,
            422: {"description": "Invalid tail", "schema": responses.Failure},
        },
    )
    @aiohttp_apigami.querystring_schema(LogQuery())
    async def get_training_log(request: web.Request) -> web.StreamResponse:
        runner = request.app[keys.TRAININGS]
        training = await runner.get(
            model.name, request.match_info["uuid"], auth.owner_filter(request)
        )
        query = await request.app[PARSER].parse(
            LogQuery(), request, location="querystring"
        )
        path = runner.kind.log_path(training.id)
        tail = query.get("tail")
        if runner.database.shared:
            return await answer_shared_log(request, runner, training.id, tail)
        loop = asyncio.get_running_loop()
        if tail is not None:
            text = await loop.run_in_executor(None, read_log, path, tail)
            return web.Response(text=text, content_type="text/plain")
        try:
            log = await loop.run_in_executor(None, open_log, path)
        except FileNotFoundError:
            return web.Response(text="", content_type="text/plain")
        # Streamed from the file: a log of any size costs no memory.
        if not log.notice:
            log.close()
            return web.FileResponse(path, headers={"Content-Type": TEXT})
        try:
            return await stream_log(request, log)
        finally:
            log.close()

    return {
        "events": routes.events(
            summary=f"Follow a training of {model.name} as it goes",
            description="Server-sent events: status, progress, log (new lines) "
            "and, last, result (the training). Reconnect with Last-Event-ID to get "
            "only what was missed.",
        ),
        "start": start,
        "list": list_trainings,
        "get": get_training,
        "cancel": cancel_training,
        "log": get_training_log,
    }


class LogQuery(Schema):
    tail = fields.Int(
        validate=validate.Range(min=1),
        metadata={"description": "Only the last N lines"},
    )


async def stream_log(request: web.Request, log: OpenLog) -> web.StreamResponse:
    """Answer a log whose head was cut: the notice, then what is kept."""
    response = web.StreamResponse(headers={"Content-Type": TEXT})
    await response.prepare(request)
    await response.write(log.notice)
    loop = asyncio.get_running_loop()
    while chunk := await loop.run_in_executor(None, log.file.read, STREAM_CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


async def answer_shared_log(
    request: web.Request, runner: Runner[Any], training_id: str, tail: int | None
) -> web.StreamResponse:
    """Answer a log kept in a database shared with other servers: what is
    kept of it (after the notice of a cut, when its head was cut), or its
    last ``tail`` lines."""
    limit = runner.kind.log_max_bytes or None
    if tail is not None:
        chunks = await runner.database.outputs.last(
            TRAINING, training_id, TAIL_MAX_BYTES
        )
        data = b"".join(chunk for _, chunk in chunks)
        lines, whole = last_lines(io.BytesIO(data), tail)
        if whole and len(data) < TAIL_MAX_BYTES and chunks and chunks[0][0]:
            lines = cut_notice(chunks[0][0], limit) + lines
        text = lines.decode("utf-8", errors="replace")
        return web.Response(text=text, content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": TEXT})
    await response.prepare(request)
    first = True
    async for at, chunk in output_of(runner, training_id):
        if first and at:
            await response.write(cut_notice(at, limit))
        first = False
        await response.write(chunk)
    await response.write_eof()
    return response


def read_log(path: str, tail: int) -> str:
    """The last ``tail`` lines of a log (after the notice of a cut, when they
    reach it); empty if there is no log."""
    try:
        log = open_log(path)
    except FileNotFoundError:
        return ""
    with contextlib.closing(log):
        data, whole = last_lines(log.file, tail, floor=log.start)
    if whole:
        data = log.notice + data
    return data.decode("utf-8", errors="replace")


def last_lines(
    f: BinaryIO,
    count: int,
    block: int = 64 * 1024,
    limit: int = TAIL_MAX_BYTES,
    floor: int = 0,
) -> tuple[bytes, bool]:
    r"""The last ``count`` lines of a file, read backwards a block at a time
    down to offset ``floor`` at most; and whether they are all it holds
    from ``floor``.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r`` (progress bars redraw
    with ``\r`` alone). At most ``limit`` bytes are read: a file without line
    ends gives its last ``limit`` bytes.
    """
    position = f.seek(0, os.SEEK_END)
    blocks: list[bytes] = []
    ends = 0
    taken = 0
    # one more line end than lines wanted, unless the file ends without one
    while position > floor and ends <= count and taken < limit:
        step = min(block, position - floor, limit - taken)
        position -= step
        f.seek(position)
        chunk = f.read(step)
        blocks.append(chunk)
        taken += step
        ends += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
    lines = b"".join(reversed(blocks)).splitlines(keepends=True)
    return b"".join(lines[-count:]), position <= floor and len(lines) <= count


def setup_routes(app: web.Application, base: str, model: ModelWrapper) -> None:
    handlers = make_handlers(model)
    path = f"{base}/v2/models/{model.name}/train/"
    routing.add_route(app, "POST", path, handlers["start"], access=auth.TRAIN)
    routing.add_route(app, "GET", path, handlers["list"], access=auth.TRAIN)
    routing.add_route(app, "GET", path + "{uuid}", handlers["get"], access=auth.TRAIN)
    routing.add_route(
        app, "DELETE", path + "{uuid}", handlers["cancel"], access=auth.TRAIN
    )
    routing.add_route(
        app, "GET", path + "{uuid}/log", handlers["log"], access=auth.TRAIN
    )
    routing.add_route(
        app, "GET", path + "{uuid}/events", handlers["events"], access=auth.TRAIN
    )

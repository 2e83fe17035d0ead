"""Asynchronous predictions over HTTP.

``POST .../predict/`` with ``Prefer: respond-async`` (RFC 7240) answers 202
with the job and its ``Location``; ``GET .../predict/`` lists the jobs,
``GET .../predict/<id>`` tells how one goes (with its result once done, in
the form a synchronous call would have had it when that is JSON),
``GET .../predict/<id>/result`` serves the result as such, and
``DELETE .../predict/<id>`` cancels a running job or removes an ended one.
Without the header, predictions are answered as they always were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_apigami
from aiohttp import web

from deepaas import exceptions
from deepaas.api import auth, keys, routing
from deepaas.api.v2 import responses
from deepaas.api.v2.records import RecordRoutes, output_of
from deepaas.model.v2.encoding import raw_answer_headers
from deepaas.runtime.executor import ProgressCallback
from deepaas.runtime.wrapper import ModelWrapper
from deepaas.state.records import DONE, JOB, Record
from deepaas.work.jobs import Keeper, Small
from deepaas.work.runner import Runner
from deepaas.work.webhooks import Hook

INLINE_MAX = 4 << 20  # the largest JSON result shown inside the job object
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
NOT_FOUND = {404: {"description": "Unknown job", "schema": responses.Failure}}


# The documentation of the predict operation's additions (Swagger 2.0 form;
# deepaas.api.spec rewrites them for OpenAPI 3)
HEADER_PARAMETERS = [
    {
        "in": "header",
        "name": "Prefer",
        "type": "string",
        "enum": ["respond-async"],
        "required": False,
        "description": "respond-async: answer 202 at once and run the prediction "
        "in the background (RFC 7240)",
    },
    {
        "in": "header",
        "name": "Idempotency-Key",
        "type": "string",
        "required": False,
        "description": "With Prefer: respond-async, a key of the client's choice "
        "(1 to 255 printable characters): sending it again returns the job it "
        "started instead of predicting twice",
    },
]
WEBHOOK_PARAMETERS = [
    {
        "in": "header",
        "name": "Webhook-URL",
        "type": "string",
        "required": False,
        "description": "Call this URL back (a signed JSON POST, Standard Webhooks) "
        "on the events of Webhook-Events; its host must be one --webhook-allow "
        "names (else 422). On a prediction, with Prefer: respond-async only",
    },
    {
        "in": "header",
        "name": "Webhook-Events",
        "type": "string",
        "required": False,
        "description": "Which events to call back on, comma-separated among "
        "start, progress, completed (default: completed)",
    },
]
ACCEPTED = {
    202: {
        "description": "Prefer: respond-async: the prediction runs in the "
        "background; Location is the job",
        "schema": responses.Job,
        "headers": {
            "Location": {"type": "string", "description": "The job's URL"},
            "Preference-Applied": {"type": "string"},
        },
    }
}


def prefers_async(request: web.Request) -> bool:
    """Whether the request asks to be answered before the work is done."""
    for header in request.headers.getall("Prefer", ()):
        for preference in header.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0]
            if token.strip().lower() == "respond-async":
                return True
    return False


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``; ``BadRequest`` if it is not one."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip().strip('"')
    if not KEY_PATTERN.fullmatch(key):
        raise exceptions.BadRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters, "
            "without spaces."
        )
    return key


async def submit(
    request: web.Request,
    model: ModelWrapper,
    kwargs: dict[str, Any],
    run: Callable[[ProgressCallback], Awaitable[Any]],
    keep: Keeper,
    small: Small,
    *,
    key: str | None,
    hook: Hook | None = None,
    cleanup: Callable[[], None],
) -> web.Response:
    """Start a job of ``model`` and answer 202 with it (or, for an
    ``Idempotency-Key`` seen before, with the job it started)."""
    try:
        model.declaration.require("predict")
    except BaseException:
        cleanup()
        raise
    runner = request.app[keys.JOBS]
    job, created = await runner.start(
        model.name,
        kwargs,
        runner.kind.work(run, keep, small),
        started_by=auth.owner_of(request),
        key=key,
        cleanup=cleanup,
    )
    base = request.app[keys.BASE_PATH]
    view = runner.kind.view(job, base)
    if created and hook is not None:
        sender = request.app[keys.WEBHOOKS]
        sender.watch(JOB, job.id, model.name, hook, view)
        await sender.flushed()  # kept before the client hears of the job
    response = web.json_response(
        view,
        status=202,
        headers={
            "Location": runner.kind.url(job, base),
            "Preference-Applied": "respond-async",
        },
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


LIST_LIMIT = 100  # jobs a page of the list holds unless ?limit= says
LIST_LIMIT_MAX = 1000
LIST_PARAMETERS = [
    {
        "in": "query",
        "name": "limit",
        "type": "integer",
        "minimum": 1,
        "maximum": LIST_LIMIT_MAX,
        "default": LIST_LIMIT,
        "required": False,
        "description": "How many jobs to list.",
    },
    {
        "in": "query",
        "name": "after",
        "type": "string",
        "required": False,
        "description": "List the jobs after this one (the last of the page before).",
    },
]


def page_of(request: web.Request) -> tuple[int, str | None]:
    """The ``?limit=`` and ``?after=`` of a list request."""
    text = request.query.get("limit")
    limit = LIST_LIMIT
    if text is not None:
        usable = text.isascii() and text.isdigit() and len(text) <= 6
        if not usable or not 1 <= int(text) <= LIST_LIMIT_MAX:
            raise exceptions.InvalidArguments(
                {"limit": [f"A whole number from 1 to {LIST_LIMIT_MAX}."]}
            )
        limit = int(text)
    return limit, request.query.get("after") or None


def shows_inline(job: Record) -> bool:
    """Whether a job's result is JSON small enough to show inside the job
    object (read on the event loop: a running job's record changes there)."""
    result = job.result if isinstance(job.result, dict) else {}
    size = result.get("size")
    return (
        job.status == DONE
        and result.get("type") == "application/json"
        and isinstance(size, int)
        and size <= INLINE_MAX
    )


def read_inline(path: str) -> bytes | None:
    """The JSON result of a job, to show inside its object (on a thread)."""
    try:
        with open(path, "rb") as f:
            return f.read(INLINE_MAX + 1)
    except FileNotFoundError:
        return None


async def read_shared_inline(runner: Runner[Any], job_id: str) -> bytes | None:
    """The JSON result of a job kept in a shared database, to show inside
    its object."""
    data = b""
    async with contextlib.aclosing(output_of(runner, job_id)) as chunks:
        async for _, chunk in chunks:
            data += chunk
            if len(data) > INLINE_MAX:
                break
    return data or None


def make_handlers(model: ModelWrapper) -> dict[str, Any]:
    routes = RecordRoutes(keys.JOBS, model.name, "id", True, NOT_FOUND)

    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"List the asynchronous predictions of {model.name}",
        description=f"Oldest first, at most {LIST_LIMIT_MAX} at a time; a "
        "Link header (rel=next) names the next page when there is one.",
        parameters=LIST_PARAMETERS,
        responses=NOT_FOUND,
    )
    @aiohttp_apigami.response_schema(responses.Job(many=True), 200)
    async def list_jobs(request: web.Request) -> web.Response:
        runner = request.app[keys.JOBS]
        base = request.app[keys.BASE_PATH]
        limit, after = page_of(request)
        # One more than asked tells whether there is a next page.
        jobs = await runner.list(
            model.name, auth.owner_filter(request), after=after, limit=limit + 1
        )
        response = web.json_response(
            [runner.kind.view(job, base) for job in jobs[:limit]]
        )
        if len(jobs) > limit:
            following = request.rel_url.update_query(
                {"after": jobs[limit - 1].id, "limit": str(limit)}
            )
            response.headers["Link"] = f'<{following}>; rel="next"'
        return response

    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Get an asynchronous prediction of {model.name}",
        description="Its status, and its result once done: inline when the "
        "prediction answers JSON (up to 4 MiB), else at links.result.",
        responses=NOT_FOUND,
    )
    @aiohttp_apigami.response_schema(responses.Job(), 200)
    async def get_job(request: web.Request) -> web.Response:
        runner = request.app[keys.JOBS]
        job = await runner.get(
            model.name, request.match_info["id"], auth.owner_filter(request)
        )
        # The job as it is now, and whether its result goes inside: decided
        # here, before a thread reads the file, as the job may end meanwhile.
        body = json.dumps(runner.kind.view(job, request.app[keys.BASE_PATH])).encode()
        inline = None
        if shows_inline(job) and runner.database.shared:
            inline = await read_shared_inline(runner, job.id)
        elif shows_inline(job):
            inline = await asyncio.get_running_loop().run_in_executor(
                None, read_inline, runner.kind.result_path(job.id)
            )
        if inline is not None:
            body = body[:-1] + b', "result": ' + inline + b"}"
        return web.Response(body=body, content_type="application/json")

    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Get the result of an asynchronous prediction of {model.name}",
        description="The answer a synchronous call would have had: JSON, or the "
        "file, bytes or text the model returned.",
        produces=["application/json", "*/*"],
        responses={
            200: {"description": "The result"},
            **NOT_FOUND,
            409: {
                "description": "The job is running, or ended without a result",
                "schema": responses.Failure,
            },
        },
    )
    async def get_result(request: web.Request) -> web.StreamResponse:
        runner = request.app[keys.JOBS]
        job = await runner.get(
            model.name, request.match_info["id"], auth.owner_filter(request)
        )
        if job.status != DONE:
            raise exceptions.JobHasNoResult(job.status, job.message)
        result = job.result if isinstance(job.result, dict) else {}
        media_type = result.get("type") or "application/octet-stream"
        if runner.database.shared:
            # From the database, a few chunks at a time.
            response = web.StreamResponse(headers=raw_answer_headers(media_type))
            if isinstance(result.get("size"), int):
                response.content_length = result["size"]
            await response.prepare(request)
            async for _, chunk in output_of(runner, job.id):
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.FileResponse(
            runner.kind.result_path(job.id), headers=raw_answer_headers(media_type)
        )

    cancel_job = aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Cancel an asynchronous prediction of {model.name}, or remove an "
        "ended one",
        description="A running prediction is stopped (its worker is replaced) and "
        "kept as cancelled; an ended one is removed with its result.",
        responses=NOT_FOUND,
    )(
        aiohttp_apigami.response_schema(responses.Job(), 200)(
            routes.answer(Runner.cancel)
        )
    )

    return {
        "events": routes.events(
            summary=f"Follow an asynchronous prediction of {model.name} as it goes",
            description="Server-sent events: status, progress and, last, result "
            "(the job). Reconnect with Last-Event-ID to get only what was missed.",
        ),
        "list": list_jobs,
        "get": get_job,
        "result": get_result,
        "cancel": cancel_job,
    }


def setup_routes(app: web.Application, base: str, model: ModelWrapper) -> None:
    handlers = make_handlers(model)
    path = f"{base}/v2/models/{model.name}/predict/"
    predict = auth.PREDICT
    routing.add_route(app, "GET", path, handlers["list"], access=predict)
    routing.add_route(app, "GET", path + "{id}", handlers["get"], access=predict)
    routing.add_route(
        app, "GET", path + "{id}/result", handlers["result"], access=predict
    )
    routing.add_route(app, "DELETE", path + "{id}", handlers["cancel"], access=predict)
    routing.add_route(
        app, "GET", path + "{id}/events", handlers["events"], access=predict
    )

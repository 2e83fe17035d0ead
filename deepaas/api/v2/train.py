"""Trainings of a model: start (POST), list (GET), status (GET), cancel (DELETE)."""

from __future__ import annotations

from typing import Any

import aiohttp_apigami
from aiohttp import web

from deepaas.api import keys, routing
from deepaas.api.parser import UPLOADS
from deepaas.api.uploads import Uploads
from deepaas.api.v2 import responses
from deepaas.model.v2.wrapper import ModelWrapper

NOT_FOUND = {404: {"description": "Unknown training", "schema": responses.Error}}


def make_handlers(model: ModelWrapper) -> dict[str, Any]:
    arguments = model.train_arguments

    async def start_training(request: web.Request) -> web.Response:
        uploads = request[UPLOADS] = Uploads()
        try:
            kwargs = await request.app[keys.PARSER].parse_arguments(request, arguments)
        except BaseException:
            uploads.cleanup()
            raise
        training = request.app[keys.TRAININGS].start(
            model.name,
            kwargs,
            lambda: model.train(**kwargs),
            cleanup=uploads.cleanup,
        )
        return web.json_response(training.to_dict())

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
        responses={
            422: {"description": "Invalid arguments", "schema": responses.Error}
        },
    )(start)

    @aiohttp_apigami.docs(
        tags=["models"], summary=f"List the trainings of {model.name}"
    )
    @aiohttp_apigami.response_schema(responses.Training(many=True), 200)
    async def list_trainings(request: web.Request) -> web.Response:
        trainings = request.app[keys.TRAININGS].store.list(model.name)
        return web.json_response([t.to_dict() for t in trainings])

    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Get the status of a training of {model.name}",
        responses=NOT_FOUND,
    )
    @aiohttp_apigami.response_schema(responses.Training(), 200)
    async def get_training(request: web.Request) -> web.Response:
        training = request.app[keys.TRAININGS].get(
            model.name, request.match_info["uuid"]
        )
        return web.json_response(training.to_dict())

    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Cancel a training of {model.name} and forget it",
        responses=NOT_FOUND,
    )
    @aiohttp_apigami.response_schema(responses.Training(), 200)
    async def cancel_training(request: web.Request) -> web.Response:
        training = await request.app[keys.TRAININGS].cancel(
            model.name, request.match_info["uuid"]
        )
        return web.json_response(training.to_dict())

    return {
        "start": start,
        "list": list_trainings,
        "get": get_training,
        "cancel": cancel_training,
    }


def setup_routes(app: web.Application, base: str, model: ModelWrapper) -> None:
    handlers = make_handlers(model)
    path = f"{base}/v2/models/{model.name}/train/"
    routing.add_route(app, "POST", path, handlers["start"])
    routing.add_route(app, "GET", path, handlers["list"])
    routing.add_route(app, "GET", path + "{uuid}", handlers["get"])
    routing.add_route(app, "DELETE", path + "{uuid}", handlers["cancel"])

"""The Open Inference Protocol (REST) beside the DEEPaaS API, on the same port.

Health (``/v2/health/live``, ``/v2/health/ready``), each model's readiness
and metadata (also under ``/versions/<version>``, the version its metadata
declares, or ``1``) and inference (``/v2/models/<name>/infer``): the inputs
are the model's predict arguments (``tensors``), which go through the same
validation, queue, time limits, batching, access and metrics as the DEEPaaS
predict endpoint. The routes' errors are ``{"error": ...}``, the protocol's
shape, argument errors a 400 (``errors.protocol_error``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from deepaas import exceptions
from deepaas.api import auth, keys, probes, routing
from deepaas.api.inference import outputs, tensors
from deepaas.api.parser import PARSER
from deepaas.api.traces import TRACING
from deepaas.api.uploads import Uploads
from deepaas.api.v2 import models
from deepaas.api.v2.predict import open_returned_file, result_media_type
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.model.v2.types import (
    EncodedJSON,
    InlineUpload,
    MappedResult,
    OpenResult,
    ReturnedFile,
    UploadedFile,
)
from deepaas.runtime.wrapper import ModelWrapper
from deepaas.tracing import Tracing, span

SERVER_NAME = "deepaas"
EXTENSIONS = ["binary_tensor_data", "parameters"]
PLATFORM = "deepaas"
OCTET_STREAM = "application/octet-stream"


def model_version(declaration: ModelDeclaration) -> str:
    """The version of a model the protocol names: its metadata's, or 1."""
    version = declaration.metadata.get("version")
    return str(version) if version not in (None, "") else "1"


def model_keys(declaration: ModelDeclaration) -> dict[str, Any]:
    """The protocol's keys of a model's metadata."""
    return {
        "name": declaration.name,
        "versions": [model_version(declaration)],
        "platform": PLATFORM,
        "inputs": tensors.describe_inputs(declaration.predict_arguments),
        "outputs": outputs.describe_outputs(declaration.response_schema),
    }


def server_keys() -> dict[str, Any]:
    """The protocol's keys of the server's metadata (``GET /v2``)."""
    return {"name": SERVER_NAME, "extensions": list(EXTENSIONS)}


def check_version(request: web.Request, model: ModelWrapper, version: str) -> None:
    """A version in the path must be the one served."""
    asked = request.match_info.get("version")
    if asked is not None and asked != version:
        raise exceptions.ModelNotFound(
            f"Model {model.name!r} has no version {asked!r}; version {version!r} "
            "is served."
        )


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready, _ = probes.readiness(request.app)
    return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)


def model_is_ready(app: web.Application, model: ModelWrapper) -> bool:
    startup = app[keys.STARTUP]
    return (
        startup.failed is None and startup.started and model.executor.health().alive > 0
    )


def _ready_handler(model: ModelWrapper, version: str) -> Any:
    async def model_ready(request: web.Request) -> web.Response:
        check_version(request, model, version)
        is_ready = model_is_ready(request.app, model)
        return web.json_response(
            {"name": model.name, "ready": is_ready}, status=200 if is_ready else 503
        )

    return model_ready


def _metadata_handler(model: ModelWrapper, version: str, body: dict[str, Any]) -> Any:
    async def metadata(request: web.Request) -> web.Response:
        check_version(request, model, version)
        return web.json_response(body)

    return metadata


async def _stage_files(
    uploads: Uploads, files: dict[str, list[tensors.FileInput]], list_names: Any
) -> dict[str, Any]:
    """The files of the inputs as the worker takes them: inside the call
    when small, else written to temporary files (``uploads`` removes them)."""
    staged: dict[str, Any] = {}
    inline = uploads.travels_inline() if files else False
    for name, inputs in files.items():
        values: list[Any] = []
        for given in inputs:
            if inline:
                values.append(
                    InlineUpload(name, given.data, given.content_type, given.filename)
                )
                continue
            fd, path = uploads.create(given.filename)
            await asyncio.to_thread(_write, fd, given.data)
            values.append(UploadedFile(name, path, given.content_type, given.filename))
        staged[name] = values if name in list_names else values[0]
    return staged


def _write(fd: int, data: bytes) -> None:
    with open(fd, "wb") as out:
        out.write(data)


def _read_all(result: OpenResult | ReturnedFile) -> bytes:
    if isinstance(result, OpenResult):
        with result.file:
            return result.file.read()
    with open_returned_file(result) as opened:
        return opened.read()


async def output_tensors(
    result: Any, declaration: ModelDeclaration, accept: str | None
) -> list[tensors.Tensor]:
    """A finished prediction (as the worker hands it) as output tensors."""
    if isinstance(result, EncodedJSON):
        data, is_json = result.data, True
    elif isinstance(result, MappedResult):
        try:
            data, is_json = bytes(result.view), result.is_json
        finally:
            result.release()
    elif isinstance(result, OpenResult | ReturnedFile):
        is_json = isinstance(result, OpenResult) and result.is_json
        media_type = result_media_type(result, accept)
        data = await asyncio.to_thread(_read_all, result)
        if not is_json:
            return [outputs.raw_tensor(data, media_type)]
    elif isinstance(result, str):
        return [outputs.raw_tensor(result.encode(), str(accept))]
    else:
        return [outputs.raw_tensor(bytes(result), result_media_type(result, accept))]
    if not is_json:
        return [outputs.raw_tensor(data, result_media_type(result, accept))]
    answer = json.loads(data)
    return outputs.prediction_tensors(answer, declaration.response_schema)


def _infer_handler(
    model: ModelWrapper,
    version: str,
    timeout: float | None,
    queue_timeout: float | None,
    max_queued: int,
    tracing: Tracing | None = None,
) -> Any:
    declaration = model.declaration
    arguments = declaration.predict_arguments
    known_outputs = [
        t["name"] for t in outputs.describe_outputs(declaration.response_schema)
    ]
    accept_field = arguments.fields.get("accept")
    default_accept = (
        accept_field.load_default
        if accept_field is not None and isinstance(accept_field.load_default, str)
        else None
    )

    async def infer(request: web.Request) -> web.Response:
        check_version(request, model, version)
        if max_queued and model.executor.queued() >= max_queued:
            raise exceptions.TooManyQueued(max_queued)
        declaration.require("predict")
        parser = request.app[PARSER]
        with span(tracing, "read arguments"):
            body = await parser.read_body(request)
            inference = tensors.read_request(
                body, request.headers.get(tensors.HEADER_LENGTH)
            )
            values, files = tensors.to_arguments(inference, arguments, model.name)
        uploads = request[keys.UPLOADS] = Uploads(parser.spool, len(body))
        with uploads:
            kwargs = {
                **values,
                **await _stage_files(uploads, files, arguments.list_names),
            }
            result = await model.predict(
                kwargs, timeout=timeout, queue_timeout=queue_timeout, validate=True
            )
            uploads.done_with()
            accept = kwargs.get("accept", default_accept)
            produced = await output_tensors(
                result, declaration, accept if isinstance(accept, str) else None
            )
        with span(tracing, "send answer"):
            return answer_with(produced, inference, request[keys.REQUEST_ID])

    def answer_with(
        produced: list[tensors.Tensor],
        inference: tensors.InferenceRequest,
        request_id: str,
    ) -> web.Response:
        selected = outputs.select_outputs(produced, inference, known_outputs)
        answer, header_length = outputs.encode_response(
            model.name,
            version,
            inference.id if inference.id is not None else request_id,
            selected,
        )
        if header_length is None:
            return web.Response(body=answer, content_type="application/json")
        return web.Response(
            body=answer,
            content_type=OCTET_STREAM,
            headers={tensors.HEADER_LENGTH: str(header_length)},
        )

    return infer


def setup_routes(app: web.Application, base: str) -> None:
    """Add the protocol's routes: health, and each model's readiness,
    metadata under its version and (when predictions are served) inference."""
    settings = app[keys.SETTINGS]
    workers = settings.workers
    protocol = app[keys.PROTOCOL_ROUTES]

    def add(method: str, path: str, handler: Any, access: str) -> None:
        protocol.update(routing.add_route(app, method, path, handler, access=access))

    add("GET", f"{base}/v2/health/live", live, auth.PUBLIC)
    add("GET", f"{base}/v2/health/ready", ready, auth.PUBLIC)
    for model in app[keys.MODELS].values():
        version = model_version(model.declaration)
        prefix = f"{base}/v2/models/{model.name}"
        ready_handler = _ready_handler(model, version)
        add("GET", f"{prefix}/ready", ready_handler, auth.READ)
        add("GET", f"{prefix}/versions/{{version}}/ready", ready_handler, auth.READ)
        metadata = _metadata_handler(model, version, model_metadata(base, model))
        add("GET", f"{prefix}/versions/{{version}}", metadata, auth.READ)
        if not settings.server.predict_endpoint:
            continue
        infer = _infer_handler(
            model,
            version,
            workers.predict_timeout or None,
            workers.queue_timeout or None,
            workers.max_queued_predictions,
            app[TRACING],
        )
        add("POST", f"{prefix}/infer", infer, auth.PREDICT)
        add("POST", f"{prefix}/versions/{{version}}/infer", infer, auth.PREDICT)


def model_metadata(base: str, model: ModelWrapper) -> dict[str, Any]:
    """A model's metadata as ``GET /v2/models/<name>`` answers it: the
    DEEPaaS keys as they are, and the protocol's where the model's own
    metadata does not have them."""
    return models.describe(base, model, model_keys(model.declaration))

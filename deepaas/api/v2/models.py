"""GET /v2/models/ and /v2/models/<name>/: what each model says of itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp_apigami
from aiohttp import web

from deepaas.api import auth, keys, routing
from deepaas.api.v2 import responses
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.runtime.wrapper import ModelWrapper

ModelKeys = Callable[[ModelDeclaration], Mapping[str, Any]]


def describe(
    base: str, model: ModelWrapper, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model object of the API: id, name and links, updated with
    metadata, then with the keys of ``extra`` the metadata leaves out."""
    body: dict[str, Any] = {
        "id": model.name,
        "name": model.name,
        "links": [{"rel": "self", "href": f"{base}/v2/models/{model.name}"}],
    }
    body.update(model.declaration.metadata)
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return body


@aiohttp_apigami.docs(tags=["models"], summary="List the models served")
@aiohttp_apigami.response_schema(responses.ModelList(), 200)
async def list_models(request: web.Request) -> web.Response:
    base = request.app[keys.BASE_PATH]
    return web.json_response(
        {"models": [describe(base, m) for m in request.app[keys.MODELS].values()]}
    )


def _get_model_handler(model: ModelWrapper, extra: Mapping[str, Any]) -> Any:
    @aiohttp_apigami.docs(
        tags=["models"],
        summary=f"Describe model {model.name}",
        responses={404: {"description": "Unknown model"}},
    )
    @aiohttp_apigami.response_schema(responses.ModelMeta(), 200)
    async def get_model(request: web.Request) -> web.Response:
        return web.json_response(describe(request.app[keys.BASE_PATH], model, extra))

    return get_model


def setup_routes(
    app: web.Application, base: str, model_keys: ModelKeys | None = None
) -> None:
    """The models' routes; ``model_keys`` gives what one model's object
    has beside its metadata (the Open Inference Protocol's keys)."""
    routing.add_route(app, "GET", f"{base}/v2/models/", list_models, access=auth.READ)
    for model in app[keys.MODELS].values():
        routing.add_route(
            app,
            "GET",
            f"{base}/v2/models/{model.name}/",
            _get_model_handler(
                model, model_keys(model.declaration) if model_keys else {}
            ),
            access=auth.READ,
        )

"""Version 2 of the HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp_apigami
from aiohttp import web
from aiohttp.typedefs import Handler

from deepaas.api import auth, keys, routing
from deepaas.api.v2 import debug, jobs, models, predict, responses, train

V2_VERSION = {"version": "stable", "id": "v2"}


def v2_version(base: str) -> dict[str, object]:
    """The description of API version 2."""
    return {
        **V2_VERSION,
        "links": [{"rel": "self", "type": "application/json", "href": f"{base}/v2/"}],
    }


def version_handler(base: str, extra: Mapping[str, Any]) -> Handler:
    """The handler of ``GET /v2/``: the version's description, with the
    keys of ``extra`` (the Open Inference Protocol's server metadata)."""
    answer = {**v2_version(base), **extra}

    @aiohttp_apigami.docs(tags=["versions"], summary="Describe API version 2")
    @aiohttp_apigami.response_schema(responses.Version(), 200)
    async def get_version(request: web.Request) -> web.Response:
        return web.json_response(answer)

    return get_version


def setup_routes(
    app: web.Application,
    base: str,
    *,
    server_keys: Mapping[str, Any] | None = None,
    model_keys: models.ModelKeys | None = None,
) -> None:
    """Add every V2 route the configuration enables; ``server_keys`` and
    ``model_keys`` add to the version's and each model's description."""
    server = app[keys.SETTINGS].server
    routing.add_route(
        app, "GET", f"{base}/v2/", version_handler(base, server_keys or {}),
        access=auth.READ,
    )  # fmt: skip
    models.setup_routes(app, base, model_keys)
    for wrapper in app[keys.MODELS].values():
        if server.predict_endpoint:
            predict.setup_routes(app, base, wrapper)
            jobs.setup_routes(app, base, wrapper)
        if server.train_endpoint:
            train.setup_routes(app, base, wrapper)
    if server.debug_endpoint:
        debug.setup_routes(app, base)

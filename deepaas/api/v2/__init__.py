"""Version 2 of the HTTP API."""

from __future__ import annotations

import aiohttp_apigami
from aiohttp import web

from deepaas.api import auth, keys, routing
from deepaas.api.v2 import debug, jobs, models, predict, responses, train

V2_VERSION = {"version": "stable", "id": "v2"}


def v2_version(base: str) -> dict[str, object]:
    """The description of API version 2."""
    return {
        **V2_VERSION,
        "links": [{"rel": "self", "type": "application/json", "href": f"{base}/v2/"}],
    }


@aiohttp_apigami.docs(tags=["versions"], summary="Describe API version 2")
@aiohttp_apigami.response_schema(responses.Version(), 200)
async def get_version(request: web.Request) -> web.Response:
    return web.json_response(v2_version(request.app[keys.BASE_PATH]))


def setup_routes(app: web.Application, base: str) -> None:
    """Add every V2 route the configuration enables."""
    server = app[keys.SETTINGS].server
    routing.add_route(app, "GET", f"{base}/v2/", get_version, access=auth.READ)
    models.setup_routes(app, base)
    for wrapper in app[keys.MODELS].values():
        if server.predict_endpoint:
            predict.setup_routes(app, base, wrapper)
            jobs.setup_routes(app, base, wrapper)
        if server.train_endpoint:
            train.setup_routes(app, base, wrapper)
    if server.debug_endpoint:
        debug.setup_routes(app, base)

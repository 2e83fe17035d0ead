"""GET / : the API versions served and where the docs are."""

from __future__ import annotations

import aiohttp_apigami
from aiohttp import web

from deepaas.api import auth, keys, routing
from deepaas.api.v2 import responses, v2_version


@aiohttp_apigami.docs(tags=["versions"], summary="List the API versions")
@aiohttp_apigami.response_schema(responses.Versions(), 200)
async def get_versions(request: web.Request) -> web.Response:
    base = request.app[keys.BASE_PATH]
    links = [
        {
            "rel": "describedby",
            "type": "application/json",
            "href": f"{base}/swagger.json",
        }
    ]
    if request.app[keys.CONFIG].doc_endpoint:
        links.insert(0, {"rel": "help", "type": "text/html", "href": f"{base}/api"})
    return web.json_response({"versions": [v2_version(base)], "links": links})


def setup_routes(app: web.Application, base: str) -> None:
    routing.add_route(app, "GET", f"{base}/", get_versions, access=auth.READ)

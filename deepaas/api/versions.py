"""GET / : the API versions served and where the docs are."""

from __future__ import annotations

import aiohttp_apigami
from aiohttp import web
from aiohttp.typedefs import Handler

from deepaas.api import auth, routing
from deepaas.api.v2 import responses, v2_version


def versions_handler(base: str, docs: bool) -> Handler:
    """The handler of ``GET /``: its answer depends only on the base path and
    whether the UI is served, so it is made once."""
    links = [
        {
            "rel": "describedby",
            "type": "application/json",
            "href": f"{base}/swagger.json",
        }
    ]
    if docs:
        links.insert(0, {"rel": "help", "type": "text/html", "href": f"{base}/api"})
    answer = {"versions": [v2_version(base)], "links": links}

    @aiohttp_apigami.docs(tags=["versions"], summary="List the API versions")
    @aiohttp_apigami.response_schema(responses.Versions(), 200)
    async def get_versions(request: web.Request) -> web.Response:
        return web.json_response(answer)

    return get_versions


def setup_routes(app: web.Application, base: str, *, docs: bool) -> None:
    routing.add_route(
        app, "GET", f"{base}/", versions_handler(base, docs), access=auth.READ
    )

"""GET /v2/debug/: captured output and logs (the route exists only when the
debug endpoint is enabled)."""

from __future__ import annotations

import aiohttp_apigami
from aiohttp import web

from deepaas.api import auth, keys, routing


@aiohttp_apigami.docs(
    tags=["debug"],
    summary="Captured standard output, standard error and deepaas logs",
    produces=["text/plain"],
    responses={200: {"description": "The captured text"}},
)
async def get_debug(request: web.Request) -> web.Response:
    capture = request.app[keys.DEBUG_CAPTURE]
    return web.Response(text=capture.text(), content_type="text/plain")


def setup_routes(app: web.Application, base: str) -> None:
    routing.add_route(app, "GET", f"{base}/v2/debug/", get_debug, access=auth.ADMIN)

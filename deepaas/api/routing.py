"""Route registration shared by the resource modules.

Every path answers with and without its trailing slash, and HEAD wherever GET;
only the canonical form (the one given) carries the handler's spec, so the spec
lists each path once. Each route is recorded with the access it needs
(``deepaas.api.auth``).

A route's handler can be replaced while the server runs: a reload builds the
handlers of a model's routes again from its new declarations, and adding a
route that is there already replaces its handler (``Replaceable``). Requests
under way finish with the handler they started with.
"""

from __future__ import annotations

from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute
from aiohttp_apigami.constants import API_SPEC_ATTR, SCHEMAS_ATTR

from deepaas.api import auth, keys
from deepaas.api.parser import PARSER

# What a handler's decorators describe it with, for the spec.
SPEC_ATTRIBUTES = (API_SPEC_ATTR, SCHEMAS_ATTR)


class Replaceable:
    """The handler of a route, which can be replaced (``handler`` is what
    the route serves: it runs the current one)."""

    def __init__(self, handler: Handler) -> None:
        self.current = handler

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.current(request)

        self.handler: Any = handle
        self.routes: list[AbstractRoute] = []
        self.describe(handler)

    def replace(self, handler: Handler) -> None:
        self.current = handler
        self.describe(handler)

    def describe(self, handler: Handler) -> None:
        """Give the route's handler ``handler``'s description."""
        for name in SPEC_ATTRIBUTES:
            if hasattr(handler, name):
                setattr(self.handler, name, getattr(handler, name))
            elif hasattr(self.handler, name):
                delattr(self.handler, name)


# The handlers of the routes added here, by method and path.
HANDLERS: web.AppKey[dict[tuple[str, str], Replaceable]] = web.AppKey(
    "deepaas_handlers"
)


def _undocumented(handler: Handler) -> Handler:
    async def alias(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    return alias


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: a request without the credentials it needs
    gets its 401 or 403, and a body declared over its size limit its 413, at
    once, before the client sends the body; any other, "100 Continue"."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    authenticator = request.app[auth.AUTHENTICATOR]
    if authenticator is not None:
        refused = await authenticator.refusal(request)
        if refused is not None:
            return refused
    # Files stream to disk (bounded by --client-max-size); other bodies are
    # held in memory (bounded by aiohttp's limit, the smaller one).
    if request.content_type.startswith("multipart/"):
        limit = request.app[PARSER].client_max_size
    else:
        limit = request.client_max_size
    declared = request.content_length or 0
    if limit and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer itself is still to come
    return None


def add_route(
    app: web.Application, method: str, path: str, handler: Handler, *, access: str
) -> list[AbstractRoute]:
    """Serve ``handler`` at ``path`` and at ``path`` with the slash toggled,
    to requests with ``access`` (one of ``deepaas.api.auth``'s); the routes
    added. If they are there already, ``handler`` replaces their handler."""
    replaceables = app.setdefault(HANDLERS, {})
    replaceable = replaceables.get((method, path))
    if replaceable is not None:
        replaceable.replace(handler)
        return replaceable.routes
    replaceable = replaceables[method, path] = Replaceable(handler)
    handler = replaceable.handler
    routes = _add(app, method, path, handler, access)
    if path.endswith("/") and len(path) > 1:
        routes += _add(app, method, path.rstrip("/"), _undocumented(handler), access)
    elif not path.endswith("/"):
        routes += _add(app, method, path + "/", _undocumented(handler), access)
    replaceable.routes = routes
    return routes


def _add(
    app: web.Application, method: str, path: str, handler: Handler, access: str
) -> list[AbstractRoute]:
    table = app[keys.ROUTE_ACCESS]
    route = app.router.add_route(method, path, handler, expect_handler=expect_continue)
    table[route] = access
    routes = [route]
    if method == "GET":  # HEAD too, out of the spec
        routes.append(app.router.add_route("HEAD", path, _undocumented(handler)))
        table[routes[-1]] = access
    return routes

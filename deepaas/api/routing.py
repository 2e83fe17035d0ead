"""Route registration shared by the resource modules.

Every path answers with and without its trailing slash, and HEAD wherever GET;
only the canonical form (the one given) carries the handler's spec, so the spec
lists each path once.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler


def _undocumented(handler: Handler) -> Handler:
    async def alias(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    return alias


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve ``handler`` at ``path`` and at ``path`` with the slash toggled."""
    _add(app, method, path, handler)
    if path.endswith("/") and len(path) > 1:
        _add(app, method, path.rstrip("/"), _undocumented(handler))
    elif not path.endswith("/"):
        _add(app, method, path + "/", _undocumented(handler))


def _add(app: web.Application, method: str, path: str, handler: Handler) -> None:
    app.router.add_route(method, path, handler)
    if method == "GET":  # HEAD too, out of the spec
        app.router.add_route("HEAD", path, _undocumented(handler))

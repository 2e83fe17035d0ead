"""A span for every request, when the server traces (``deepaas.tracing``).

The span continues the trace of the client's ``traceparent`` header, if it
sends one, and follows the HTTP semantic conventions (``http.request.method``,
``http.route``, ``http.response.status_code``...). The steps of a request
(reading its arguments, its wait for a worker, the call in the worker,
sending the answer) are its children. This middleware comes before the
request pipeline, and only on a server that traces.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from deepaas.api import keys
from deepaas.tracing import TRACE_ID, Tracing

TRACING: web.AppKey[Tracing | None] = web.AppKey("deepaas_tracing")


def traced_requests(tracing: Tracing) -> Middleware:
    """The middleware that puts each request in a span."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "network.protocol.version": f"{request.version.major}."
            f"{request.version.minor}",
        }
        if route is not None:
            attributes["http.route"] = route
        host = request.host.rsplit(":", 1)
        attributes["server.address"] = host[0]
        if len(host) == 2 and host[1].isdigit():
            attributes["server.port"] = int(host[1])
        if request.remote:
            attributes["client.address"] = request.remote
        agent = request.headers.get("User-Agent")
        if agent:
            attributes["user_agent.original"] = agent
        model = request.match_info.get("model")
        if (
            model is None
            and route is not None
            and route.startswith(f"{request.app[keys.BASE_PATH]}/v2/models/")
        ):
            model = route.split("/v2/models/", 1)[1].split("/", 1)[0] or None
        if model:
            attributes["deepaas.model"] = model
        name = f"{request.method} {route}" if route else request.method
        with tracing.span(
            name,
            context=tracing.extract(request.headers),
            kind="server",
            attributes=attributes,
        ) as span:
            trace_id = request[keys.TRACE_ID] = tracing.trace_id(span)
            token = TRACE_ID.set(trace_id)
            try:
                try:
                    response = await handler(request)
                except web.HTTPException as exc:  # a redirect
                    span.set_attribute("http.response.status_code", exc.status)
                    raise
                span.set_attribute("http.response.status_code", response.status)
                request_id = request.get(keys.REQUEST_ID)
                if request_id is not None:
                    span.set_attribute("deepaas.request_id", request_id)
                if response.status >= 500:
                    span.set_attribute("error.type", str(response.status))
                    tracing.failed(span, response.reason or str(response.status))
                return response
            finally:
                TRACE_ID.reset(token)

    return traced

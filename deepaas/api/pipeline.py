"""What every request goes through before and after its handler, as one step.

A request gets its id, is counted in flight and on its connection's guard,
has its failures turned into JSON (``errors``), is refused when it names a
host this server does not answer to (``hosts``) or comes without the access
its route needs (``auth``, or ``crosssite`` when authentication is off), and
then, when it matches no route, has its path cleaned (aiohttp's
``normalize_path_middleware``); its metrics are observed at the end.

These steps were once a middleware each. They are one here because each
middleware costs every request a coroutine and a wrapper whatever it does,
and which of them a server needs is known when its app is built: the ones
its configuration does not ask for are left out then, not skipped per
request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import SystemRoute

from deepaas import log
from deepaas.api import keys
from deepaas.api.access import CLIENT_CLOSED, InFlight, RequestIds
from deepaas.api.connections import Connections
from deepaas.api.errors import (
    MAX_REQUEST_TARGET,
    error_answer,
    error_response,
    protocol_error,
)
from deepaas.api.metrics import METRICS

LOG = logging.getLogger(__name__)

# A check that refuses a request (its answer), or lets it through (None).
Check = Callable[[web.Request], web.StreamResponse | None]
AsyncCheck = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def request_pipeline(
    ids: RequestIds,
    inflight: InFlight,
    connections: Connections,
    *,
    host_check: Check | None = None,
    access_check: Check | None = None,
    auth_check: AsyncCheck | None = None,
) -> Middleware:
    """The one middleware of an app: ``host_check`` (names answered),
    ``access_check`` (cross-site requests, without authentication) and
    ``auth_check`` (credentials) are None when the server does not need
    them."""
    normalize = web.normalize_path_middleware(append_slash=False, merge_slashes=True)

    @web.middleware
    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request[keys.REQUEST_ID] = ids.of(request)
        # There, so that every answer's look-up finds it (a missed key costs
        # a KeyError raised and caught)
        request[keys.IGNORED_ARGUMENTS] = ()
        token = log.REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        inflight.enter()
        guard = connections.of(request.transport)
        if guard is not None:
            guard.request_started()
        try:
            response: web.StreamResponse
            try:
                if len(request.raw_path) > MAX_REQUEST_TARGET:
                    response = target_too_long()
                elif (
                    host_check is not None
                    and (refusal := host_check(request)) is not None
                ):
                    response = refusal
                elif (
                    access_check is not None
                    and (refusal := access_check(request)) is not None
                ):
                    response = refusal
                elif (
                    auth_check is not None
                    and (refusal := await auth_check(request)) is not None
                ):
                    response = refusal
                elif isinstance(request.match_info.route, SystemRoute):
                    # No route: //v2//models/ is a 308 to /v2/models/, as
                    # upstream answers; anything else its 404 or 405.
                    response = await normalize(request, handler)
                else:
                    response = await handler(request)
            except Exception as exc:
                response = error_answer(request, exc)  # a redirect: raised
            status = response.status
            if status >= 400 and isinstance(response, web.Response):
                protocol = request.app.get(keys.PROTOCOL_ROUTES, ())
                if request.match_info.route in protocol:
                    response = protocol_error(response)
                    status = response.status
            if guard is not None and guard.eof:
                response.force_close()  # the client shut down writing
            return response
        except web.HTTPException as exc:  # a redirect, passed on by the errors
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            # Once, quietly: a client that goes away is no server error.
            LOG.info(
                "%s %s %d: the client closed the connection before the answer",
                request.method,
                request.path,
                CLIENT_CLOSED,
            )
            raise
        finally:
            if guard is not None:
                guard.request_ended()
            inflight.leave()
            log.REQUEST_ID.reset(token)
            metrics = request.app.get(METRICS)
            if metrics is not None:
                uploads = request.get(keys.UPLOADS)
                metrics.observe_request(
                    request,
                    status,
                    time.perf_counter() - started,
                    uploads.received if uploads is not None else 0,
                )

    return pipeline


def target_too_long() -> web.Response:
    return error_response(
        414,
        f"The request target (path and query string) is longer than "
        f"{MAX_REQUEST_TARGET} bytes; send long arguments in the body.",
    )

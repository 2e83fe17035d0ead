"""Every failure of a request as a JSON ``{"message": ...}`` answer."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from deepaas import exceptions
from deepaas.api import keys

LOG = logging.getLogger(__name__)

# The longest request target (path and query string) served, aiohttp's own
# limit; the HTTP parser is given room beyond it (PARSER_LINE_LIMIT) so that a
# longer one reaches the request pipeline and gets a JSON 414, not a text 400.
MAX_REQUEST_TARGET = 8190
PARSER_LINE_LIMIT = 1 << 20


def error_response(
    status: int, message: str, *, reason: str | None = None, **extra: object
) -> web.Response:
    """A JSON error answer."""
    return web.json_response(
        {"message": message, **extra}, status=status, reason=reason
    )


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        raise exc
    if exc.content_type == "application/json" and exc.text:
        try:
            body = json.loads(exc.text)
        except ValueError:
            body = None
        if isinstance(body, dict) and "message" in body:
            return web.json_response(body, status=exc.status, reason=exc.reason)
    text = exc.text or exc.reason
    # aiohttp's default texts look like "404: Not Found"; keep only the words.
    prefix = f"{exc.status}: "
    message = text[len(prefix) :] if text.startswith(prefix) else text
    response = error_response(exc.status, message, reason=exc.reason)
    for header in ("Allow", "Retry-After"):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON answer for what a request's handling raised. A redirect is
    raised again (aiohttp sends it); a client that went away while its body
    was read is a cancellation (no error of ours, and nobody to answer)."""
    if isinstance(exc, ConnectionResetError):
        raise asyncio.CancelledError() from None
    if isinstance(exc, web.HTTPException):
        return _from_http_exception(exc)
    if isinstance(exc, exceptions.InvalidArguments):
        # Upstream's clients read each field's messages at the top level.
        body = {**exc.errors, "message": exc.message, "errors": exc.errors}
        return web.json_response(body, status=exc.status)
    if isinstance(exc, exceptions.ModelCallError):
        if exc.status >= 500:
            LOG.error("%s %s: %s", request.method, request.path, exc.message)
            if exc.traceback:
                LOG.debug("Traceback in the worker:\n%s", exc.traceback)
        return error_response(exc.status, exc.message, reason=exc.reason)
    if isinstance(exc, exceptions.DeepaasError):
        if exc.status >= 500:
            LOG.error("%s %s: %s", request.method, request.path, exc.message)
        response = error_response(exc.status, exc.message, **(exc.details or {}))
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response
    LOG.error("%s %s failed", request.method, request.path, exc_info=exc)
    return internal_error(request)


def protocol_error(response: web.Response) -> web.Response:
    """An error answer in the Open Inference Protocol's shape: ``{"error":
    ...}`` (with ``errors`` for arguments, which are a 400 there)."""
    try:
        body = json.loads(response.body) if isinstance(response.body, bytes) else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or "message" not in body:
        return response
    answer = {"error": body["message"]}
    if "errors" in body:
        answer["errors"] = body["errors"]
    status = 400 if response.status == 422 else response.status
    # application/json as it is: JSON is UTF-8, and clients of the protocol
    # (KServe's) look for that media type with no charset
    converted = web.Response(
        body=json.dumps(answer).encode(), status=status, content_type="application/json"
    )
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response.headers:
            converted.headers[header] = response.headers[header]
    return converted


def internal_error(request: web.Request) -> web.Response:
    """The 500 of a failure of ours: what went wrong is in the log, under the
    request's id; the client gets the id, never the exception (which may
    tell a stranger about the server's insides)."""
    request_id = request.get(keys.REQUEST_ID)
    where = f" (request id {request_id})" if request_id else ""
    return error_response(
        500, f"Internal server error{where}: the server's log has the details."
    )

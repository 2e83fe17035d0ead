"""Request ids, the access log and request metrics.

Every request gets an id: the client's ``X-Request-ID`` when it sends a usable
one, else a fresh one. The id goes back in the response's ``X-Request-ID``, on
every log line written while the request is served (the model's own lines in
the worker included) and on the request's access-log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from time import time as wall_clock
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from deepaas import log
from deepaas.api import keys

LOG = logging.getLogger(__name__)
HEADER = "X-Request-ID"
# Printable ASCII without spaces: safe in a log line and in a header.
USABLE_ID = re.compile(r"[!-~]{1,128}")
# nginx's code for a request whose client closed the connection first.
CLIENT_CLOSED = 499


class RequestIds:
    """Fresh request ids: a random prefix and a counter, 32 hex digits in all
    (unique without a system call per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def of(self, request: web.BaseRequest) -> str:
        """The client's ``X-Request-ID`` when it is usable, else a fresh id."""
        given = request.headers.get(HEADER)
        if given is not None and USABLE_ID.fullmatch(given):
            return given
        return f"{self._prefix}{next(self._counter):016x}"


class InFlight:
    """The requests being served, so that a shutdown can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight (at most ``timeout`` seconds);
        whether none is."""
        if self.count:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        return self.count == 0


INFLIGHT: web.AppKey[InFlight] = web.AppKey("deepaas_inflight")


def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """Return the request id to the client, and tell
    browsers to take every answer as the type it says it is (a file a model
    returned as text/plain is never run as a page or a script)."""
    headers = response.headers
    request_id = request.get(keys.REQUEST_ID)
    if request_id is not None:
        headers[HEADER] = request_id
    headers["X-Content-Type-Options"] = "nosniff"


FIELDS = ("method", "path", "status", "duration_ms", "remote")


def direct_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one handler access lines reach when deepaas configured it and
    nothing else sees or shapes them: deepaas' text lines, to standard error
    or a log file. None when anything else may (a filter, another handler,
    JSON, a logging configuration of the user's): the lines are then records
    as any other."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        found += current.handlers
        current = current.parent if current.propagate else None
    if len(found) != 1:
        return None
    handler = found[0]
    shown = handler.formatter
    if (
        type(handler) not in (logging.StreamHandler, logging.FileHandler)
        or handler.level > logging.INFO
        or not all(isinstance(f, log.RequestIdFilter) for f in handler.filters)
        or type(shown) is not log.TextFormatter
        or shown._fmt != log.TEXT_FORMAT
    ):
        return None
    assert isinstance(handler, logging.StreamHandler)
    return handler if handler.stream is not None else None


def wants_fields(logger: logging.Logger) -> bool:
    """Whether a handler that the access lines reach shows more of them than
    their text: a JSON formatter, or one of a logging configuration of the
    user's (which may name the fields); deepaas' own text lines do not."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            shown = handler.formatter
            if shown is None:
                continue
            if not isinstance(shown, log.TextFormatter) or any(
                f"%({name})" in (shown._fmt or "") for name in FIELDS
            ):
                return True
        current = current.parent if current.propagate else None
    return False


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, duration, request id.

    In JSON logs the same facts are also separate fields.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        # (aiohttp makes one per connection)
        super().__init__(logger, log_format)
        self.with_fields = wants_fields(logger)
        self.direct = direct_handler(logger)
        self.pid = os.getpid()

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        request_id = request.get(keys.REQUEST_ID) or "-"
        path = request.path_qs
        remote = request.remote
        extra: dict[str, object] = {"request_id": request_id}
        trace_id = request.get(keys.TRACE_ID)  # with tracing on
        if trace_id is not None:
            extra["trace_id"] = trace_id
            request_id = f"{request_id} {trace_id}"  # as log.formatter shows it
        if self.with_fields:
            duration = round(time * 1000, 3)
            extra.update(
                method=request.method,
                path=path,
                status=response.status,
                duration_ms=duration,
                remote=remote,
            )
        else:
            duration = time * 1000
            if self.direct is not None:
                self._write_line(
                    self.direct,
                    f"[{request_id}]: {request.method} {path} {response.status} "
                    f"{duration:.1f}ms {remote or '-'}",
                )
                return
        # The record made here rather than by ``Logger.info``, which would
        # walk the stack for where it was called from (a line of aiohttp's,
        # which no access line shows) on every request.
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        logger.handle(
            logger.makeRecord(
                logger.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %s %.1fms %s",
                (request.method, path, response.status, duration, remote or "-"),
                None,
                None,
                extra,
            )
        )

    def _write_line(self, handler: logging.StreamHandler[Any], rest: str) -> None:
        """Write an access line as ``handler`` would format its record
        (``log.TEXT_FORMAT``), without the record: the line is the same, the
        record's making, filtering and formatting are a good share of what a
        small prediction costs the server."""
        formatter = handler.formatter
        assert isinstance(formatter, log.TextFormatter)
        created = wall_clock()
        # (a record's msecs, as LogRecord computes them)
        when = formatter.time_text(
            created, int((created - int(created)) * 1000), formatter.datefmt
        )
        line = f"{when} {self.pid} INFO {self.logger.name} {rest}{handler.terminator}"
        with handler.lock or contextlib.nullcontext():
            try:
                handler.stream.write(line)
                handler.flush()
            except Exception:  # noqa: BLE001 - as Handler.emit does
                handler.handleError(
                    logging.makeLogRecord({"msg": line, "name": self.logger.name})
                )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

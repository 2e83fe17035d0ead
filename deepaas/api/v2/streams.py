"""Streamed predictions: the items of a ``predict()`` that returns a
generator or an iterator, sent to the client as the worker makes them.

A client asks with ``Accept: text/event-stream`` (an ``item`` event per
item, then ``end``) or ``Accept: application/x-ndjson`` (a JSON line per
item). Without either, the items come as one list, as any prediction. The
worker runs ahead of a slow client by a few dozen items at most
(``ItemStream``), and a client that goes away stops the generator (its
worker is stopped and replaced).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from deepaas import exceptions
from deepaas.runtime.executor import ItemStream
from deepaas.runtime.protocol import Streamed

LOG = logging.getLogger(__name__)

SSE, NDJSON = "text/event-stream", "application/x-ndjson"


def requested(request: web.Request) -> str | None:
    """The stream media type the client accepts, if any."""
    for part in request.headers.get("Accept", "").split(","):
        media_type = part.split(";", 1)[0].strip().lower()
        if media_type in (SSE, NDJSON):
            return media_type
    return None


class Writer:
    """Writes items, the end or an error in one stream format."""

    def __init__(self, request: web.Request, media_type: str) -> None:
        self.request = request
        self.media_type = media_type
        self.response: web.StreamResponse | None = None
        self.count = 0

    async def open(self) -> web.StreamResponse:
        if self.response is None:
            if self.media_type == SSE:
                # (a prediction is a POST; aiohttp-sse expects GET unless told)
                self.response = EventSourceResponse(allow_all_methods=True)
            else:
                self.response = web.StreamResponse(
                    headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"}
                )
            await self.response.prepare(self.request)
        return self.response

    async def item(self, data: bytes) -> None:
        response = await self.open()
        self.count += 1
        if isinstance(response, EventSourceResponse):
            await response.send(data.decode(), id=str(self.count), event="item")
        else:
            await response.write(data + b"\n")

    async def end(self, error: exceptions.DeepaasError | None) -> None:
        response = await self.open()
        if isinstance(response, EventSourceResponse):
            if error is None:
                await response.send(json.dumps({"items": self.count}), event="end")
            else:
                body = {"message": error.message, "status": error.status}
                await response.send(json.dumps(body), event="error")
        elif error is not None:
            line = {"error": {"message": error.message, "status": error.status}}
            await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()


async def respond(
    request: web.Request,
    media_type: str,
    run: Callable[[ItemStream], Awaitable[Any]],
    answer: Callable[[Any], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Run a prediction with ``run(items)`` and stream its items; one that
    makes no stream (a plain result, or a failure before the first item) is
    answered as ever, by ``answer(result)`` or as an error."""
    items = ItemStream()
    writer = Writer(request, media_type)
    call = asyncio.ensure_future(run(items))
    getter: asyncio.Future[bytes] | None = None
    try:
        while True:
            if getter is None:
                getter = asyncio.ensure_future(items.get())
            await asyncio.wait({getter, call}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                data, getter = getter.result(), None
                await writer.item(data)
                continue
            break  # the call has ended, the rest of its items are here
        getter.cancel()
        getter = None
        while not items.queue.empty():
            await writer.item(items.take())
        try:
            result = call.result()
        except Exception as exc:
            if writer.response is None:
                raise  # nothing sent yet: the usual JSON error
            if not isinstance(exc, exceptions.DeepaasError):
                LOG.exception("A streamed prediction failed")
                exc = exceptions.DeepaasError(
                    "Internal server error: the server's log has the details."
                )
            await writer.end(exc)
            return writer.response
        if writer.response is None and not isinstance(result, Streamed):
            return await answer(result)
        await writer.end(None)
        assert writer.response is not None
        return writer.response
    finally:
        if getter is not None:
            getter.cancel()
        if not call.done():  # the client went away: the generator stops
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

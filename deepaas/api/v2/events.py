"""Event streams of trainings and jobs (``text/event-stream``, aiohttp-sse).

``GET .../train/<uuid>/events`` and ``GET .../predict/<id>/events`` send what
their record has gone through and then what it goes through, as it happens:
``status``, ``progress``, ``log`` (trainings' new lines) and, last, ``result``
(the whole record), after which the stream ends. Each event has the number
``id`` of its record's events; a client reconnecting with ``Last-Event-ID``
gets only those after it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from deepaas import exceptions
from deepaas.api import auth, keys
from deepaas.state.repositories import Event
from deepaas.work.events import Lagging
from deepaas.work.runner import Runner

RETRY_MS = 2000  # how soon a client reconnects after the stream breaks
PING_SECONDS = 15.0  # a comment line this often keeps proxies from timing out
EVENTS_PAGE = 100  # kept events read from the database at a time

Snapshot = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
"""The record now: whether it has ended, and its JSON object."""


def last_event_id(request: web.Request) -> int:
    """The number of the last event the client has (0: none);
    ``BadRequest`` when the header holds no event number of ours."""
    value = request.headers.get("Last-Event-ID", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise exceptions.BadRequest(
            f"Last-Event-ID must be the id of an event of this stream, not {value!r}."
        )
    return int(value)


async def follow(
    request: web.Request,
    runner: Runner[Any],
    model: str,
    record_id: str,
    base: str,
) -> web.StreamResponse:
    """The event stream of a training or job of ``runner``, for the user the
    request is from (a 404 before the stream starts when it is not theirs)."""
    owner = auth.owner_filter(request)
    found = await runner.get(model, record_id, owner)

    async def snapshot() -> tuple[bool, dict[str, Any]]:
        # An ended record stays as it is: no need to read it again.
        record = await runner.get(model, record_id, owner) if found.running else found
        return not record.running, runner.kind.view(record, base)

    return await stream(request, runner.kind.name, record_id, snapshot)


async def stream(
    request: web.Request, kind: str, record: str, snapshot: Snapshot
) -> web.StreamResponse:
    """Answer with the record's event stream until its final event."""
    after = last_event_id(request)
    journal = request.app[keys.EVENTS]
    with journal.subscribe(kind, record) as live:
        page = await journal.after(kind, record, after, EVENTS_PAGE)
        ended, body = await snapshot()
        if ended and after and not page:
            # The client has every event (a browser's EventSource reconnects
            # by itself after the end): 204 tells it to stop.
            return web.Response(status=204)
        async with sse_response(request, ping_interval=PING_SECONDS) as response:
            last = after
            # The kept events, a page at a time: never all of them at once.
            while page:
                for event in page:
                    await send(response, event, first=last == after)
                    last = event.seq
                    if event.final:
                        return response
                if len(page) < EVENTS_PAGE:
                    break
                page = await journal.after(kind, record, last, EVENTS_PAGE)
            if ended:
                # Its final event may have come meanwhile; else (a record
                # ended by a restart, say) the record itself ends the stream.
                final = next((e for e in live.pending() if e.final), None)
                await send(
                    response, final or Event(last + 1, "result", json.dumps(body), True)
                )
                return response
            try:
                while True:
                    event = await live.next()
                    if event.seq > last + 1:
                        # Some were kept before this server was told of them
                        # (another server's record, after a break): read.
                        missed = event.seq - last - 1
                        for kept in await journal.after(kind, record, last, missed):
                            await send(response, kept, first=last == after)
                            last = kept.seq
                            if kept.final:
                                return response
                    if event.seq <= last:
                        continue
                    await send(response, event, first=last == after)
                    last = event.seq
                    if event.final:
                        return response
            except Lagging:
                return response  # the client reconnects and catches up
    return response


async def send(response: Any, event: Event, first: bool = False) -> None:
    await response.send(
        event.data,
        id=str(event.seq),
        event=event.name,
        retry=RETRY_MS if first else None,
    )

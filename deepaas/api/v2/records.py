"""What the routes of trainings and of jobs share: answering with a record,
and following its events."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp_apigami
from aiohttp import web
from aiohttp.typedefs import Handler

from deepaas.api import auth, keys
from deepaas.api.v2 import events
from deepaas.state.records import Record
from deepaas.work.runner import Runner

OUTPUT_READ = 4  # chunks of output read from the database at a time

# What a handler does to a record: (runner, model, id, owner) -> the record
RecordAction = Callable[[Runner[Any], str, str, str | None], Awaitable[Record]]


@dataclasses.dataclass(frozen=True)
class RecordRoutes:
    """The records of one kind of one model, as their routes find them."""

    runner_key: web.AppKey[Runner[Any]]
    model: str
    id_name: str  # the name of the record's id in the route's path
    links: bool  # whether the records' views have links (under the base path)
    not_found: dict[int, Any]  # the 404 of the spec

    def _base(self, request: web.Request) -> str:
        return request.app[keys.BASE_PATH] if self.links else ""

    def answer(self, act: RecordAction) -> Handler:
        """A handler answering with the record ``act`` gives back."""

        async def handler(request: web.Request) -> web.Response:
            runner = request.app[self.runner_key]
            record = await act(
                runner,
                self.model,
                request.match_info[self.id_name],
                auth.owner_filter(request),
            )
            return web.json_response(runner.kind.view(record, self._base(request)))

        return handler

    def events(self, summary: str, description: str) -> Handler:
        """The handler of the record's ``/events`` route."""

        @aiohttp_apigami.docs(
            tags=["models"],
            summary=summary,
            description=description,
            produces=["text/event-stream"],
            responses={200: {"description": "The event stream"}, **self.not_found},
        )
        async def record_events(request: web.Request) -> web.StreamResponse:
            return await events.follow(
                request,
                request.app[self.runner_key],
                self.model,
                request.match_info[self.id_name],
                self._base(request),
            )

        return record_events


async def output_of(
    runner: Runner[Any], record_id: str
) -> AsyncGenerator[tuple[int, bytes]]:
    """The output a record left in the database (shared with other
    servers): (offset, bytes) of each chunk, in order, a few read at a
    time."""
    start = 0
    while True:
        chunks = await runner.database.outputs.read(
            runner.kind.name, record_id, start, OUTPUT_READ
        )
        for chunk in chunks:
            yield chunk
        if len(chunks) < OUTPUT_READ:
            return
        start = chunks[-1][0] + 1

"""Event streams of trainings and jobs, read by a real SSE client (httpx-sse),
reconnecting with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from deepaas.api import keys
from tests import helpers
from tests.api.test_jobs import ASYNC

TRAIN = "/v2/models/failing/train/"
PREDICT = "/v2/models/failing/predict/"


async def read_events(client, path: str, last_id: str | None = None, count=None):
    """The events of a stream until it ends (or the first ``count``)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events = []
    async with httpx.AsyncClient(base_url=str(client.make_url("")), timeout=60) as http:
        async with aconnect_sse(http, "GET", path, headers=headers) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith(
                "text/event-stream"
            )
            async for event in source.aiter_sse():
                events.append(event)
                if count is not None and len(events) == count:
                    break
    return events


async def test_a_training_streams_status_log_lines_and_its_result(make_client):
    client = await make_client("--model-name", "failing")
    started = await (await client.post(TRAIN + "?mode=chatty&seconds=1")).json()
    events = await read_events(client, TRAIN + started["uuid"] + "/events")
    names = [e.event for e in events]
    assert names[0] == "status" and json.loads(events[0].data) == {"status": "running"}
    assert names[-2:] == ["status", "result"]
    result = json.loads(events[-1].data)
    assert result["status"] == "done" and result["uuid"] == started["uuid"]
    log = "\n".join(e.data for e in events if e.event == "log")
    for line in ("line 1", "line 3", "a logged warning", "raw stderr bytes"):
        assert line in log
    assert log.rstrip().endswith("last line")  # all of it, before the result
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # a client that has everything is told to stop reconnecting
    async with httpx.AsyncClient(base_url=str(client.make_url(""))) as http:
        resp = await http.get(
            TRAIN + started["uuid"] + "/events",
            headers={"Last-Event-ID": events[-1].id},
        )
    assert resp.status_code == 204


async def test_reconnecting_with_last_event_id_gets_only_what_was_missed(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=progress&seconds=2", headers=ASYNC)
    path = resp.headers["Location"] + "/events"
    first = await read_events(client, path, count=2)  # then the client drops
    assert [e.event for e in first] == ["status", "progress"]
    rest = await read_events(client, path, last_id=first[-1].id)
    assert int(rest[0].id) == int(first[-1].id) + 1
    assert rest[-1].event == "result"
    assert json.loads(rest[-1].data)["status"] == "done"
    everything = await read_events(client, path)  # from the start, once ended
    assert [e.id for e in everything] == [e.id for e in first + rest]
    progress = [json.loads(e.data) for e in everything if e.event == "progress"]
    assert progress[-1] == {"progress": 1.0, "message": "all done"}


async def test_many_subscribers_to_one_job_cost_the_worker_nothing(make_client):
    client = await make_client("--model-name", "failing")
    executor = client.app[keys.MODELS]["failing"].executor
    journal = client.app[keys.EVENTS]
    resp = await client.post(PREDICT + "?mode=sleep&seconds=2", headers=ASYNC)
    job_id = (await resp.json())["id"]
    path = resp.headers["Location"] + "/events"
    readers = [asyncio.ensure_future(read_events(client, path)) for _ in range(20)]
    assert await helpers.eventually(lambda: journal.subscribers("job", job_id) == 20)
    assert executor.health().busy == 1
    streams = await asyncio.gather(*readers)
    finals = {json.loads(events[-1].data)["status"] for events in streams}
    assert finals == {"done"}
    assert executor.health().restarts == 0


async def test_a_job_interrupted_by_a_restart_ends_its_stream(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=sleep&seconds=60", headers=ASYNC)
    path = resp.headers["Location"] + "/events"
    await client.close()
    client = await make_client("--model-name", "failing")
    events = await read_events(client, path)
    assert events[0].event == "status"
    assert events[-1].event == "result"
    assert json.loads(events[-1].data)["status"] == "interrupted"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (TRAIN + "nope/events", {}, 404),
        (PREDICT + "nope/events", {}, 404),
    ],
)
async def test_unknown_records_are_404(make_client, path, headers, status):
    client = await make_client("--model-name", "failing")
    resp = await client.get(path, headers=headers)
    assert resp.status == status
    assert "message" in await resp.json()


async def test_a_last_event_id_not_ours_is_400(make_client):
    client = await make_client("--model-name", "failing")
    started = await (await client.post(TRAIN + "?mode=ok")).json()
    resp = await client.get(
        TRAIN + started["uuid"] + "/events", headers={"Last-Event-ID": "abc"}
    )
    assert resp.status == 400
    assert "Last-Event-ID" in (await resp.json())["message"]


async def test_the_kept_events_are_streamed_a_page_at_a_time(make_client, monkeypatch):
    from deepaas.api.v2 import events as event_routes

    monkeypatch.setattr(event_routes, "EVENTS_PAGE", 2)
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=progress&seconds=0.5", headers=ASYNC)
    path = resp.headers["Location"] + "/events"
    await helpers.wait_job(client, resp.headers["Location"])
    everything = await read_events(client, path)
    ids = [int(e.id) for e in everything]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) > 4
    assert everything[-1].event == "result"

"""Streamed predictions: items as the worker makes them, over SSE (a real
client, httpx-sse) and NDJSON, with backpressure, and stopped by a client
that goes away."""

from __future__ import annotations

import asyncio
import json

import httpx
from httpx_sse import aconnect_sse

from deepaas.api import keys
from tests import helpers
from tests.conftest import EXECUTORS

PREDICT = "/v2/models/failing/predict/"
NDJSON = {"Accept": "application/x-ndjson"}


@EXECUTORS
async def test_items_arrive_as_server_sent_events(make_client):
    client = await make_client("--model-name", "failing")
    async with httpx.AsyncClient(base_url=str(client.make_url("")), timeout=60) as http:
        async with aconnect_sse(http, "POST", PREDICT + "?mode=stream") as source:
            assert source.response.status_code == 200
            events = [event async for event in source.aiter_sse()]
    items = [json.loads(e.data) for e in events if e.event == "item"]
    assert [item["n"] for item in items] == [0, 1, 2, 3, 4]
    assert [e.id for e in events if e.event == "item"] == ["1", "2", "3", "4", "5"]
    assert events[-1].event == "end" and json.loads(events[-1].data) == {"items": 5}


async def test_items_arrive_as_json_lines_while_the_model_makes_them(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=stream", headers=NDJSON)
    assert resp.status == 200
    assert resp.content_type == "application/x-ndjson"
    arrivals = []
    async for line in resp.content:
        arrivals.append((asyncio.get_running_loop().time(), json.loads(line)))
    assert [item["n"] for _, item in arrivals] == [0, 1, 2, 3, 4]
    # one by one (the model sleeps 50 ms before each), not all at the end
    assert arrivals[-1][0] - arrivals[0][0] > 0.1


async def test_without_a_stream_type_the_items_come_as_one_list(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=stream")
    assert resp.status == 200
    body = await resp.json()
    assert [item["n"] for item in body["predictions"]] == [0, 1, 2, 3, 4]


async def test_a_failure_mid_stream_ends_it_with_an_error(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=stream-fail", headers=NDJSON)
    lines = [json.loads(line) async for line in resp.content]
    assert [line["n"] for line in lines[:2]] == [0, 1]
    assert "broke mid-stream" in lines[-1]["error"]["message"]
    assert lines[-1]["error"]["status"] == 500
    assert (await client.post(PREDICT)).status == 200


async def test_a_plain_prediction_asked_for_as_a_stream_answers_as_ever(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=ok", headers=NDJSON)
    assert resp.status == 200 and resp.content_type == "application/json"
    assert (await resp.json())["predictions"]["mode"] == "ok"
    resp = await client.post(PREDICT + "?mode=raise", headers=NDJSON)
    assert resp.status == 500 and "unhappy" in (await resp.json())["message"]


async def test_a_slow_client_holds_the_worker_back(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(
        PREDICT + "?mode=stream-many&seconds=200000", headers=NDJSON
    )
    first = json.loads(await resp.content.readline())
    assert first["n"] == 0
    await asyncio.sleep(1)  # a client that does not read for a while
    executor = client.app[keys.MODELS]["failing"].executor
    assert executor.health().busy == 1  # the model waits on its socket
    (worker,) = executor._busy  # (the pool's own record of it)
    # what the server holds for this client is bounded, not 200,000 items
    assert worker.calls[0].items.queue.qsize() <= worker.calls[0].items.high
    count = 1
    async for _ in resp.content:
        count += 1
    assert count == 200000


async def test_a_client_that_goes_away_stops_the_generator(make_client):
    client = await make_client("--model-name", "failing")
    executor = client.app[keys.MODELS]["failing"].executor
    resp = await client.post(PREDICT + "?mode=stream-forever", headers=NDJSON)
    pid = json.loads(await resp.content.readline())["pid"]
    resp.close()  # hang up mid-stream
    assert await helpers.eventually(lambda: not helpers.pid_alive(pid))
    assert await helpers.eventually(lambda: executor.health().alive == 1)
    after = await (await client.post(PREDICT)).json()
    assert after["predictions"]["pid"] != pid


async def test_the_demo_model_streams_its_predictions(make_client):
    client = await make_client("--model-name", "deepaas-test")
    path = "/v2/models/deepaas-test/predict/?top_k=3&stream=true"
    resp = await client.post(path, headers=NDJSON)
    lines = [json.loads(line) async for line in resp.content]
    labels = [line["predictions"][0]["label"] for line in lines]
    assert labels == ["cat", "dog", "bird"]
    whole = await (await client.post(path)).json()  # no stream asked: one list
    assert [answer["predictions"][0]["label"] for answer in whole] == labels

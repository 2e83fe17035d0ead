"""Trainings: start, list, status, cancel, and every way one can end."""

from __future__ import annotations

import asyncio
import datetime
import re
import time

import pytest

from deepaas.api import keys
from tests import helpers
from tests.conftest import EXECUTORS

pytestmark = EXECUTORS

TRAIN = "/v2/models/failing/train/"


async def wait_status(client, path, statuses=("done", "error"), timeout=30.0):
    """Poll a training until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await (await client.get(path)).json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"training still {body['status']} after {timeout}s")


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "failing")


async def test_start_answers_running_training_object(client):
    resp = await client.post(TRAIN + "?mode=sleep&seconds=0.5")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "running"
    assert re.fullmatch(r"[0-9a-f]{32}", body["uuid"])
    datetime.datetime.strptime(body["date"], "%Y-%m-%d %H:%M:%S.%f")
    assert body["args"] == {"mode": "sleep", "seconds": 0.5}


async def test_done_training_has_result(client):
    body = await (await client.post(TRAIN)).json()
    done = await wait_status(client, TRAIN + body["uuid"])
    assert done["status"] == "done"
    assert done["result"]["output"]["mode"] == "ok"
    datetime.datetime.strptime(done["result"]["finish_date"], "%Y-%m-%d %H:%M:%S.%f")
    assert re.fullmatch(r"\d+:\d\d:\d\d(\.\d+)?", done["result"]["duration"])


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        ("raise", "ValueError: the model is unhappy"),
        ("http", "Too many requests"),
        ("not-implemented", "not in this version"),
        ("exit", "exit code 3"),
        ("segfault", "SIGSEGV"),
    ],
)
async def test_failed_training_ends_in_error_with_message(client, mode, text):
    body = await (await client.post(f"{TRAIN}?mode={mode}")).json()
    failed = await wait_status(client, TRAIN + body["uuid"])
    assert failed["status"] == "error"
    assert text in failed["message"]
    assert "result" not in failed


async def test_list_trainings(client):
    first = await (await client.post(TRAIN)).json()
    second = await (await client.post(TRAIN + "?mode=raise")).json()
    listed = await (await client.get(TRAIN)).json()
    assert [t["uuid"] for t in listed] == [first["uuid"], second["uuid"]]
    resp = await client.get(TRAIN.rstrip("/"))
    assert resp.status == 200


async def test_unknown_training_is_404(client):
    resp = await client.get(TRAIN + "0" * 32)
    assert resp.status == 404
    assert "0" * 32 in (await resp.json())["message"]
    resp = await client.delete(TRAIN + "0" * 32)
    assert resp.status == 404


async def test_cancel_running_training_kills_worker_and_forgets_it(client):
    before = await (await client.post("/v2/models/failing/predict/")).json()
    worker_pid = before["predictions"]["pid"]
    body = await (await client.post(TRAIN + "?mode=sleep&seconds=60")).json()
    executor = client.app[keys.MODELS]["failing"].executor
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    resp = await client.delete(TRAIN + body["uuid"])
    assert resp.status == 200
    cancelled = await resp.json()
    assert cancelled["status"] == "cancelled"
    assert (await client.get(TRAIN + body["uuid"])).status == 404
    after = await (await client.post("/v2/models/failing/predict/")).json()
    assert after["predictions"]["pid"] != worker_pid


async def test_delete_finished_training_returns_it(client):
    body = await (await client.post(TRAIN)).json()
    await wait_status(client, TRAIN + body["uuid"])
    resp = await client.delete(TRAIN + body["uuid"] + "/")
    assert (await resp.json())["status"] == "done"
    assert (await client.get(TRAIN)).status == 200
    assert await (await client.get(TRAIN)).json() == []


async def test_invalid_train_arguments_are_422(make_client):
    client = await make_client("--model-name", "module-model")
    resp = await client.post("/v2/models/module-model/train/")
    assert resp.status == 422
    assert "epochs" in (await resp.json())["errors"]
    assert await (await client.get("/v2/models/module-model/train/")).json() == []


async def test_model_without_train_is_501_and_records_nothing(make_client):
    client = await make_client("--model-name", "minimal")
    resp = await client.post("/v2/models/minimal/train/")
    assert resp.status == 501
    assert "does not implement train()" in (await resp.json())["message"]
    assert await (await client.get("/v2/models/minimal/train/")).json() == []

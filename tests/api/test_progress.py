"""deepaas.progress: what a model reports shows on its training or job."""

from __future__ import annotations

import asyncio

import pytest

import deepaas
from tests.api.test_jobs import ASYNC, wait_job
from tests.api.test_train import wait_status
from tests.conftest import EXECUTORS

TRAIN = "/v2/models/failing/train/"
PREDICT = "/v2/models/failing/predict/"


async def until(client, url: str, predicate, timeout: float = 30) -> dict:
    """The record at ``url`` once ``predicate`` holds for it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = await (await client.get(url)).json()
        if predicate(record):
            return record
        assert asyncio.get_running_loop().time() < deadline, record
        await asyncio.sleep(0.05)


def half_way(record: dict) -> bool:
    return record.get("progress_message") == "half way"


@EXECUTORS
async def test_a_training_shows_the_last_progress_reported(make_client):
    client = await make_client("--model-name", "failing")
    started = await (await client.post(TRAIN + "?mode=progress&seconds=30")).json()
    url = TRAIN + started["uuid"]
    # 10,000 reports then "half way": the last one shows, though it came
    # right after the others
    running = await until(client, url, half_way)
    assert running["progress"] == 0.5 and running["status"] == "running"
    listed = await (await client.get(TRAIN)).json()
    assert listed[0]["progress_message"] == "half way"
    await client.delete(url)


async def test_an_ended_training_shows_no_progress(make_client):
    client = await make_client("--model-name", "failing")
    started = await (await client.post(TRAIN + "?mode=progress&seconds=0")).json()
    done = await wait_status(client, TRAIN + started["uuid"])
    assert done["status"] == "done"
    assert "progress" not in done and "progress_message" not in done


@EXECUTORS
async def test_an_asynchronous_prediction_shows_its_progress(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=progress&seconds=30", headers=ASYNC)
    url = resp.headers["Location"]
    running = await until(client, url, half_way)
    assert running["progress"] == 0.5
    await client.delete(url)
    resp = await client.post(PREDICT + "?mode=progress&seconds=0", headers=ASYNC)
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "done" and "progress" not in done


async def test_a_synchronous_prediction_reporting_progress_answers_as_ever(
    make_client,
):
    client = await make_client("--model-name", "failing")
    resp = await client.post(PREDICT + "?mode=progress&seconds=0")
    assert resp.status == 200
    assert (await resp.json())["predictions"]["mode"] == "progress"
    assert (await client.post(PREDICT)).status == 200  # the worker is well


def test_outside_a_worker_progress_does_nothing():
    deepaas.progress(0.3, "nobody listens")
    deepaas.progress()
    deepaas.progress(message="only words")


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_a_fraction_out_of_range_is_the_model_s_error(fraction):
    with pytest.raises(ValueError, match="from 0 to 1"):
        deepaas.progress(fraction)

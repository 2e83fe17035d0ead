"""Models with predict_batch: waiting predictions run as batches, each client
gets its own answer or its own error; other models are untouched."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from deepaas.api import keys
from tests import helpers
from tests.conftest import EXECUTORS

PREDICT = "/v2/models/batcher/predict/"


async def start(make_client, *extra: str):
    client = await make_client("--model-name", "batcher", "-p", "1", *extra)
    return client, client.app[keys.MODELS]["batcher"].executor


async def queued_behind_a_busy_worker(client, executor, queries: list[str]):
    """Occupy the worker, queue one prediction per query behind it, and
    return (the blocker's answer, the queued ones' responses) in order."""
    blocker = asyncio.ensure_future(client.post(f"{PREDICT}?x=1&seconds=0.5"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    calls = [asyncio.ensure_future(client.post(f"{PREDICT}?{q}")) for q in queries]
    assert await helpers.eventually(lambda: executor.health().queued == len(queries)), (
        "the predictions did not queue"
    )
    first = await blocker
    assert first.status == 200
    return await first.json(), list(await asyncio.gather(*calls))


@EXECUTORS
async def test_queued_predictions_run_as_batches_each_with_its_own_answer(
    make_client,
):
    client, executor = await start(make_client, "--max-batch-size", "4")
    blocker, responses = await queued_behind_a_busy_worker(
        client, executor, [f"x={i}" for i in range(6)]
    )
    assert blocker["predictions"]["size"] == 1  # alone, on an idle worker
    answers = [(await r.json())["predictions"] for r in responses]
    assert [r.status for r in responses] == [200] * 6
    assert [a["y"] for a in answers] == [2.0 * i for i in range(6)]
    assert sorted(a["size"] for a in answers) == [2, 2, 4, 4, 4, 4]
    assert len({a["batch"] for a in answers}) == 2
    assert executor.health().batches == 2
    assert executor.health().batched == 6
    metrics = await (await client.get("/metrics")).text()
    assert 'deepaas_prediction_batches_total{model="batcher"} 2.0' in metrics
    assert 'deepaas_batched_predictions_total{model="batcher"} 6.0' in metrics


@EXECUTORS
async def test_one_failing_prediction_fails_alone(make_client):
    client, executor = await start(make_client, "--max-batch-size", "8")
    _, responses = await queued_behind_a_busy_worker(
        client, executor, ["x=1", "x=fail", "x=3"]
    )
    assert [r.status for r in responses] == [200, 500, 200]
    failed = await responses[1].json()
    assert "cannot use 'fail'" in failed["message"]
    assert (await responses[2].json())["predictions"]["size"] == 3
    assert executor.health().restarts == 0


@pytest.mark.parametrize(
    "bad, message",
    [("boom", "the whole batch failed"), ("short", "returned 2 results for 3")],
)
async def test_a_failing_batch_fails_each_of_its_predictions(make_client, bad, message):
    client, executor = await start(make_client, "--max-batch-size", "8")
    _, responses = await queued_behind_a_busy_worker(
        client, executor, ["x=1", f"x={bad}", "x=3"]
    )
    assert [r.status for r in responses] == [500, 500, 500]
    for response in responses:
        assert message in (await response.json())["message"]
    # the worker lives on
    resp = await client.post(f"{PREDICT}?x=2")
    assert resp.status == 200
    assert executor.health().restarts == 0


@EXECUTORS
async def test_each_prediction_in_a_batch_reads_its_own_upload(make_client):
    client, executor = await start(make_client, "--max-batch-size", "8")
    blocker = asyncio.ensure_future(client.post(f"{PREDICT}?seconds=0.5"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)

    async def with_file(text: str) -> dict:
        form = aiohttp.FormData()
        form.add_field("data", text.encode(), filename="t.txt")
        resp = await client.post(PREDICT, data=form)
        assert resp.status == 200
        return (await resp.json())["predictions"]

    calls = [asyncio.ensure_future(with_file(f"file {i}")) for i in range(4)]
    assert await helpers.eventually(lambda: executor.health().queued == 4)
    await blocker
    answers = await asyncio.gather(*calls)
    assert [a["data"] for a in answers] == [f"file {i}" for i in range(4)]
    assert {a["size"] for a in answers} == {4}


async def test_batch_size_one_turns_batching_off(make_client):
    client, executor = await start(make_client, "--max-batch-size", "1")
    _, responses = await queued_behind_a_busy_worker(
        client, executor, ["x=1", "x=2", "x=3"]
    )
    answers = [(await r.json())["predictions"] for r in responses]
    assert [a["batch"] for a in answers] == [None, None, None]  # predict()
    assert executor.health().batches == 0


async def test_a_model_without_predict_batch_is_untouched(make_client):
    client = await make_client("--model-name", "failing", "-p", "1")
    executor = client.app[keys.MODELS]["failing"].executor
    assert executor.batch_size == 1
    resp = await client.post("/v2/models/failing/predict/")
    assert resp.status == 200


async def test_a_client_that_leaves_does_not_stop_the_batch(make_client):
    client, executor = await start(make_client, "--max-batch-size", "8")
    blocker = asyncio.ensure_future(client.post(f"{PREDICT}?seconds=0.3"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    stays = asyncio.ensure_future(client.post(f"{PREDICT}?x=5&seconds=0.5"))
    leaves = asyncio.ensure_future(client.post(f"{PREDICT}?x=6&seconds=0.5"))
    assert await helpers.eventually(lambda: executor.health().queued == 2)
    await blocker
    pid = executor.pids()[0]
    assert await helpers.eventually(lambda: executor.health().queued == 0)
    leaves.cancel()  # the client hangs up while its batch runs
    resp = await stays
    assert resp.status == 200
    assert (await resp.json())["predictions"]["size"] == 2
    assert executor.pids() == [pid]  # no worker was killed for it
    assert executor.health().restarts == 0


@pytest.mark.slow  # waits out a time limit, then a replacement
async def test_a_batch_past_its_time_limit_is_504_for_all(make_client):
    client, executor = await start(
        make_client, "--max-batch-size", "8", "--predict-timeout", "1"
    )
    blocker = asyncio.ensure_future(client.post(f"{PREDICT}?seconds=0.2"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    slow = [
        asyncio.ensure_future(client.post(f"{PREDICT}?x={i}&seconds=5"))
        for i in range(3)
    ]
    assert await helpers.eventually(lambda: executor.health().queued == 3)
    assert (await blocker).status == 200
    responses = await asyncio.gather(*slow)
    assert [r.status for r in responses] == [504, 504, 504]
    assert await helpers.eventually(lambda: executor.health().alive == 1)
    assert executor.health().restarts == 1


@EXECUTORS
@pytest.mark.slow  # waits for a replacement worker
async def test_a_worker_that_dies_in_a_batch_fails_each_prediction(make_client):
    client, executor = await start(make_client, "--max-batch-size", "8")
    blocker = asyncio.ensure_future(client.post(f"{PREDICT}?seconds=0.2"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    calls = [
        asyncio.ensure_future(client.post(f"{PREDICT}?x={i}&seconds=5"))
        for i in range(3)
    ]
    assert await helpers.eventually(lambda: executor.health().queued == 3)
    await blocker
    assert await helpers.eventually(lambda: executor.health().queued == 0)
    os.kill(executor.pids()[0], 9)
    responses = await asyncio.gather(*calls)
    assert [r.status for r in responses] == [500, 500, 500]
    for response in responses:
        assert "died" in (await response.json())["message"]


async def test_under_no_load_a_prediction_does_not_wait_for_a_batch(make_client):
    # a long wait, which a lone prediction on an idle pool must not pay
    client, executor = await start(
        make_client, "-p", "2", "--max-batch-wait-ms", "5000"
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.post(f"{PREDICT}?x=1")
    assert resp.status == 200
    assert loop.time() - started < 2.5


async def test_inference_requests_are_batched_too(make_client):
    """Calls through the Open Inference Protocol queue and batch as those of
    the predict endpoint do."""
    client, executor = await start(make_client, "--max-batch-size", "4")
    blocker = asyncio.ensure_future(client.post(f"{PREDICT}?x=1&seconds=0.5"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    calls = [
        asyncio.ensure_future(
            client.post(
                "/v2/models/batcher/infer",
                json={
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "BYTES",
                            "shape": [1],
                            "data": [str(i)],
                        }
                    ]
                },
            )  # fmt: skip
        )
        for i in range(4)
    ]
    assert await helpers.eventually(lambda: executor.health().queued == 4)
    assert (await blocker).status == 200
    answers = []
    for response in await asyncio.gather(*calls):
        assert response.status == 200
        (output,) = (await response.json())["outputs"]
        answers.append(json.loads(output["data"][0]))
    assert [a["y"] for a in answers] == [0.0, 2.0, 4.0, 6.0]
    assert [a["size"] for a in answers] == [4] * 4
    assert executor.health().batches == 1

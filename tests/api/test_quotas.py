"""Quotas: how much work the server takes on before it says no."""

from __future__ import annotations

import asyncio

import aiohttp

from deepaas.api import keys
from tests import helpers

TRAIN = "/v2/models/failing/train/"
PREDICT = "/v2/models/failing/predict/"


async def test_max_trainings_refuses_one_more_and_starts_nothing(make_client):
    client = await make_client("--model-name", "failing", "--max-trainings", "2")
    running = [
        await (await client.post(TRAIN + "?mode=sleep&seconds=30")).json()
        for _ in range(2)
    ]
    form = aiohttp.FormData()
    form.add_field("data", b"x" * 1000, filename="a.bin")
    resp = await client.post(TRAIN + "?mode=ok", data=form)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "30"
    assert "--max-trainings" in (await resp.json())["message"]
    listed = await (await client.get(TRAIN)).json()
    assert sorted(t["uuid"] for t in listed) == sorted(t["uuid"] for t in running)
    # one ends (cancelled): room for another
    await client.delete(TRAIN + running[0]["uuid"])
    resp = await client.post(TRAIN + "?mode=ok")
    assert resp.status == 200
    await client.delete(TRAIN + running[1]["uuid"])


async def test_max_queued_predictions_answers_503_at_once(make_client):
    client = await make_client(
        "--model-name", "failing", "--max-queued-predictions", "2"
    )
    executor = client.app[keys.MODELS]["failing"].executor
    busy = asyncio.ensure_future(client.post(PREDICT + "?mode=sleep&seconds=3"))
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    queued = [asyncio.ensure_future(client.post(PREDICT)) for _ in range(2)]
    assert await helpers.eventually(lambda: executor.queued() == 2)
    resp = await client.post(PREDICT)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "--max-queued-predictions" in (await resp.json())["message"]
    assert executor.queued() == 2  # the refused one never queued
    assert (await busy).status == 200
    assert [r.status for r in await asyncio.gather(*queued)] == [200, 200]
    assert (await client.post(PREDICT)).status == 200  # room again


async def test_trainings_past_their_retention_are_removed_with_their_logs(
    make_client, state_dir
):
    client = await make_client("--model-name", "failing", "--training-retention", "1")
    done = await (await client.post(TRAIN + "?mode=chatty")).json()
    running = await (await client.post(TRAIN + "?mode=sleep&seconds=30")).json()
    log = state_dir / "logs" / f"{done['uuid']}.log"

    async def status(uuid: str) -> int:
        return (await client.get(TRAIN + uuid)).status

    assert await helpers.eventually(lambda: log.exists())
    deadline = asyncio.get_running_loop().time() + 20
    while await status(done["uuid"]) != 404:
        assert asyncio.get_running_loop().time() < deadline, "never removed"
        await asyncio.sleep(0.1)
    assert not log.exists()
    assert await status(running["uuid"]) == 200  # running: kept
    listed = await (await client.get(TRAIN)).json()
    assert [t["uuid"] for t in listed] == [running["uuid"]]
    await client.delete(TRAIN + running["uuid"])

"""--worker-gpus: each worker sees its own GPUs, round robin, from before the
model is imported; replacements keep them; /readyz and /metrics show them.
No GPU is needed: the model reports the CUDA_VISIBLE_DEVICES it sees."""

from __future__ import annotations

import os

import pytest

from deepaas.api import keys
from tests import helpers

PREDICT = "/v2/models/introspect/predict/"


async def processes(client) -> list[dict]:
    body = await (await client.get("/readyz")).json()
    return body["models"]["introspect"]["processes"]


async def test_workers_get_their_gpus_round_robin(make_client):
    client = await make_client(
        "--model-name", "introspect", "-p", "3", "--worker-gpus", "0,1"
    )
    seen = await processes(client)
    assert [(p["slot"], p["devices"]) for p in seen] == [(0, "0"), (1, "1"), (2, "0")]
    # the model sees the devices of the worker that runs it
    by_pid = {p["pid"]: p["devices"] for p in seen}
    resp = await client.post(PREDICT)
    answer = (await resp.json())["predictions"]
    assert answer["cuda_visible_devices"] == by_pid[answer["pid"]]
    metrics = await (await client.get("/metrics")).text()
    for slot, devices in (("0", "0"), ("1", "1"), ("2", "0")):
        assert (
            f'deepaas_worker_devices{{devices="{devices}",model="introspect",'
            f'slot="{slot}"}} 1.0'
        ) in metrics


@pytest.mark.slow  # waits for a replacement worker
async def test_a_replacement_sees_the_gpus_of_the_worker_it_replaces(make_client):
    client = await make_client(
        "--model-name", "introspect", "-p", "2", "--worker-gpus", "3,5"
    )
    executor = client.app[keys.MODELS]["introspect"].executor
    before = await processes(client)
    victim = next(p for p in before if p["devices"] == "5")
    os.kill(victim["pid"], 9)
    assert await helpers.eventually(
        lambda: victim["pid"] not in executor.pids() and executor.health().alive == 2
    )
    after = await processes(client)
    assert [(p["slot"], p["devices"]) for p in after] == [(0, "3"), (1, "5")]
    assert victim["pid"] not in {p["pid"] for p in after}


async def test_without_the_option_the_environment_is_the_servers(
    make_client, monkeypatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    client = await make_client("--model-name", "introspect")
    seen = await processes(client)
    assert [p["devices"] for p in seen] == [None]
    answer = (await (await client.post(PREDICT)).json())["predictions"]
    assert answer["cuda_visible_devices"] == "7"
    assert "deepaas_worker_devices{" not in await (await client.get("/metrics")).text()

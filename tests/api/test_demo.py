"""The built-in demo model, served in-process as deepaas-test."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from tests.api.test_train import wait_status

PREDICT = "/v2/models/deepaas-test/predict/"


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "deepaas-test")


async def test_prediction_follows_its_schema(client):
    form = aiohttp.FormData()
    form.add_field("data", b"demo bytes", filename="x.txt", content_type="text/plain")
    form.add_field("weights", "0.5")
    form.add_field("weights", "2")
    resp = await client.post(PREDICT + "?top_k=3&label=bird&verbose=yes", data=form)
    assert resp.status == 200
    body = await resp.json()
    assert [p["label"] for p in body["predictions"]] == ["bird", "dog", "cat"]
    assert body["arguments"]["weights"] == [0.5, 2.0]
    assert body["arguments"]["verbose"] is True
    assert (
        body["arguments"]["data"]["sha256"] == hashlib.sha256(b"demo bytes").hexdigest()
    )


async def test_png_answer(client):
    resp = await client.post(PREDICT, headers={"Accept": "image/png"})
    assert resp.status == 200
    assert resp.content_type == "image/png"
    assert (await resp.read()).startswith(b"\x89PNG")


async def test_bad_url_is_422(client):
    resp = await client.post(PREDICT + "?url=not-a-url")
    assert resp.status == 422
    assert "url" in (await resp.json())["errors"]


async def test_training_runs_over_epochs(client):
    body = await (await client.post("/v2/models/deepaas-test/train/?epochs=1")).json()
    done = await wait_status(client, "/v2/models/deepaas-test/train/" + body["uuid"])
    assert done["status"] == "done"
    assert done["result"]["output"]["epochs"] == 1
    assert len(done["result"]["output"]["losses"]) == 1


async def test_legacy_get_test_args(make_client):
    client = await make_client("--model-name", "legacy")
    resp = await client.post("/v2/models/legacy/predict/?word=new")
    assert (await resp.json())["predictions"] == "new"
    spec = await (await client.get("/swagger.json")).json()
    post = spec["paths"]["/v2/models/legacy/train/"]["post"]
    # no arguments; the headers are the webhook ones every training takes
    assert [p["name"] for p in post["parameters"]] == ["Webhook-URL", "Webhook-Events"]

"""Prediction bodies are validated by the workers, large ones too, with the
same answers (and the same 422s) as asynchronous ones validated by the
server."""

from __future__ import annotations

import json

LARGE = 256 * 1024

PREDICT = "/v2/models/deepaas-test/predict/"


def weights(count: int, bad: dict[int, object] | None = None) -> list[object]:
    values: list[object] = [f"{i / 7:.6f}" for i in range(count)]  # text numbers
    for index, value in (bad or {}).items():
        values[index] = value
    return values


def large(body: dict) -> bytes:
    data = json.dumps(body).encode()
    assert len(data) >= LARGE
    return data


async def post_json(client, data: bytes, query: str = ""):
    return await client.post(
        PREDICT + query, data=data, headers={"Content-Type": "application/json"}
    )


async def test_a_large_body_is_loaded_through_the_schema(make_client):
    client = await make_client("--model-name", "deepaas-test")
    count = 40_000
    resp = await post_json(client, large({"weights": weights(count), "top_k": "2"}))
    body = await resp.json()
    assert resp.status == 200, body
    # the worker converted the text to numbers and applied the defaults
    shown = body["arguments"]
    assert shown["weights"][:3] == [0.0, 0.142857, 0.285714]
    assert len(shown["weights"]) == count
    assert shown["top_k"] == 2
    assert shown["label"] == "cat"
    assert len(body["predictions"]) == 2


async def test_a_large_invalid_body_is_the_same_422_as_a_small_one(make_client):
    client = await make_client("--model-name", "deepaas-test")
    bad = {"weights": weights(40_000, {3: "three", 9: [1]}), "top_k": "many"}
    big = await post_json(client, large(bad))
    small_bad = {"weights": weights(10, {3: "three", 9: [1]}), "top_k": "many"}
    small = await post_json(client, json.dumps(small_bad).encode())
    assert big.status == small.status == 422
    assert await big.json() == await small.json()
    # and the worker that found it lives on
    resp = await post_json(client, large({"weights": weights(40_000)}))
    assert resp.status == 200


async def test_a_large_body_keeps_the_accept_default_and_choice(make_client):
    client = await make_client("--model-name", "deepaas-test")
    resp = await post_json(client, large({"weights": weights(40_000)}))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    resp = await post_json(
        client, large({"weights": weights(40_000), "accept": "image/png"})
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert (await resp.read()).startswith(b"\x89PNG")


async def test_a_large_body_for_a_batching_model_fails_alone(make_client):
    import asyncio

    client = await make_client("--model-name", "deepaas-test", "-p", "1")
    good = large({"weights": weights(40_000)})
    bad = large({"weights": weights(40_000), "top_k": "many"})
    responses = await asyncio.gather(
        *(post_json(client, body) for body in (good, bad, good, bad))
    )
    assert [r.status for r in responses] == [200, 422, 200, 422]

"""Asynchronous predictions: Prefer: respond-async, polling, results, cancel,
restarts, Idempotency-Key and retention, with real requests."""

from __future__ import annotations

import asyncio
import os
import tempfile

import aiohttp
import pytest

from deepaas.api import keys
from tests import helpers
from tests.conftest import EXECUTORS
from tests.helpers import wait_job
from tests.packages.testmodels.deepaas_testmodels.outputs import pattern

ASYNC = {"Prefer": "respond-async"}
FAILING = "/v2/models/failing/predict/"
OUTPUTS = "/v2/models/outputs/predict/"
ECHO = "/v2/models/echo/predict/"


async def submit(client, path: str, **kwargs) -> tuple[aiohttp.ClientResponse, dict]:
    headers = {**ASYNC, **kwargs.pop("headers", {})}
    resp = await client.post(path, headers=headers, **kwargs)
    return resp, await resp.json()


async def test_without_prefer_nothing_changes(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(FAILING)
    assert resp.status == 200
    assert "Preference-Applied" not in resp.headers
    assert (await resp.json())["predictions"]["mode"] == "ok"
    assert await (await client.get(FAILING)).json() == []  # no job recorded


@EXECUTORS
async def test_a_json_prediction_runs_in_the_background_and_keeps_its_result(
    make_client,
):
    client = await make_client("--model-name", "failing")
    resp, job = await submit(client, FAILING + "?mode=sleep&seconds=0.5")
    assert resp.status == 202
    assert resp.headers["Preference-Applied"] == "respond-async"
    assert resp.headers["Location"] == f"{FAILING}{job['id']}"
    assert job["status"] == "running"
    assert job["args"] == {"mode": "sleep", "seconds": 0.5, "data": None}
    assert job["links"] == {"self": resp.headers["Location"]}
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "done", done
    # as the synchronous answer
    assert done["result"]["predictions"]["mode"] == "sleep"
    assert done["result_type"] == "application/json"
    assert "finish_date" in done and "duration" in done
    result = await client.get(done["links"]["result"])
    assert result.status == 200 and result.content_type == "application/json"
    assert (await result.json())["predictions"]["mode"] == "sleep"
    listed = await (await client.get(FAILING)).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert "result" not in listed[0]  # listed without results


async def test_a_job_seen_done_always_shows_its_result(make_client):
    """A job read while it ends is answered as it was when read: never done
    without its result (the record changes on the event loop while its
    result file is read on a thread)."""
    client = await make_client("--model-name", "failing")

    async def follow() -> int:
        resp, _ = await submit(client, FAILING)
        seen = 0
        while True:
            job = await (await client.get(resp.headers["Location"])).json()
            seen += 1
            if job["status"] != "running":
                assert job["status"] == "done" and "result" in job, job
                return seen

    polls = await asyncio.gather(*(follow() for _ in range(40)))
    assert sum(polls) >= 40


@pytest.mark.parametrize("prefer", ["respond-async", "wait=10, Respond-Async"])
async def test_prefer_is_read_as_rfc_7240_says(make_client, prefer):
    client = await make_client("--model-name", "failing")
    resp = await client.post(FAILING, headers={"Prefer": prefer})
    assert resp.status == 202


# a result written as it comes, and one written on a thread
@pytest.mark.parametrize("size", [1000, 300_000])
async def test_a_bytes_result_is_served_as_it_is(make_client, size):
    client = await make_client("--model-name", "outputs")
    resp, job = await submit(client, OUTPUTS + f"?size={size}&accept=image/png")
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "done", done
    assert done["result_type"] == "image/png" and done["result_size"] == size
    assert "result" not in done
    result = await client.get(done["links"]["result"])
    assert result.content_type == "image/png"
    sync = await client.post(OUTPUTS + f"?size={size}&accept=image/png")
    assert await result.read() == await sync.read() == pattern(size)


async def test_an_upload_lives_until_the_job_ends_then_goes(
    make_client, monkeypatch, tmp_path
):
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))

    def files() -> list[str]:
        return [os.path.join(t, n) for t, _, names in os.walk(uploads) for n in names]

    client = await make_client("--model-name", "failing")
    form = aiohttp.FormData()
    form.add_field("data", os.urandom(200_000), filename="photo.png")
    resp, job = await submit(client, FAILING + "?mode=sleep&seconds=1", data=form)
    assert resp.status == 202, job
    assert job["args"]["data"] == "photo.png"
    (upload,) = files()  # kept on disk (not in memory) while the job waits and runs
    assert os.path.getsize(upload) == 200_000
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "done", done
    assert done["result"]["predictions"]["path"] == upload  # what the model read
    assert await helpers.eventually(lambda: files() == [])


@EXECUTORS
async def test_a_returned_upload_is_kept_as_the_result(make_client):
    client = await make_client("--model-name", "echo")
    image = os.urandom(200_000)
    form = aiohttp.FormData()
    form.add_field("image", image, filename="photo.png")
    form.add_field("accept", "image/png")
    resp, job = await submit(client, ECHO, data=form)
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "done", done
    result = await client.get(done["links"]["result"])
    assert result.content_type == "image/png"
    assert await result.read() == image  # the model answered with the upload


async def test_a_failed_prediction_is_an_error_job(make_client):
    client = await make_client("--model-name", "failing")
    resp, job = await submit(client, FAILING + "?mode=raise")
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "error"
    assert "the model is unhappy" in done["message"]
    assert done["error_status"] == 500
    result = await client.get(f"{FAILING}{job['id']}/result")
    assert result.status == 409
    assert "error" in (await result.json())["message"]


async def test_invalid_arguments_are_422_at_once_and_no_job(make_client):
    client = await make_client("--model-name", "outputs")
    resp, body = await submit(client, OUTPUTS + "?size=-1")
    assert resp.status == 422
    assert "size" in body["errors"]
    assert await (await client.get(OUTPUTS)).json() == []


@EXECUTORS
async def test_cancel_stops_the_worker_and_keeps_the_job_as_cancelled(make_client):
    client = await make_client("--model-name", "failing")
    executor = client.app[keys.MODELS]["failing"].executor
    first = (await (await client.post(FAILING)).json())["predictions"]["pid"]
    resp, job = await submit(client, FAILING + "?mode=sleep&seconds=60")
    url = resp.headers["Location"]
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    cancelled = await client.delete(url)
    assert cancelled.status == 200
    assert (await (await client.get(url)).json())["status"] == "cancelled"
    assert await helpers.eventually(lambda: not helpers.pid_alive(first))
    resp = await client.post(FAILING)  # a new worker took its place
    assert (await resp.json())["predictions"]["pid"] != first
    # an ended job is removed by DELETE
    assert (await client.delete(url)).status == 200
    assert (await client.get(url)).status == 404


async def test_unknown_jobs_are_404(make_client):
    client = await make_client("--model-name", "failing")
    for method, path in (
        ("GET", FAILING + "nope"),
        ("GET", FAILING + "nope/result"),
        ("DELETE", FAILING + "nope"),
    ):
        resp = await client.request(method, path)
        assert resp.status == 404, path
        assert "No prediction job" in (await resp.json())["message"]


async def test_a_running_job_is_interrupted_by_a_restart(make_client):
    client = await make_client("--model-name", "failing")
    resp, job = await submit(client, FAILING + "?mode=sleep&seconds=60")
    url = resp.headers["Location"]
    await client.close()  # the server stops while the job runs
    client = await make_client("--model-name", "failing")
    after = await (await client.get(url)).json()
    assert after["status"] == "interrupted"
    assert "send it again" in after["message"]
    done_resp, done_job = await submit(client, FAILING)
    await wait_job(client, done_resp.headers["Location"])
    await client.close()
    client = await make_client("--model-name", "failing")
    kept = await (await client.get(done_resp.headers["Location"])).json()
    assert kept["status"] == "done"
    assert kept["result"]["predictions"]["mode"] == "ok"


async def test_an_idempotency_key_runs_the_model_once(make_client):
    client = await make_client("--model-name", "failing")
    key = {"Idempotency-Key": "order-42"}
    first, job = await submit(client, FAILING + "?mode=sleep&seconds=0.2", headers=key)
    again, same = await submit(client, FAILING + "?mode=sleep&seconds=0.2", headers=key)
    assert again.status == 202 and same["id"] == job["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    await wait_job(client, first.headers["Location"])
    again, same = await submit(client, FAILING + "?mode=sleep&seconds=0.2", headers=key)
    assert same["id"] == job["id"] and same["status"] == "done"
    assert len(await (await client.get(FAILING)).json()) == 1
    # the same key for other arguments is a mistake
    other, body = await submit(client, FAILING + "?mode=ok", headers=key)
    assert other.status == 422
    assert "Idempotency-Key" in body["message"]
    bad, body = await submit(client, FAILING, headers={"Idempotency-Key": "a b"})
    assert bad.status == 400
    assert len(await (await client.get(FAILING)).json()) == 1


async def test_jobs_past_their_retention_go_with_their_results(make_client, state_dir):
    client = await make_client("--model-name", "outputs", "--job-retention", "1")
    resp, job = await submit(client, OUTPUTS + "?accept=image/png")
    url = resp.headers["Location"]
    await wait_job(client, url)
    result = state_dir / "jobs" / f"{job['id']}.result"
    assert result.exists()
    deadline = asyncio.get_running_loop().time() + 20
    while (await client.get(url)).status != 404:
        assert asyncio.get_running_loop().time() < deadline, "never removed"
        await asyncio.sleep(0.1)
    # the file goes last, once the record, its key and its events have gone
    assert await helpers.eventually(lambda: not result.exists(), timeout=20)


async def test_a_user_sees_only_their_own_jobs(make_client, tmp_path):
    keys_file = tmp_path / "keys"
    alice, bob = "alice-key-0123456789abc", "bob-key-0123456789abcde"
    keys_file.write_text(f"{alice} predict alice\n{bob} predict bob\n")
    client = await make_client(
        "--model-name", "failing", "--api-keys-file", str(keys_file)
    )
    resp, job = await submit(client, FAILING, headers={"X-API-Key": alice})
    assert job["owner"] == "key:alice"
    url = resp.headers["Location"]
    assert (await client.get(url, headers={"X-API-Key": bob})).status == 404
    listed = await (await client.get(FAILING, headers={"X-API-Key": bob})).json()
    assert listed == []
    # the same key from another user is another job
    key = {"Idempotency-Key": "k1"}
    _, a = await submit(client, FAILING, headers={"X-API-Key": alice, **key})
    _, b = await submit(client, FAILING, headers={"X-API-Key": bob, **key})
    assert a["id"] != b["id"]


async def test_the_spec_tells_of_prefer_idempotency_key_and_202(make_client):
    from openapi_spec_validator import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator

    client = await make_client("--model-name", "outputs")
    swagger = await (await client.get("/swagger.json")).json()
    openapi = await (await client.get("/openapi.json")).json()
    OpenAPIV2SpecValidator(swagger).validate()
    OpenAPIV30SpecValidator(openapi).validate()
    post = swagger["paths"][OUTPUTS]["post"]
    headers = {p["name"] for p in post["parameters"] if p["in"] == "header"}
    assert headers == {"Prefer", "Idempotency-Key", "Webhook-URL", "Webhook-Events"}
    train = swagger["paths"]["/v2/models/outputs/train/"]["post"]
    train_headers = {p["name"] for p in train["parameters"] if p["in"] == "header"}
    assert train_headers == {"Webhook-URL", "Webhook-Events"}
    assert post["responses"]["202"]["schema"] == {"$ref": "#/definitions/Job"}
    accepted = openapi["paths"][OUTPUTS]["post"]["responses"]["202"]
    assert list(accepted["content"]) == ["application/json"]
    assert accepted["headers"]["Location"]["schema"] == {"type": "string"}
    paths = set(swagger["paths"])
    assert {OUTPUTS + "{id}", OUTPUTS + "{id}/result"} <= paths
    assert set(swagger["paths"][OUTPUTS]) == {"get", "post"}
    assert set(swagger["paths"][OUTPUTS + "{id}"]) == {"get", "delete"}

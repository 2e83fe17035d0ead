"""Asynchronous predictions have quotas (all users, and each user), a
bound on the arguments they keep, and a paged list."""

from __future__ import annotations

import pytest

from tests import helpers

ASYNC = {"Prefer": "respond-async"}
FAILING = "/v2/models/failing/predict/"
SLEEP = FAILING + "?mode=sleep&seconds=60"
PREDICTOR = "predictor-key-0123456789abcdef"
OTHER = "other-key-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def listed(client, headers=None) -> list:
    response = await client.get(FAILING, headers=headers or {})
    assert response.status == 200
    return await response.json()


async def test_max_jobs_is_a_429_and_stores_nothing(make_client):
    client = await make_client("--model-name", "failing", "--max-jobs", "2", "-p", "2")
    started = []
    for _ in range(2):
        response = await client.post(SLEEP, headers=ASYNC)
        assert response.status == 202
        started.append(await response.json())
    refused = await client.post(SLEEP, headers=ASYNC)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "5"
    assert "--max-jobs" in (await refused.json())["message"]
    assert len(await listed(client)) == 2
    await client.delete(started[0]["links"]["self"])
    response = await client.post(FAILING + "?mode=ok", headers=ASYNC)
    assert response.status == 202  # room again
    await client.delete(started[1]["links"]["self"])


async def test_a_retry_at_the_limit_gets_its_job(make_client):
    client = await make_client("--model-name", "failing", "--max-jobs", "1")
    headers = {**ASYNC, "Idempotency-Key": "once"}
    first = await client.post(SLEEP, headers=headers)
    assert first.status == 202
    again = await client.post(SLEEP, headers=headers)
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    await client.delete((await first.json())["links"]["self"])


async def test_max_jobs_per_user(make_client, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{PREDICTOR} predict alice\n{OTHER} predict bob\n")
    client = await make_client(
        "--model-name", "failing", "-p", "2",
        "--api-keys-file", str(keys_file), "--max-jobs-per-user", "1",
    )  # fmt: skip
    first = await client.post(SLEEP, headers={**ASYNC, **bearer(PREDICTOR)})
    assert first.status == 202
    refused = await client.post(SLEEP, headers={**ASYNC, **bearer(PREDICTOR)})
    assert refused.status == 429
    assert "--max-jobs-per-user" in (await refused.json())["message"]
    assert len(await listed(client, bearer(PREDICTOR))) == 1
    other = await client.post(SLEEP, headers={**ASYNC, **bearer(OTHER)})
    assert other.status == 202
    for key, response in ((PREDICTOR, first), (OTHER, other)):
        await client.delete(
            (await response.json())["links"]["self"], headers=bearer(key)
        )


async def test_arguments_too_large_to_keep_are_a_413(make_client):
    client = await make_client("--model-name", "wide", "--max-job-arguments", "1024")
    response = await client.post(
        "/v2/models/wide/predict/", json={"label": "x" * 2000}, headers=ASYNC
    )
    assert response.status == 413
    assert "--max-job-arguments" in (await response.json())["message"]
    assert await (await client.get("/v2/models/wide/predict/")).json() == []
    response = await client.post(
        "/v2/models/wide/predict/", json={"label": "x" * 100}, headers=ASYNC
    )
    assert response.status == 202


async def test_the_job_list_is_paged(make_client):
    client = await make_client("--model-name", "failing")
    ids = []
    for _ in range(5):
        response = await client.post(FAILING + "?mode=ok", headers=ASYNC)
        job = await helpers.wait_job(client, (await response.json())["links"]["self"])
        ids.append(job["id"])
    seen = []
    path = FAILING + "?limit=2"
    pages = 0
    while path:
        response = await client.get(path)
        assert response.status == 200
        page = await response.json()
        assert len(page) <= 2
        seen += [job["id"] for job in page]
        pages += 1
        link = response.headers.get("Link")
        path = link[1 : link.index(">")] if link else None
    assert pages == 3
    assert seen == [j["id"] for j in await listed(client)]
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize(
    "query,status",
    [
        ("limit=0", 422),
        ("limit=1001", 422),
        ("limit=ten", 422),
        ("limit=" + "9" * 5000, 422),
        ("limit=%C2%B2", 422),
        ("after=no-such-job", 404),
    ],
)
async def test_bad_paging_is_a_4xx(make_client, query, status):
    client = await make_client("--model-name", "failing")
    response = await client.get(f"{FAILING}?{query}")
    assert response.status == status
    assert "message" in await response.json()

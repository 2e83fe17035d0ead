"""Cross-site protection and CORS: what a web page on another site can do."""

from __future__ import annotations

import pytest

TRAIN = "/v2/models/failing/train/"
PREDICT = "/v2/models/failing/predict/"
EVIL = "https://evil.example"
APP = "https://app.example"


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "failing", "--cors-origin", APP)


async def trainings(client) -> list:
    return await (await client.get(TRAIN)).json()


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": EVIL},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://other.example"},
        {"Origin": EVIL},  # a browser that does not send Sec-Fetch-Site
        {"Origin": "null"},  # a sandboxed or local page
        {"Sec-Fetch-Site": "cross-site"},  # no Origin at all
    ],
)
async def test_a_page_of_another_site_cannot_start_a_training(client, headers):
    resp = await client.post(TRAIN, headers=headers)
    assert resp.status == 403
    body = await resp.json()
    assert "refused" in body["message"] and "--cors-origin" in body["message"]
    assert await trainings(client) == []  # nothing was started


async def test_nor_cancel_one_nor_predict(client):
    started = await (await client.post(TRAIN + "?mode=sleep&seconds=30")).json()
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": EVIL}
    resp = await client.delete(TRAIN + started["uuid"], headers=cross)
    assert resp.status == 403
    assert (await client.get(TRAIN + started["uuid"])).status == 200  # still there
    assert (await client.post(PREDICT, headers=cross)).status == 403
    assert (await client.delete(TRAIN + started["uuid"])).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts, deepaas-cli: no browser headers
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://anything"},
        {"Sec-Fetch-Site": "none"},  # the user's own action
        {"Sec-Fetch-Site": "cross-site", "Origin": APP},  # allowed origin
        {"Origin": "HOST"},  # this server, as the client reached it
        {"Origin": "https://proxy.example", "X-Forwarded-Host": "proxy.example"},
    ],
)
async def test_the_servers_own_pages_and_other_clients_pass(client, headers):
    if headers.get("Origin") == "HOST":
        headers = {"Origin": f"http://{client.server.host}:{client.server.port}"}
    resp = await client.post(PREDICT, headers=headers)
    assert resp.status == 200, await resp.text()


async def test_reading_is_never_refused(client):
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": EVIL}
    assert (await client.get(TRAIN, headers=cross)).status == 200
    assert (await client.get("/v2/models/", headers=cross)).status == 200


async def test_an_allowed_origin_gets_cors_headers_and_preflights(client):
    resp = await client.post(PREDICT, headers={"Origin": APP})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    preflight = await client.options(
        PREDICT,
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


async def test_other_origins_get_no_cors_headers(client):
    resp = await client.get("/v2/models/", headers={"Origin": EVIL})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = await client.options(
        PREDICT, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 403


async def test_without_cors_origins_a_browser_page_of_the_server_still_works(
    make_client,
):
    client = await make_client("--model-name", "failing")
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1"}
    assert (await client.post(PREDICT, headers=same)).status == 200
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": EVIL}
    assert (await client.post(PREDICT, headers=cross)).status == 403
    assert (
        "Access-Control-Allow-Origin"
        not in (await client.get("/v2/models/", headers={"Origin": EVIL})).headers
    )

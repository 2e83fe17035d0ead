"""The whole server on the PostgreSQL backend (the postgres tier): jobs,
trainings, their events and restarts, as the SQLite default answers them."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from deepaas import exceptions
from deepaas.api import get_app
from deepaas.settings import Settings
from tests.api.test_jobs import FAILING, submit
from tests.api.test_train import TRAIN, wait_status
from tests.helpers import wait_job
from tests.pgcluster import free_port

pytestmark = pytest.mark.postgres


async def test_jobs_and_trainings_are_kept_in_postgresql(make_client, postgres_cluster):
    url = await postgres_cluster.new_database()
    client = await make_client("--model-name", "failing", "--database", url)
    resp, job = await submit(client, FAILING, headers={"Idempotency-Key": "k1"})
    assert resp.status == 202
    done = await wait_job(client, resp.headers["Location"])
    assert done["status"] == "done" and done["result"]["predictions"]["mode"] == "ok"
    again, same = await submit(client, FAILING, headers={"Idempotency-Key": "k1"})
    assert same["id"] == job["id"] and again.headers["Idempotent-Replayed"] == "true"
    events = await client.get(resp.headers["Location"] + "/events")
    text = await events.text()
    names = [line for line in text.splitlines() if line.startswith("event: ")]
    assert names[0] == "event: status" and names[-1] == "event: result"
    trained = await (await client.post(TRAIN)).json()
    assert (await wait_status(client, TRAIN + trained["uuid"]))["status"] == "done"
    cut_short = await (await client.post(TRAIN + "?mode=sleep&seconds=60")).json()
    running, _ = await submit(client, FAILING + "?mode=sleep&seconds=60")
    await client.close()  # the server stops while a job and a training run

    client = await make_client("--model-name", "failing", "--database", url)
    listed = {j["id"]: j for j in await (await client.get(FAILING)).json()}
    assert listed[job["id"]]["status"] == "done"
    cut = listed[running.headers["Location"].rsplit("/", 1)[1]]
    assert cut["status"] == "interrupted" and "send it again" in cut["message"]
    trainings = {t["uuid"]: t for t in await (await client.get(TRAIN)).json()}
    assert trainings[trained["uuid"]]["status"] == "done"
    assert trainings[cut_short["uuid"]]["status"] == "error"  # as upstream's say
    kept = await (await client.get(resp.headers["Location"])).json()
    assert kept["result"]["predictions"]["mode"] == "ok"
    # kept events are read from the database by a server that did not publish them
    replay = await client.get(resp.headers["Location"] + "/events")
    assert (await replay.text()).count("event: ") == text.count("event: ")


async def test_an_unreachable_database_fails_the_start(testmodels_installed, tmp_path):
    url = f"postgresql://deepaas:hidden@127.0.0.1:{free_port()}/state"
    settings = Settings.parse(
        ["--model-name", "failing", "--state-dir", str(tmp_path), "--database", url]
    )
    client = TestClient(TestServer(get_app(settings)))
    try:
        with pytest.raises(exceptions.StoreError) as caught:
            await client.start_server()
    finally:
        await client.close()
    assert "Cannot use the state database" in caught.value.message
    assert "deepaas:***@127.0.0.1" in caught.value.message
    assert "hidden" not in caught.value.message

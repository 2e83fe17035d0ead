"""Servers sharing a PostgreSQL database (the postgres tier): the work of a
server that dies is ended by another within the lease."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest

from tests import helpers
from tests.integration.test_run import get_json, post_json

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PREDICT = "/v2/models/failing/predict/"
TRAIN = "/v2/models/failing/train/"
# Short, so that a dead replica's work is ended soon; long enough that a live
# one starved of CPU on a loaded 2-core machine still renews it in time.
LEASE = 6.0


def submit_job(server: helpers.Server, query: str) -> dict:
    request = urllib.request.Request(
        server.url + PREDICT + query,
        data=b"",
        method="POST",
        headers={"Prefer": "respond-async"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 202
        return json.load(resp)


async def test_the_work_of_a_killed_server_is_interrupted_by_another(
    model_sites, make_client, postgres_cluster, tmp_path
):
    url = await postgres_cluster.new_database()
    shared = ["--database", url, "--replica-lease", str(LEASE)]
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--model-name", "failing", "--state-dir", str(tmp_path / "a"), *shared]
    with helpers.running_server(args, env) as doomed:
        job = submit_job(doomed, "?mode=sleep&seconds=120")
        training = post_json(doomed.url + TRAIN + "?mode=sleep&seconds=120")
        assert get_json(doomed.url + PREDICT + job["id"])["status"] == "running"
        doomed.proc.send_signal(signal.SIGKILL)  # no chance to say anything
        doomed.communicate()

    survivor = await make_client("--model-name", "failing", *shared)

    async def ended() -> bool:
        seen = [
            await (await survivor.get(path)).json()
            for path in (PREDICT + job["id"], TRAIN + training["uuid"])
        ]
        return all(each["status"] != "running" for each in seen)

    # within the lease, a third of it for the sweep, and room for a slow machine
    assert await helpers.eventually(ended, timeout=LEASE * 5 + 10)
    cut = await (await survivor.get(PREDICT + job["id"])).json()
    assert cut["status"] == "interrupted" and "send it again" in cut["message"]
    cut = await (await survivor.get(TRAIN + training["uuid"])).json()
    assert cut["status"] == "error" and "Interrupted" in cut["message"]
    # and its own work runs on
    resp = await survivor.post(
        PREDICT + "?mode=ok", headers={"Prefer": "respond-async"}
    )
    mine = await helpers.wait_job(survivor, resp.headers["Location"])
    assert mine["status"] == "done"

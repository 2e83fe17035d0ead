"""Two servers sharing one PostgreSQL database (the postgres tier): what a
client asks either gets the same answer, whichever started the work.
Results, logs and events are read from the database; a DELETE sent to the
server that does not run a record stops it on the one that does; limits
count both servers' records."""

from __future__ import annotations

import asyncio
import collections
import json
import time

import pytest

from deepaas.api import keys
from tests.api.test_jobs import FAILING, submit
from tests.api.test_train import TRAIN, wait_status
from tests.helpers import wait_job

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pair(make_client, postgres_cluster, tmp_path):
    """Two servers of the failing model on one fresh database, each with
    a state directory of its own."""
    url = await postgres_cluster.new_database()

    async def server(name: str, *argv: str):
        return await make_client(
            "--model-name", "failing", "--database", url,
            "--state-dir", str(tmp_path / name), *argv,
        )  # fmt: skip

    return server


async def until(check, timeout: float = 30.0, interval: float = 0.05):
    """``await check()`` until it is true; its last value."""
    deadline = time.monotonic() + timeout
    while not (value := await check()) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
    return value


async def test_a_job_is_answered_alike_by_either_server(pair, tmp_path):
    a, b = await pair("a"), await pair("b")
    resp, job = await submit(a, FAILING + "?mode=big")
    location = resp.headers["Location"]
    done = await wait_job(b, location)
    assert done["status"] == "done"
    assert done["result"]["predictions"]["blob"] == "x" * 200_000  # inline, from b
    result = await b.get(location + "/result")
    assert result.status == 200
    assert result.headers["Content-Type"].startswith("application/json")
    body = await result.read()
    assert int(result.headers["Content-Length"]) == len(body) == done["result_size"]
    assert body == await (await a.get(location + "/result")).read()
    assert not list((tmp_path / "a").rglob("*.result"))  # in the database only
    listed = await (await b.get(FAILING)).json()
    assert [j["id"] for j in listed] == [job["id"]]
    replay = await (await b.get(location + "/events")).text()
    assert replay == await (await a.get(location + "/events")).text()
    assert (await b.delete(location)).status == 200  # an ended job is removed
    assert (await a.get(location + "/result")).status == 404


async def test_a_training_log_is_answered_alike_by_either_server(pair, tmp_path):
    argv = ("--training-log-max-bytes", "20000")
    a, b = await pair("a", *argv), await pair("b", *argv)
    started = await (await a.post(TRAIN + "?mode=flood&seconds=1")).json()
    path = TRAIN + started["uuid"]
    assert (await wait_status(b, path))["status"] == "done"
    tail = await (await b.get(path + "/log?tail=3")).text()
    assert tail.splitlines() == [
        f"line {n:06d} " + "x" * 37 for n in (3998, 3999, 4000)
    ]
    assert tail == await (await a.get(path + "/log?tail=3")).text()
    whole = await (await b.get(path + "/log")).text()
    assert whole == await (await a.get(path + "/log")).text()
    first, *kept = whole.splitlines()
    assert "were cut (--training-log-max-bytes 20000)" in first
    assert kept[-1].startswith("line 004000") and len(whole) <= 20000 + 200
    assert not list((tmp_path / "a").rglob("*.log"))  # removed once it ended


async def test_events_of_a_record_of_one_server_are_followed_on_the_other(pair):
    a, b = await pair("a"), await pair("b")
    resp, _ = await submit(a, FAILING + "?mode=sleep&seconds=1")
    location = resp.headers["Location"]
    # the stream opens on b while the job runs on a, and ends with it
    text = await (await b.get(location + "/events")).text()
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert names[0] == "status" and names[-1] == "result"
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert json.loads(data[-1])["status"] == "done"
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1))  # none missed, none twice


async def test_a_delete_sent_to_the_other_server_stops_the_record(pair):
    a, b = await pair("a"), await pair("b")
    resp, _ = await submit(a, FAILING + "?mode=sleep&seconds=60")
    location = resp.headers["Location"]
    await until(lambda: _running_on(a, location))
    began = time.monotonic()
    cancelled = await b.delete(location)
    assert cancelled.status == 200
    assert (await cancelled.json())["status"] == "cancelled"
    assert time.monotonic() - began < 10  # told, not waited out
    assert (await (await a.get(location)).json())["status"] == "cancelled"
    assert await until(_idle(a))  # stopped where it ran (its task ends just after)
    training = await (await a.post(TRAIN + "?mode=sleep&seconds=60")).json()
    path = TRAIN + training["uuid"]
    gone = await b.delete(path)
    assert gone.status == 200 and (await gone.json())["uuid"] == training["uuid"]
    assert (await a.get(path)).status == 404 and (await b.get(path)).status == 404


def _idle(client):
    async def check() -> bool:
        return not client.app[keys.JOBS]._tasks

    return check


async def _running_on(client, location: str) -> bool:
    return (await (await client.get(location)).json())["status"] == "running"


async def test_limits_count_the_records_of_both_servers(pair):
    a, b = await pair("a", "--max-jobs", "3"), await pair("b", "--max-jobs", "3")
    answers = await asyncio.gather(
        *(submit((a, b)[n % 2], FAILING + "?mode=sleep&seconds=60") for n in range(8))
    )
    statuses = sorted(resp.status for resp, _ in answers)
    assert statuses == [202] * 3 + [429] * 5
    refused = next(body for resp, body in answers if resp.status == 429)
    assert "3" in refused["message"]
    # one ended frees its place for either server
    first = next(resp.headers["Location"] for resp, _ in answers if resp.status == 202)
    assert (await a.delete(first)).status == 200
    resp, _ = await submit(b, FAILING)
    assert resp.status == 202


async def test_a_stream_goes_on_when_the_listening_connection_is_lost(
    pair, postgres_cluster
):
    import asyncpg

    a, b = await pair("a"), await pair("b")
    resp, _ = await submit(a, FAILING + "?mode=sleep&seconds=3")
    location = resp.headers["Location"]
    following = asyncio.ensure_future(b.get(location + "/events"))
    await until(lambda: _running_on(b, location))
    admin = await asyncpg.connect(postgres_cluster.url())
    try:
        # every server's listening connection is cut (b's among them)
        cut = await admin.fetchval(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'deepaas listening'"
        )
    finally:
        await admin.close()
    assert cut == 2
    text = await (await following).text()
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1)) and "event: result" in text


async def test_each_webhook_is_delivered_once_by_one_of_the_servers(pair):
    import threading

    from tests.integration.test_webhooks_run import Receiver

    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    allow = ("--webhook-allow", "127.0.0.1:*")
    a, b = await pair("a", *allow), await pair("b", *allow)
    try:
        for n in range(6):
            resp, _ = await submit(
                (a, b)[n % 2], FAILING,
                headers={"Webhook-URL": hook, "Webhook-Events": "start,completed"},
            )  # fmt: skip
            assert resp.status == 202
        await until(lambda: _received(receiver, 12))
        await asyncio.sleep(1)  # both senders had time to make any more
        types = collections.Counter(p["type"] for p in receiver.received)
        assert types == {"prediction.start": 6, "prediction.completed": 6}
        ids = {p["data"]["id"] for p in receiver.received}
        assert len(ids) == 6
    finally:
        receiver.shutdown()


async def _received(receiver, count: int) -> bool:
    return len(receiver.received) >= count

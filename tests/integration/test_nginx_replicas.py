"""Three real ``deepaas-run`` replicas on one PostgreSQL database, behind
nginx round robin (the postgres tier): every answer is right whichever
replica gives it; a replica killed mid-work has its records interrupted
within the lease and one webhook each; idempotency and quotas hold across
replicas; and a soak with a replica killed and restarted loses and
duplicates nothing."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests import helpers
from tests.integration.test_webhooks_run import Receiver
from tests.nginx import Balancer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PREDICT = "/v2/models/failing/predict/"
TRAIN = "/v2/models/failing/train/"
# Short, so that a dead replica's work is ended soon; long enough that a live
# one starved of CPU on a loaded 2-core machine still renews it in time.
LEASE = 6.0


class Replicas:
    """``count`` replicas of the failing model sharing ``database``, each on
    a port of its own for good (a restarted one comes back on it)."""

    def __init__(self, database: str, root, site, count: int, *extra: str) -> None:
        self.env = helpers.env_with(site)
        self.args = {
            port: [
                "--model-name",
                "failing",
                "--database",
                database,
                "--replica-lease",
                str(LEASE),
                "--state-dir",
                str(root / str(port)),
                "--webhook-allow",
                "127.0.0.1:*",
                *extra,
            ]  # fmt: skip
            for port in (helpers.free_port() for _ in range(count))
        }
        self.servers: dict[int, helpers.Server] = {}
        for port in self.args:
            self.start(port, wait=False)
        for server in self.servers.values():
            server.wait_ready()

    def start(self, port: int, wait: bool = True) -> None:
        self.servers[port] = helpers.Server(self.args[port], self.env, port=port)
        if wait:
            self.servers[port].wait_ready()

    def kill(self, port: int) -> None:
        server = self.servers.pop(port)
        server.proc.send_signal(signal.SIGKILL)  # nothing said, nothing saved
        server.communicate()
        server.close()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
            server.close()


@pytest.fixture
def replicas(model_sites, postgres_cluster, tmp_path) -> Iterator:
    """Start replicas (``start(count, *options)``) and nginx in front of
    them; all stopped at the end."""
    started: list[tuple[Replicas, Balancer]] = []

    def start(count: int = 3, *extra: str) -> tuple[Replicas, Balancer]:
        with concurrent.futures.ThreadPoolExecutor(1) as thread:  # no loop here
            database = thread.submit(
                asyncio.run, postgres_cluster.new_database()
            ).result()
        group = Replicas(database, tmp_path, model_sites["testmodels"], count, *extra)
        balancer = Balancer(list(group.args))
        started.append((group, balancer))
        return group, balancer

    yield start
    for group, balancer in started:
        balancer.stop()
        group.stop()


def call(
    url: str, method: str = "GET", headers: dict | None = None, timeout: float = 60
) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; an error status is returned."""
    request = urllib.request.Request(
        url, data=b"" if method == "POST" else None, method=method,
        headers=headers or {},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def submit(base: str, query: str, **headers: str) -> tuple[int, dict, dict]:
    status, answered, body = call(
        base + PREDICT + query, "POST", {"Prefer": "respond-async", **headers}
    )
    return status, answered, json.loads(body)


def until(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def status_of(url: str) -> str:
    return json.loads(call(url)[2])["status"]


def test_every_answer_is_right_whichever_replica_gives_it(replicas):
    _, nginx = replicas(3, "--training-log-max-bytes", "20000")
    jobs = [submit(nginx.url, f"?mode=big&n={n}")[2] for n in range(6)]
    answered_by = collections.Counter()
    for job in jobs:
        url = nginx.url + PREDICT + job["id"]
        assert until(lambda url=url: status_of(url) == "done")
        for _ in range(3):  # the same, from every replica in turn
            status, headers, body = call(url)
            answered_by[headers["X-Upstream"]] += 1
            got = json.loads(body)
            assert got["id"] == job["id"] and got["status"] == "done"
            assert got["result"]["predictions"]["blob"] == "x" * 200_000
            status, _, raw = call(url + "/result")
            assert status == 200 and json.loads(raw) == got["result"]
    assert len(answered_by) == 3  # round robin: all three answered
    listed = json.loads(call(nginx.url + PREDICT + "?limit=100")[2])
    assert {j["id"] for j in listed} == {j["id"] for j in jobs}

    # events of a running job, followed through whichever replica
    _, headers, body = call(nginx.url + PREDICT + "?mode=sleep&seconds=1", "POST",
                            {"Prefer": "respond-async"})  # fmt: skip
    url = nginx.url + headers["Location"]
    status, _, stream = call(url + "/events")
    names = [ln[7:] for ln in stream.decode().splitlines() if ln.startswith("event: ")]
    assert status == 200 and names[0] == "status" and names[-1] == "result"

    # a training's log, from every replica
    training = json.loads(call(nginx.url + TRAIN + "?mode=flood&seconds=1", "POST")[2])
    path = nginx.url + TRAIN + training["uuid"]
    assert until(lambda: status_of(path) == "done")
    tails = {call(path + "/log?tail=2")[2] for _ in range(3)}
    assert len(tails) == 1 and tails.pop().decode().splitlines()[-1].startswith(
        "line 004000"
    )

    # a cancel reaches the replica running the job, whichever gets it
    for _ in range(3):
        _, headers, _ = call(nginx.url + PREDICT + "?mode=sleep&seconds=60", "POST",
                             {"Prefer": "respond-async"})  # fmt: skip
        url = nginx.url + headers["Location"]
        status, _, body = call(url, "DELETE")
        assert status == 200 and json.loads(body)["status"] == "cancelled"
        assert status_of(url) == "cancelled"


def test_a_killed_replica_has_its_work_interrupted_and_told_once(replicas):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = {"Webhook-URL": f"http://127.0.0.1:{receiver.server_address[1]}/hook"}
    group, nginx = replicas(3)
    doomed = next(iter(group.servers))
    direct = group.servers[doomed].url
    _, _, job = submit(direct, "?mode=sleep&seconds=120", **hook)
    status, _, body = call(direct + TRAIN + "?mode=sleep&seconds=120", "POST", hook)
    training = json.loads(body)
    group.kill(doomed)
    job_url = nginx.url + PREDICT + job["id"]
    training_url = nginx.url + TRAIN + training["uuid"]
    # within the lease and a third of it for the sweep, with room for CI
    assert until(
        lambda: (
            status_of(job_url) != "running" and status_of(training_url) != "running"
        ),
        timeout=LEASE * 5 + 20,
    )
    assert status_of(job_url) == "interrupted" and status_of(training_url) == "error"
    assert until(lambda: len(receiver.received) >= 2, timeout=30)
    time.sleep(LEASE * 2)  # every sweep since has given nothing more
    kinds = sorted(payload["type"] for payload in receiver.received)
    assert kinds == ["prediction.completed", "training.completed"]
    receiver.shutdown()


def test_idempotency_and_quotas_hold_across_replicas(replicas):
    # A lease long enough that no replica stalled by a loaded machine is
    # taken for gone (its job "one" then ended as interrupted by another,
    # which frees a place).
    _, nginx = replicas(3, "--max-jobs", "4", "--replica-lease", "15")
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        same_key = list(
            pool.map(
                lambda _: submit(
                    nginx.url, "?mode=sleep&seconds=60", **{"Idempotency-Key": "one"}
                ),  # fmt: skip
                range(12),
            )
        )
    assert {body["id"] for _, _, body in same_key} == {same_key[0][2]["id"]}
    assert sorted({status for status, _, _ in same_key}) == [202]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        many = list(
            pool.map(lambda _: submit(nginx.url, "?mode=sleep&seconds=60"), range(12))
        )
    statuses = collections.Counter(status for status, _, _ in many)
    # 4 running at most, "one" among them
    assert statuses == {202: 3, 429: 9}, [(s, b) for s, _, b in many if s != 429]


def wait_for_end(url: str, timeout: float = 60) -> None:
    """Poll a job until it has ended (a replica killed meanwhile: its
    answers are 502s until nginx leaves it out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _, body = call(url)
        except OSError:
            status = 0
        if status == 200 and json.loads(body)["status"] != "running":
            return
        time.sleep(0.05)


def test_a_soak_with_a_replica_killed_and_restarted_loses_nothing(replicas):
    group, nginx = replicas(3)
    victim = list(group.servers)[1]
    keys: dict[str, str] = {}  # Idempotency-Key -> the job it started
    stop = threading.Event()
    errors: list[str] = []

    def client(n: int) -> None:
        while not stop.is_set():
            key = uuid.uuid4().hex
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the same key until answered
                try:
                    status, _, body = submit(
                        nginx.url, "?mode=sleep&seconds=0.2",
                        **{"Idempotency-Key": key},
                    )  # fmt: skip
                except (OSError, ValueError):
                    status = 0
                if status == 202:
                    keys[key] = body["id"]
                    wait_for_end(nginx.url + PREDICT + body["id"])
                    break
                if status not in (0, 429, 502, 503, 504):
                    errors.append(f"{status}: {body}")
                    return
                time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert until(lambda: len(keys) >= 20, timeout=60)
        group.kill(victim)
        count = len(keys)
        assert until(lambda: len(keys) >= count + 20, timeout=60)  # goes on
        group.start(victim)
        count = len(keys)
        assert until(lambda: len(keys) >= count + 20, timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors
    assert len(set(keys.values())) == len(keys)  # one job per key
    listed: list[dict] = []
    url = nginx.url + PREDICT + "?limit=100"
    while url:
        status, headers, body = call(url)
        listed += json.loads(body)
        link = headers.get("Link")
        url = nginx.url + link[1 : link.index(">")] if link else ""
    assert sorted(j["id"] for j in listed) == sorted(keys.values())  # none lost
    assert until(
        lambda: all(
            status_of(nginx.url + PREDICT + job) != "running" for job in keys.values()
        ),
        timeout=LEASE * 5 + 20,
    )
    ended = collections.Counter(
        status_of(nginx.url + PREDICT + j) for j in keys.values()
    )
    assert set(ended) <= {"done", "interrupted"} and ended["done"] > 0

"""Probes, Prometheus metrics and request ids, on the real app."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal

import aiohttp
import pytest
import stevedore
from prometheus_client.parser import text_string_to_metric_families

from deepaas.api import keys
from deepaas.api.metrics import METRICS
from tests import helpers
from tests.api.test_train import wait_status

PREDICT = "/v2/models/failing/predict/"
TRAIN = "/v2/models/failing/train/"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "failing")


class TestProbes:
    async def test_healthz_answers(self, client):
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}

    async def test_readyz_when_every_worker_is_warm(self, make_client):
        client = await make_client("--model-name", "failing", "-p", "2")
        resp = await client.get("/readyz")
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "ready"
        assert body["models"]["failing"]["workers"] == 2
        assert body["models"]["failing"]["alive"] == 2

    @pytest.mark.slow  # waits out real time
    async def test_readyz_is_503_while_warming_and_calls_wait(
        self, make_client, monkeypatch
    ):
        monkeypatch.setenv("SLOW_WARM_SECONDS", "3")
        client = await make_client("--model-name", "slow-warm", ready=False)
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "starting"
        assert "slow-warm" in body["reason"]
        assert (await client.get("/healthz")).status == 200
        # The metadata is served at once; a prediction waits for the worker.
        assert (await client.get("/v2/models/slow-warm/")).status == 200
        resp = await client.post("/v2/models/slow-warm/predict/")
        assert resp.status == 200
        assert (await resp.json())["predictions"] == {"warmed": True}
        assert (await client.get("/readyz")).status == 200

    async def test_readyz_says_why_start_up_failed(
        self, make_client, model_sites, monkeypatch
    ):
        monkeypatch.syspath_prepend(str(model_sites["broken"]))
        # stevedore lists a group once per process; this test adds models.
        monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})
        client = await make_client("--model-name", "bad-warm", ready=False)
        startup = client.app[keys.STARTUP]
        assert await helpers.eventually(lambda: startup.failed is not None)
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "failed"
        assert "weights file missing" in body["reason"]
        # A call gets a clear JSON error, not a wait that never ends.
        resp = await client.post("/v2/models/bad-warm/predict/")
        assert resp.status == 503
        assert "message" in await resp.json()

    async def test_readyz_is_503_while_no_worker_is_alive(self, client):
        (pid,) = client.app[keys.MODELS]["failing"].executor.pids()
        os.kill(pid, signal.SIGKILL)
        seen = []

        async def status_becomes(wanted: int) -> bool:
            for _ in range(1500):  # 30 s at most
                resp = await client.get("/readyz")
                seen.append((resp.status, await resp.json()))
                if resp.status == wanted:
                    return True
                await asyncio.sleep(0.02)
            return False

        assert await status_becomes(503), seen[-1]
        assert seen[-1][1]["status"] == "unavailable"
        assert "failing" in seen[-1][1]["reason"]
        assert await status_becomes(200), seen[-1]
        assert seen[-1][1]["models"]["failing"]["restarts"] == 1


class TestMetrics:
    async def test_counters_move_with_traffic(self, client):
        before = samples(await (await client.get("/metrics")).text())
        for _ in range(3):
            assert (await client.post(PREDICT)).status == 200
        assert (await client.post(PREDICT + "?seconds=abc")).status == 422
        assert (await client.post(PREDICT + "?mode=raise")).status == 500
        form = aiohttp.FormData()
        form.add_field("data", b"x" * 1000, filename="blob.bin")
        assert (await client.post(PREDICT, data=form)).status == 200
        training = await (await client.post(TRAIN)).json()
        await wait_status(client, TRAIN + training["uuid"])
        assert (await client.get("/no/such/path")).status == 404

        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        after = samples(await resp.text())
        route = "/v2/models/failing/predict"

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "deepaas_http_requests_total"
        assert moved(requests, method="POST", route=route, status="200") == 4
        assert moved(requests, method="POST", route=route, status="422") == 1
        assert moved(requests, method="POST", route=route, status="500") == 1
        assert moved(requests, method="GET", route="unmatched", status="404") == 1
        latency = "deepaas_http_request_duration_seconds_count"
        assert moved(latency, method="POST", route=route) == 6
        calls = "deepaas_model_call_duration_seconds_count"
        assert moved(calls, model="failing", method="predict", outcome="ok") == 4
        assert moved(calls, model="failing", method="predict", outcome="error") == 1
        # the worker refused ?seconds=abc: the model never ran
        assert moved(calls, model="failing", method="predict", outcome="invalid") == 1
        assert moved(calls, model="failing", method="train", outcome="ok") == 1
        assert moved("deepaas_upload_bytes_total", route=route) == 1000
        assert value(after, "deepaas_workers", model="failing") == 1
        assert value(after, "deepaas_workers_configured", model="failing") == 1
        assert value(after, "deepaas_workers_busy", model="failing") == 0
        assert value(after, "deepaas_trainings", model="failing", status="done") >= 1

    async def test_odd_methods_do_not_grow_the_series(self, client):
        for method in ("PROPFIND", "MKCOL", "LOCK"):  # WebDAV, not ours
            assert (await client.request(method, "/v2/models/")).status == 405
        found = samples(await (await client.get("/metrics")).text())
        requests = "deepaas_http_requests_total"
        labels = dict(method="OTHER", route="unmatched", status="405")
        assert value(found, requests, **labels) == 3
        assert not [k for k in found if ("method", "PROPFIND") in k[1]]

    async def test_restarts_are_counted(self, client):
        assert (await client.post(PREDICT + "?mode=exit")).status == 500
        found = samples(await (await client.get("/metrics")).text())
        assert value(found, "deepaas_worker_restarts_total", model="failing") == 1

    async def test_busy_workers_show_while_a_call_runs(self, client):
        training = await (await client.post(TRAIN + "?mode=sleep&seconds=30")).json()

        async def busy() -> float:
            found = samples(await (await client.get("/metrics")).text())
            return value(found, "deepaas_workers_busy", model="failing")

        for _ in range(200):
            if await busy() == 1:
                break
        assert await busy() == 1
        await client.delete(TRAIN + training["uuid"])

    async def test_off_with_nometrics_endpoint(self, make_client):
        client = await make_client("--model-name", "failing", "--nometrics-endpoint")
        resp = await client.get("/metrics")
        assert resp.status == 404
        assert "message" in await resp.json()
        assert METRICS not in client.app
        assert (await client.post(PREDICT)).status == 200

    async def test_under_the_base_path(self, make_client):
        client = await make_client("--model-name", "failing", "--base-path", "x")
        assert (await client.get("/x/metrics")).status == 200
        assert (await client.get("/x/healthz")).status == 200
        assert (await client.get("/x/readyz")).status == 200


class TestRequestId:
    async def test_the_clients_id_comes_back(self, client):
        resp = await client.post(PREDICT, headers={"X-Request-ID": "job-42.a"})
        assert resp.headers["X-Request-ID"] == "job-42.a"

    @pytest.mark.parametrize("given", [None, "", "has space", "x" * 200, "caf\u00e9"])
    async def test_a_fresh_id_otherwise(self, client, given):
        headers = {} if given is None else {"X-Request-ID": given}
        resp = await client.get("/v2/models/", headers=headers)
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/no/such/path", 404),
            ("POST", PREDICT + "?seconds=abc", 422),
            ("POST", PREDICT + "?mode=raise", 500),
            ("PUT", "/v2/models/", 405),
        ],
    )
    async def test_errors_carry_it_too(self, client, method, path, status):
        resp = await client.request(method, path, headers={"X-Request-ID": "err-1"})
        assert resp.status == status
        assert resp.headers["X-Request-ID"] == "err-1"
        assert "message" in await resp.json()

    async def test_each_request_gets_its_own(self, client):
        ids = {
            (await client.get("/v2/models/")).headers["X-Request-ID"] for _ in range(5)
        }
        assert len(ids) == 5


async def test_readyz_says_degraded_while_a_worker_cannot_be_replaced(make_client):
    client = await make_client("--model-name", "failing", "-p", "2")
    executor = client.app[keys.MODELS]["failing"].executor
    assert (await client.get("/readyz")).status == 200  # the connection is open
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # No descriptor to spare: a replacement's socket cannot be made.
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard)
        )
        resp = await client.post("/v2/models/failing/predict/?mode=exit")
        assert resp.status == 500
        assert await helpers.eventually(lambda: executor.health().start_failures)
        resp = await client.get("/readyz")
        body = await resp.json()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resp.status == 200
    assert body["status"] == "degraded"
    assert body["models"]["failing"]["missing"] == 1
    assert await helpers.eventually(lambda: executor.health().alive == 2, timeout=15)
    assert (await (await client.get("/readyz")).json())["status"] == "ready"

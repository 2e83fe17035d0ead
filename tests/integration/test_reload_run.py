"""SIGHUP to a real deepaas-run under load: a reinstalled model package is
served without a failed request; a broken one leaves the previous serving."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request

import pytest

from tests import helpers
from tests.integration.test_faults import readiness
from tests.integration.test_run import get_json

pytestmark = pytest.mark.slow  # a real deepaas-run, packages installed for real

PREDICT = "/v2/models/reloadable/predict/"


class Load:
    """Clients sending predictions one after the other in threads, until
    stopped, each keeping what it was answered."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url + PREDICT + "?text=load"
        self.releases: list[str] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self) -> None:
        while not self.stopping.is_set():
            request = urllib.request.Request(self.url, data=b"", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    self.releases.append(json.load(resp)["predictions"]["release"])
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def reloaded_to(server: helpers.Server, generation: int) -> bool:
    body = readiness(server)
    model = body.get("models", {}).get("reloadable", {})
    reload = model.get("reload", {})
    return reload.get("status") in ("reloaded", "failed") and (
        reload.get("generation") == generation
    )


def test_sighup_serves_the_reinstalled_package_without_a_failed_request(tmp_path):
    site = tmp_path / "site"
    helpers.install_release(site, 1)
    env = helpers.env_with(site)
    args = ["--model-name", "reloadable", "--state-dir", str(tmp_path / "state")]
    with helpers.running_server([*args, "--workers", "2"], env) as server:
        with Load(server.url) as load:
            assert helpers.wait_until(lambda: len(load.releases) >= 50)
            helpers.install_release(site, 2)
            server.proc.send_signal(signal.SIGHUP)
            assert helpers.wait_until(lambda: reloaded_to(server, 2), timeout=120)
            served = len(load.releases)
            assert helpers.wait_until(lambda: len(load.releases) >= served + 50)
        assert load.failures == []
        assert load.releases[0] == "1" and load.releases[-1] == "2"
        body = readiness(server)
        assert body["status"] == "ready"
        processes = body["models"]["reloadable"]["processes"]
        assert [p["generation"] for p in processes] == [2, 2]
        meta = get_json(server.url + "/v2/models/reloadable/")
        assert meta["version"] == "2"
        swagger = get_json(server.url + "/swagger.json")
        parameters = swagger["paths"][PREDICT]["post"]["parameters"]
        assert "shout" in {p["name"] for p in parameters}

        # A broken release: the server says why and serves release 2.
        helpers.install_release(site, 3, broken=True)
        server.proc.send_signal(signal.SIGHUP)
        assert helpers.wait_until(
            lambda: readiness(server)["status"] == "degraded", timeout=60
        )
        assert "release 3 is broken" in readiness(server)["reason"]
        with Load(server.url, clients=2) as load:
            assert helpers.wait_until(lambda: len(load.releases) >= 20)
        assert load.failures == [] and set(load.releases) == {"2"}
        assert server.stop() == 0
    assert "SIGHUP: reloading" in server.stderr
    assert "Model 'reloadable': serving its new version 2" in server.stderr
    assert "could not be reloaded; it serves its previous version" in server.stderr
    assert "release 3 is broken" in server.stderr

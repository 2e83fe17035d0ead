"""Authentication on the real deepaas-run process: what it says at start,
and keys reloaded on SIGHUP."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # real deepaas-run processes

OLD = "old-key-0123456789abcdef"
NEW = "new-key-0123456789abcdef"


def status(url: str, key: str) -> int:
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_sighup_reloads_the_keys_without_a_restart(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{OLD} predict\n")
    args = ["--state-dir", str(tmp_path), "--api-keys-file", str(keys)]
    with helpers.running_server(args, helpers.env_with(None)) as server:
        predict = server.url + "/v2/models/deepaas-test/predict/"
        assert status(predict, OLD) == 200
        assert status(predict, NEW) == 401
        pid = server.proc.pid
        keys.write_text(f"{NEW} predict\n")
        server.proc.send_signal(signal.SIGHUP)
        assert helpers.wait_until(lambda: status(predict, NEW) == 200)
        assert status(predict, OLD) == 401
        # a broken file keeps the keys in use
        keys.write_text("broken\n")
        server.proc.send_signal(signal.SIGHUP)
        assert helpers.wait_until(
            lambda: "previous ones stay" in server.output()[1], timeout=30
        )
        assert status(predict, NEW) == 200
        assert server.proc.pid == pid and server.proc.poll() is None
        assert server.stop() == 0
    assert "Auth:  on: API keys (1 in " in server.stdout
    assert "Open without credentials: /healthz, /readyz" in server.stdout


def test_the_banner_says_when_auth_is_off_and_what_is_open(tmp_path):
    with helpers.running_server(
        ["--state-dir", str(tmp_path)], helpers.env_with(None)
    ) as server:
        assert server.stop() == 0
    assert "Auth:  off: whoever reaches this port may predict" in server.stdout
    keys = tmp_path / "keys"
    keys.write_text(f"{OLD} admin\n")
    args = [
        "--state-dir", str(tmp_path), "--api-keys-file", str(keys),
        "--public-docs", "--public-metrics", "--base-path", "models",
    ]  # fmt: skip
    with helpers.running_server(
        args, helpers.env_with(None), ready_path="/models/readyz"
    ) as server:
        assert server.stop() == 0
    assert (
        "Open without credentials: /models/healthz, /models/readyz, "
        "/models/v2/health/live, /models/v2/health/ready, "
        "/models/swagger.json, /models/openapi.json, /models/api, /models/metrics"
    ) in server.stdout

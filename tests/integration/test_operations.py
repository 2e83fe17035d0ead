"""Restarts, crashes and shutdowns of a real deepaas-run: nothing is lost."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests import helpers
from tests.integration.test_run import get_json, post_json, run_once

pytestmark = pytest.mark.slow  # real deepaas-run processes


def wait_status(url: str, statuses=("done", "error"), timeout: float = 30) -> dict:
    body: dict = {}

    def finished() -> bool:
        nonlocal body
        body = get_json(url)
        return body["status"] in statuses

    assert helpers.wait_until(finished, timeout), body
    return body


def server_args(state_dir, *extra: str) -> list[str]:
    return ["--model-name", "failing", "--state-dir", str(state_dir), *extra]


def test_trainings_survive_a_crash_and_running_ones_are_marked(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    with helpers.running_server(server_args(tmp_path, "-p", "2"), env) as server:
        train = server.url + "/v2/models/failing/train/"
        done = post_json(train + "?mode=chatty")
        wait_status(train + done["uuid"])
        running = post_json(train + "?mode=sleep&seconds=120")
        # two workers, and multiprocessing's resource tracker
        workers = helpers.children(server.proc.pid)
        assert len(workers) >= 2
        server.proc.kill()  # SIGKILL: no chance to clean up
        server.communicate()
    # the workers notice their server is gone and exit by themselves
    assert helpers.wait_until(lambda: not any(map(helpers.pid_alive, workers)), 10)
    with helpers.running_server(server_args(tmp_path), env) as server:
        train = server.url + "/v2/models/failing/train/"
        kept = get_json(train + done["uuid"])
        assert kept["status"] == "done"
        assert kept["args"] == {"mode": "chatty", "seconds": 0.0}
        assert kept["result"]["output"]["mode"] == "chatty"
        assert kept["date"] == done["date"]
        interrupted = get_json(train + running["uuid"])
        assert interrupted["status"] == "error"
        assert "Interrupted by a restart" in interrupted["message"]
        with urllib.request.urlopen(train + done["uuid"] + "/log") as resp:
            assert "last line" in resp.read().decode()
        assert len(get_json(train)) == 2
    assert "recorded as interrupted" in server.stderr


def test_sigterm_records_running_trainings_as_interrupted(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    with helpers.running_server(server_args(tmp_path), env) as server:
        running = post_json(
            server.url + "/v2/models/failing/train/?mode=sleep&seconds=60"
        )
        assert server.stop(signal.SIGTERM) == 0
    with helpers.running_server(server_args(tmp_path), env) as server:
        body = get_json(server.url + "/v2/models/failing/train/" + running["uuid"])
        assert body["status"] == "error"
        assert "server shut down" in body["message"]


def test_sigterm_lets_an_inflight_predict_finish(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    result: dict = {}
    with helpers.running_server(server_args(tmp_path), env) as server:

        def slow_predict() -> None:
            url = server.url + "/v2/models/failing/predict/?mode=sleep&seconds=1.5"
            request = urllib.request.Request(url, data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=30) as resp:
                result["status"] = resp.status
                result["body"] = json.load(resp)

        thread = threading.Thread(target=slow_predict)
        thread.start()
        assert helpers.wait_until(lambda: busy_workers(server) == 1)
        workers = helpers.children(server.proc.pid)
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        thread.join(10)
    assert result["status"] == 200
    assert result["body"]["predictions"]["mode"] == "sleep"
    assert time.monotonic() - started < 10
    assert helpers.wait_until(lambda: not any(map(helpers.pid_alive, workers)), 10)


def busy_workers(server: helpers.Server) -> int:
    """How many workers of the ``failing`` model run a call now."""
    return get_json(server.url + "/readyz")["models"]["failing"]["busy"]


def test_shutdown_timeout_cuts_a_long_predict_with_a_json_503(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    args = server_args(tmp_path, "--shutdown-timeout", "3")
    answers: list[tuple[int, dict]] = []
    with helpers.running_server(args, env) as server:

        def endless_predict() -> None:
            url = server.url + "/v2/models/failing/predict/?mode=sleep&seconds=120"
            request = urllib.request.Request(url, data=b"", method="POST")
            try:
                urllib.request.urlopen(request, timeout=60).read()
            except urllib.error.HTTPError as exc:  # cut by the shutdown
                answers.append((exc.code, json.load(exc)))

        thread = threading.Thread(target=endless_predict)
        thread.start()
        assert helpers.wait_until(lambda: busy_workers(server) == 1)
        workers = helpers.children(server.proc.pid)
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        elapsed = time.monotonic() - started
        thread.join(10)
    # the time-out once (not twice), and the last answer written
    assert 3 <= elapsed < 5.5
    ((status, body),) = answers
    assert status == 503
    assert "shutting down" in body["message"]
    assert helpers.wait_until(lambda: not any(map(helpers.pid_alive, workers)), 10)


def test_corrupt_database_stops_start_up_clearly(model_sites, tmp_path):
    (tmp_path / "trainings.sqlite3").write_bytes(b"garbage" * 1000)
    env = helpers.env_with(model_sites["testmodels"])
    result = run_once(server_args(tmp_path), env)
    assert result.returncode == 1
    assert "trainings.sqlite3" in result.stderr
    assert "Traceback" not in result.stderr

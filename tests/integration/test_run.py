"""The real deepaas-run process: start-up, serving, signals, workers."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # real deepaas-run processes


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def post_json(url: str) -> object:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def run_once(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(helpers.BIN_DIR / "deepaas-run"),
            "--listen-port",
            str(helpers.free_port()),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_model_serves_demo_and_says_so():
    with helpers.running_server([], helpers.env_with(None)) as server:
        models = get_json(server.url + "/v2/models/")
        assert [m["id"] for m in models["models"]] == ["deepaas-test"]
        body = post_json(server.url + "/v2/models/deepaas-test/predict/?top_k=2")
        assert len(body["predictions"]) == 2
        assert server.stop() == 0
    assert "serving the built-in demo model" in server.stderr
    assert f"http://127.0.0.1:{server.port}/swagger.json" in server.stdout
    assert f"http://127.0.0.1:{server.port}/api" in server.stdout


def test_workers_import_the_servers_deepaas_not_one_in_the_working_directory(
    tmp_path,
):
    """A worker is a fresh interpreter; run from a directory that holds a
    ``deepaas`` of its own (a source checkout, say), it still imports the
    server's, as the server does."""
    checkout = tmp_path / "checkout"
    (checkout / "deepaas").mkdir(parents=True)
    (checkout / "deepaas" / "__init__.py").write_text(
        'raise ImportError("the deepaas of the working directory")\n'
    )
    env = helpers.env_with(None, XDG_DATA_HOME=str(tmp_path / "data"))
    with helpers.running_server([], env, cwd=checkout) as server:
        body = post_json(server.url + "/v2/models/deepaas-test/predict/?top_k=1")
        assert len(body["predictions"]) == 1
        assert server.stop() == 0
    assert "working directory" not in server.stderr


def test_single_installed_model_needs_no_choice(model_sites):
    with helpers.running_server([], helpers.env_with(model_sites["single"])) as server:
        models = get_json(server.url + "/v2/models/")
        assert [m["id"] for m in models["models"]] == ["only-model"]


def test_model_name_from_environment(model_sites):
    env = helpers.env_with(model_sites["testmodels"], DEEPAAS_V2_MODEL="minimal")
    with helpers.running_server([], env) as server:
        models = get_json(server.url + "/v2/models/")
        assert [m["id"] for m in models["models"]] == ["minimal"]


def test_unknown_model_name_exits_listing_installed(model_sites):
    result = run_once(["--model-name", "nope"], helpers.env_with(model_sites["single"]))
    assert result.returncode == 1
    assert "nope" in result.stderr and "only-model" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("broken-import", "a_module_that_does_not_exist"),
        ("bad-schema", "invalid response schema"),
        ("bad-warm", "weights file missing"),
    ],
)
def test_bad_model_stops_start_up(model_sites, name, text):
    result = run_once(["--model-name", name], helpers.env_with(model_sites["broken"]))
    assert result.returncode == 1, result.stderr
    assert name in result.stderr and text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_leaving_no_worker(model_sites, sig):
    env = helpers.env_with(model_sites["testmodels"])
    with helpers.running_server(["--model-name", "failing", "-p", "2"], env) as server:
        workers = helpers.children(server.proc.pid)
        assert len(workers) >= 2
        # a training is running in a worker when the signal arrives
        post_json(server.url + "/v2/models/failing/train/?mode=sleep&seconds=60")
        assert server.stop(sig) == 0
    assert helpers.wait_until(
        lambda: not any(helpers.pid_alive(p) for p in workers), 10
    )


def test_base_path_and_printed_addresses(model_sites):
    env = helpers.env_with(model_sites["single"])
    args = ["--base-path", "models"]
    with helpers.running_server(args, env, "/models/readyz") as server:
        body = get_json(server.url + "/models/")
        assert body["links"][1]["href"] == "/models/swagger.json"
        assert server.stop() == 0
    assert f"{server.url}/models/api" in server.stdout


def test_listens_at_once_and_is_ready_after_warm_up(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"], SLOW_WARM_SECONDS="3")
    args = ["--model-name", "slow-warm", "--state-dir", str(tmp_path)]
    with helpers.running_server(args, env, "/healthz") as server:
        try:
            urllib.request.urlopen(server.url + "/readyz", timeout=10)
            raise AssertionError("ready before the warm-up ended")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert json.load(exc)["status"] == "starting"
        server.wait_ready("/readyz")
        assert server.stop() == 0
    assert "Ready: every worker has loaded and warmed its model" in server.stderr


def test_signal_during_a_long_warm_up_stops_at_once(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"], SLOW_WARM_SECONDS="60")
    args = ["--model-name", "slow-warm", "--state-dir", str(tmp_path)]
    with helpers.running_server(args, env, "/healthz") as server:
        assert helpers.wait_until(lambda: helpers.children(server.proc.pid), 10)
        workers = helpers.children(server.proc.pid)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 15
    assert "Ready" not in server.stderr
    assert helpers.wait_until(
        lambda: not any(helpers.pid_alive(p) for p in workers), 10
    )

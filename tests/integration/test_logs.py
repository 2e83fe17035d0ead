"""Access log, request ids in the worker's lines, JSON logs: real deepaas-run."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # real deepaas-run processes

CHATTY = "/v2/models/failing/predict/?mode=chatty"


def post(url: str, request_id: str | None = None) -> tuple[int, str]:
    headers = {"X-Request-ID": request_id} if request_id else {}
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers["X-Request-ID"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["X-Request-ID"]


def lines_when(server: helpers.Server, *needles: str) -> list[str]:
    """The server's log lines once every needle shows up (or after 10 s)."""

    def found() -> bool:
        return all(n in server.output()[1] for n in needles)

    helpers.wait_until(found, 10)
    return server.output()[1].splitlines()


@pytest.mark.ray
def test_a_ray_workers_lines_name_the_request(model_sites, tmp_path, ray_cluster):
    """With --executor ray the model's lines reach the server's log through
    Ray, still naming the request."""
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--model-name", "failing", "--state-dir", str(tmp_path),
            "--executor", "ray", "--ray-address", ray_cluster.address]  # fmt: skip
    with helpers.running_server(args, env) as server:
        assert post(server.url + CHATTY, "trace-ray") == (200, "trace-ray")
        lines = lines_when(server, "a logged warning")
    worker = [line for line in lines if "a logged warning" in line]
    assert len(worker) == 1 and "[trace-ray]" in worker[0], lines
    assert "[failing worker]" in worker[0]


def test_text_logs_name_the_request_everywhere(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--model-name", "failing", "--state-dir", str(tmp_path)]
    with helpers.running_server(args, env) as server:
        assert post(server.url + CHATTY, "trace-7") == (200, "trace-7")
        status, generated = post(server.url + "/v2/models/failing/predict/?mode=raise")
        assert status == 500
        lines = lines_when(
            server, "aiohttp.access [trace-7]", f"aiohttp.access [{generated}]"
        )
    # the access log line: method, path, status, duration, request id
    access = [line for line in lines if "aiohttp.access [trace-7]" in line]
    assert len(access) == 1, lines
    assert "POST /v2/models/failing/predict/?mode=chatty 200 " in access[0]
    assert access[0].split(" 200 ")[1].split()[0].endswith("ms")
    # the model's own warning, logged in the worker process, names it too
    worker = [line for line in lines if "a logged warning" in line]
    assert len(worker) == 1 and "[trace-7]" in worker[0], lines
    assert "[failing worker]" in worker[0]
    # the server's error line about the failed call carries the generated id
    error = [line for line in lines if "the model is unhappy" in line]
    assert error and all(f"[{generated}]" in line for line in error), lines
    assert any(
        f"aiohttp.access [{generated}]: POST" in line and " 500 " in line
        for line in lines
    ), lines


def test_json_logs(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--model-name", "failing", "--state-dir", str(tmp_path)]
    with helpers.running_server([*args, "--log-format", "json"], env) as server:
        assert post(server.url + CHATTY, "json-1") == (200, "json-1")
        lines = lines_when(server, f'"path": "{CHATTY}"', "a logged warning")
    # every log line of the process tree is one JSON object (the model's own
    # raw write to file descriptor 2 is not a log line)
    logged = [line for line in lines if line != "raw stderr bytes"]
    records = [json.loads(line) for line in logged]
    access = [
        r
        for r in records
        if r["logger"] == "aiohttp.access" and r["request_id"] == "json-1"
    ]
    assert len(access) == 1
    assert access[0]["method"] == "POST"
    assert access[0]["path"] == "/v2/models/failing/predict/?mode=chatty"
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] > 0
    assert access[0]["level"] == "INFO"
    worker = [r for r in records if r["message"] == "a logged warning"]
    assert len(worker) == 1
    assert worker[0]["request_id"] == "json-1"
    assert worker[0]["worker"] == "failing worker"
    assert worker[0]["process"] != access[0]["process"]


def test_noaccess_log(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--model-name", "failing", "--state-dir", str(tmp_path), "--noaccess-log"]
    with helpers.running_server(args, env) as server:
        assert post(server.url + CHATTY, "quiet-1") == (200, "quiet-1")
        lines = lines_when(server, "a logged warning")
    assert not [line for line in lines if "aiohttp.access" in line]
    assert any("[quiet-1]" in line for line in lines)


def test_an_upstream_logging_command_line_starts_unchanged(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    logs = tmp_path / "logs"
    logs.mkdir()
    args = [
        "--model-name", "failing", "--state-dir", str(tmp_path),
        "--use-json", "--log-dir", str(logs), "--logfile", "deepaas.log",
        "--watch-log-file", "--log-date-format", "%Y-%m-%d",
        "--syslog-log-facility", "LOG_LOCAL0",
    ]  # fmt: skip
    with helpers.running_server(args, env) as server:
        assert post(server.url + "/v2/models/failing/predict/", "up-1")[0] == 200
        path = logs / "deepaas.log"
        assert helpers.wait_until(lambda: "up-1" in path.read_text(), 10)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    (access,) = [r for r in records if r.get("request_id") == "up-1"]
    assert access["logger"] == "aiohttp.access"
    assert len(access["asctime"]) == len("2026-01-01")

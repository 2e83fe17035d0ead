"""Hostile clients and hard faults against a real deepaas-run: the server keeps
its capacity and keeps serving."""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests import helpers
from tests.integration.test_run import get_json, post_json

pytestmark = pytest.mark.slow  # real deepaas-run processes

PREDICT = "/v2/models/failing/predict/"


def server_args(state_dir, *extra: str) -> list[str]:
    return ["--model-name", "failing", "--state-dir", str(state_dir), *extra]


def readiness(server: helpers.Server) -> dict:
    """The /readyz body, whatever its status."""
    try:
        return get_json(server.url + "/readyz")
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def busy(server: helpers.Server) -> int:
    models = readiness(server).get("models", {})
    return models.get("failing", {}).get("busy", 0)


def metric(server: helpers.Server, pattern: str) -> float:
    """The value of the first metrics line matching ``pattern`` (0 if none)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if re.match(pattern, line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_clients_that_hang_up_cancel_their_calls(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    with helpers.running_server(server_args(tmp_path, "-p", "1"), env) as server:
        request = (
            f"POST {PREDICT}?mode=sleep&seconds=1 HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port)) as raw:
                raw.sendall(request)
                # hang up once the call runs in the worker
                assert helpers.wait_until(lambda: busy(server) == 1, 15)
            assert helpers.wait_until(lambda: busy(server) == 0, 15)
        started = time.monotonic()
        assert post_json(server.url + PREDICT)["predictions"]["mode"] == "ok"
        assert time.monotonic() - started < 5  # not ten seconds of abandoned calls
        cancelled = r'deepaas_model_call_duration_seconds_count\{.*outcome="cancelled"'
        assert metric(server, cancelled) == 10
        assert metric(server, r"deepaas_worker_restarts_total") == 10
        # and five that hang up in the middle of an upload
        head = (
            f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            "--b\r\nContent-Disposition: form-data; name=data; filename=a\r\n\r\n"
        ).encode()
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port)) as raw:
                raw.sendall(head + b"x" * 5000)
        hung_up = "the client closed the connection before the answer"
        assert helpers.wait_until(lambda: server.output()[1].count(hung_up) == 15, 15)
        assert metric(server, r'deepaas_http_requests_total\{.*status="499"') == 15
        assert post_json(server.url + PREDICT)["predictions"]["mode"] == "ok"
        _, err = server.output()
    assert "Traceback" not in err
    # no prediction answered (or logged) as a server error
    assert not re.search(r"aiohttp\.access .*: POST \S+ 5\d\d ", err), err


def files_of_at_most(size: int):
    """A server's set-up: no file it writes may grow past ``size`` bytes (a
    full disk, as far as it can tell)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    return limit


def wait_training(url: str, timeout: float = 30) -> dict:
    body: dict = {}

    def ended() -> bool:
        nonlocal body
        body = get_json(url)
        return body["status"] != "running"

    assert helpers.wait_until(ended, timeout)
    return body


def test_a_training_that_ends_on_a_full_disk_keeps_its_result(model_sites, tmp_path):
    env = helpers.env_with(model_sites["testmodels"])
    args = server_args(tmp_path / "state", "--log-level", "WARNING")
    limit = files_of_at_most(100_000)
    with helpers.running_server(args, env, preexec_fn=limit) as server:
        started = post_json(server.url + "/v2/models/failing/train/?mode=big")
        path = "/v2/models/failing/train/" + started["uuid"]
        done = wait_training(server.url + path)
        assert done["status"] == "done"
        assert len(done["result"]["output"]["blob"]) == 200_000
        # Its end is told as it happens; the failed save follows.
        assert helpers.wait_until(lambda: readiness(server)["status"] == "degraded", 30)
        assert "cannot be recorded" in readiness(server)["reason"]
        assert metric(server, r"deepaas_trainings_unsaved ") == 1
        listed = get_json(server.url + "/v2/models/failing/train/")
        assert [t["status"] for t in listed] == ["done"]
        # an upload into the full temporary directory
        boundary = "b"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="data"; '
                f'filename="big.bin"\r\n\r\n'
            ).encode()
            + b"x" * 150_000
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            server.url + PREDICT, data=body, method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 507
        assert "No room" in json.load(info.value)["message"]
        assert post_json(server.url + PREDICT)["predictions"]["mode"] == "ok"
        # room again: the result is recorded
        resource.prlimit(
            server.proc.pid,
            resource.RLIMIT_FSIZE,
            (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
        )
        assert helpers.wait_until(lambda: readiness(server)["status"] == "ready", 40)
    with helpers.running_server(args, env) as server:
        recorded = get_json(server.url + path)
    assert recorded["status"] == "done"
    assert len(recorded["result"]["output"]["blob"]) == 200_000


def answer_on(sock: socket.socket, timeout: float = 15) -> bytes:
    """Everything the server sends on ``sock`` until it closes it."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class TestStalledConnections:
    ARGS = (
        "--header-timeout", "2", "--body-timeout", "1",
        "--keepalive-timeout", "4", "--max-connections", "5",
        "--answer-half-closed",
    )  # fmt: skip

    @pytest.fixture
    def server(self, model_sites, tmp_path):
        env = helpers.env_with(model_sites["testmodels"])
        with helpers.running_server(server_args(tmp_path, *self.ARGS), env) as server:
            yield server

    def connect(self, server: helpers.Server) -> socket.socket:
        return socket.create_connection(("127.0.0.1", server.port))

    def test_headers_that_trickle_in_get_a_408(self, server):
        with self.connect(server) as slow:
            slow.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            started = time.monotonic()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(40):  # a header byte every half second
                    slow.sendall(b"X")
                    time.sleep(0.5)
            assert time.monotonic() - started < 10
        assert post_json(server.url + PREDICT)["predictions"]["mode"] == "ok"
        assert metric(server, r"deepaas_connections_timed_out_total ") == 1

    def test_a_body_that_stops_gets_a_408(self, server):
        with self.connect(server) as slow:
            slow.sendall(
                f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
                "--b\r\nContent-Disposition: form-data; name=data; filename=a\r\n\r\n"
                "partial".encode()
            )
            answer = answer_on(slow)
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"--body-timeout" in answer
        assert post_json(server.url + PREDICT)["predictions"]["mode"] == "ok"

    def test_idle_connections_are_closed(self, server):
        with self.connect(server) as idle:
            started = time.monotonic()
            assert answer_on(idle) == b""  # closed without a word
        assert time.monotonic() - started < 10

    def test_connections_beyond_the_cap_get_a_503(self, server):
        held = [self.connect(server) for _ in range(5)]
        try:
            with self.connect(server) as extra:
                answer = answer_on(extra)
            assert answer.startswith(b"HTTP/1.1 503")
            assert b"Too many open connections" in answer
        finally:
            for sock in held:
                sock.close()
        # room again, and the refusal counted
        assert helpers.wait_until(
            lambda: metric(server, r"deepaas_connections_refused_total ") == 1, 15
        )
        assert post_json(server.url + PREDICT)["predictions"]["mode"] == "ok"

    def test_a_half_closed_connection_gets_its_answer(self, server):
        with self.connect(server) as client:
            client.sendall(
                f"POST {PREDICT}?mode=sleep&seconds=0.5 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            client.shutdown(socket.SHUT_WR)
            answer = answer_on(client)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b'"mode": "sleep"' in answer

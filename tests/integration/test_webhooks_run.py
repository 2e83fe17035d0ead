"""A webhook survives a crash of the real deepaas-run: the job it watched is
reported completed (interrupted) by the next run."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import urllib.request

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # real deepaas-run processes


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers["Content-Length"])
                outer.received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_job_cut_by_a_crash_is_reported_by_the_next_run(model_sites, tmp_path):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--model-name", "failing", "--state-dir", str(tmp_path),
            "--webhook-allow", "127.0.0.1:*"]  # fmt: skip
    try:
        with helpers.running_server(args, env) as server:
            request = urllib.request.Request(
                server.url + "/v2/models/failing/predict/?mode=sleep&seconds=60",
                data=b"",
                method="POST",
                headers={"Prefer": "respond-async", "Webhook-URL": hook},
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                job = json.load(resp)
            server.proc.send_signal(signal.SIGKILL)  # a crash: nothing sent
            server.proc.wait(timeout=30)
        assert receiver.received == []
        with helpers.running_server(args, env):
            assert helpers.wait_until(lambda: receiver.received, timeout=30)
        (payload,) = receiver.received
        assert payload["type"] == "prediction.completed"
        assert payload["data"]["id"] == job["id"]
        assert payload["data"]["status"] == "interrupted"
    finally:
        receiver.shutdown()

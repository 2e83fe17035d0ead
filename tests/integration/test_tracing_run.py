"""Tracing in a real ``deepaas-run``: its spans and its workers' reach a real
OTLP/HTTP receiver, and its log lines (the access line, the model's own in
its worker) name their trace."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests import helpers
from tests.otlp import Receiver, children, receiving, trace_of

pytestmark = pytest.mark.slow  # real deepaas-run processes

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    yield from receiving()


def test_a_traced_server_and_its_logs(model_sites, otlp: Receiver):
    env = helpers.env_with(
        model_sites["testmodels"], DEEPAAS_V2_MODEL="failing", **otlp.environment()
    )
    with helpers.running_server([], env) as server:
        request = urllib.request.Request(
            f"{server.url}/v2/models/failing/predict/?mode=chatty",
            method="POST",
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.load(answer)["predictions"]["mode"] == "chatty"
        spans = otlp.wait_for(
            lambda s: (
                {"POST /v2/models/failing/predict/", "predict"}
                <= {x.name for x in trace_of(s, TRACE)}
            )
        )
        server.stop()
        _, stderr = server.output()
    mine = trace_of(spans, TRACE)
    (root,) = [s for s in mine if s.name == "POST /v2/models/failing/predict/"]
    assert root.parent_id == PARENT
    (worker,) = [s for s in children(mine, root) if s.name == "predict"]
    assert worker.resource["deepaas.component"] == "failing worker"
    assert worker.resource["process.pid"] != root.resource["process.pid"]
    lines = stderr.splitlines()
    # the model's own log line, in its worker, and the request's access line
    assert any("a logged warning" in line and TRACE in line for line in lines), stderr
    assert any(
        "POST /v2/models/failing/predict/" in line and TRACE in line for line in lines
    ), stderr

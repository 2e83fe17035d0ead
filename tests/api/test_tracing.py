"""OpenTelemetry traces, sent to a real OTLP/HTTP receiver (``tests.otlp``):
one trace per request, from the client's traceparent through the queue into
the worker process (local or a Ray actor's), trainings and jobs in traces
of their own linked to the request that started them, webhooks carrying
their traceparent; and nothing of OpenTelemetry loaded when tracing is off."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from aiohttp import web

from deepaas import log, tracing
from deepaas.api import keys
from tests import helpers
from tests.conftest import EXECUTORS
from tests.otlp import Receiver, children, receiving, trace_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE}-{CLIENT_SPAN}-01"}
SERVER, CLIENT = 2, 3


@pytest.fixture
def otlp(monkeypatch):
    """A receiver, and a server process environment that sends it traces."""
    for receiver in receiving():
        for name, value in receiver.environment().items():
            monkeypatch.setenv(name, value)
        yield receiver


def only(spans, name):
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} span(s) named {name!r}: {spans}"
    return found[0]


def has(*names):
    return lambda spans: all(any(s.name == n for s in spans) for n in names)


@EXECUTORS
async def test_one_trace_per_request_across_processes(make_client, otlp: Receiver):
    client = await make_client("--model-name", "tensors")
    resp = await client.post(
        "/v2/models/tensors/predict/", json={"label": "x"}, headers=TRACEPARENT
    )
    assert resp.status == 200
    spans = await otlp.received_when(
        lambda s: has("POST /v2/models/tensors/predict/", "predict", "send answer")(
            trace_of(s, TRACE)
        )
    )
    spans = trace_of(spans, TRACE)
    request = only(spans, "POST /v2/models/tensors/predict/")
    # the client's span is the request's parent
    assert request.parent_id == CLIENT_SPAN and request.kind == SERVER
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["http.route"] == "/v2/models/tensors/predict/"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["deepaas.model"] == "tensors"
    assert request.resource["service.name"] == "deepaas-under-test"
    steps = {s.name: s for s in children(spans, request)}
    assert {"read arguments", "queue", "predict", "send answer"} <= steps.keys()
    worker = steps["predict"]
    # a real child, made in the worker process
    assert worker.resource["process.pid"] != request.resource["process.pid"]
    assert worker.resource["deepaas.component"] == "tensors worker"
    assert worker.attributes["deepaas.model"] == "tensors"
    assert worker.attributes["deepaas.batch.size"] == 1
    assert "host.name" in worker.attributes and "process.pid" in worker.attributes
    assert steps["queue"].end <= worker.start
    assert steps["read arguments"].end <= steps["queue"].start
    assert worker.end <= steps["send answer"].end


async def test_requests_without_a_traceparent_start_their_own(
    make_client, otlp: Receiver
):
    client = await make_client("--model-name", "tensors")
    for _ in range(2):
        resp = await client.post("/v2/models/tensors/infer", json={
            "inputs": [{"name": "label", "datatype": "BYTES", "shape": [1],
                        "data": ["y"]}]
        })  # fmt: skip
        assert resp.status == 200
    spans = await otlp.received_when(
        lambda s: (
            len([x for x in s if x.name == "predict"]) == 2
            and len([x for x in s if x.name == "POST /v2/models/tensors/infer"]) == 2
        )
    )
    requests = [s for s in spans if s.name == "POST /v2/models/tensors/infer"]
    assert len({r.trace_id for r in requests}) == 2
    for request in requests:
        assert request.parent_id == ""
        names = {s.name for s in children(spans, request)}
        assert {"read arguments", "queue", "predict", "send answer"} <= names


async def test_a_failed_call_marks_its_request(make_client, otlp: Receiver):
    client = await make_client("--model-name", "failing")
    resp = await client.post(
        "/v2/models/failing/predict/?mode=raise", headers=TRACEPARENT
    )
    assert resp.status == 500
    spans = await otlp.received_when(
        lambda s: has("POST /v2/models/failing/predict/")(s)
    )
    request = only(trace_of(spans, TRACE), "POST /v2/models/failing/predict/")
    assert request.status == 2 and request.attributes["error.type"] == "500"


async def test_a_job_has_a_trace_of_its_own_and_its_webhook_carries_it(
    make_client, otlp: Receiver, aiohttp_server
):
    delivered: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        delivered.append(request.headers.get("traceparent", ""))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    hooks = await aiohttp_server(app)
    client = await make_client(
        "--model-name", "tensors", "--webhook-allow", "127.0.0.1:*"
    )
    resp = await client.post(
        "/v2/models/tensors/predict/",
        json={"label": "job"},
        headers={
            **TRACEPARENT,
            "Prefer": "respond-async",
            "Webhook-URL": str(hooks.make_url("/hook")),
        },
    )
    assert resp.status == 202
    assert await helpers.eventually(lambda: delivered)
    spans = await otlp.received_when(
        has("job", "predict", "webhook prediction.completed")
    )
    request = only(trace_of(spans, TRACE), "POST /v2/models/tensors/predict/")
    job = only(spans, "job")
    # its own trace, linked to the request that started it
    assert job.trace_id != TRACE and job.parent_id == ""
    assert job.links == ((TRACE, request.span_id),)
    assert job.attributes["deepaas.status"] == "done"
    worker = only(spans, "predict")
    assert worker.trace_id == job.trace_id and worker.parent_id == job.span_id
    webhook = only(spans, "webhook prediction.completed")
    assert webhook.trace_id == job.trace_id and webhook.kind == CLIENT
    assert webhook.attributes["http.response.status_code"] == 204
    (traceparent,) = delivered
    assert traceparent.split("-")[1:3] == [job.trace_id, webhook.span_id]


async def test_a_training_is_one_span_for_its_whole_life(make_client, otlp: Receiver):
    client = await make_client("--model-name", "module-model")
    resp = await client.post(
        "/v2/models/module-model/train/?epochs=1", headers=TRACEPARENT
    )
    assert resp.status == 200
    spans = await otlp.received_when(has("training", "train"))
    training = only(spans, "training")
    request = only(trace_of(spans, TRACE), "POST /v2/models/module-model/train/")
    assert training.links == ((TRACE, request.span_id),)
    assert training.attributes["deepaas.record.id"] == (await resp.json())["uuid"]
    assert training.attributes["deepaas.status"] == "done"
    worker = only(spans, "train")
    assert worker.parent_id == training.span_id
    assert training.start <= worker.start and worker.end <= training.end


async def test_batched_predictions_are_each_in_their_trace(make_client, otlp: Receiver):
    client = await make_client(
        "--model-name", "batcher", "-p", "1", "--max-batch-size", "4"
    )
    executor = client.app[keys.MODELS]["batcher"].executor
    blocker = asyncio.ensure_future(
        client.post("/v2/models/batcher/predict/?x=1&seconds=0.5")
    )
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    traces = [f"{i:032x}" for i in range(1, 4)]
    calls = [
        asyncio.ensure_future(
            client.post(
                f"/v2/models/batcher/predict/?x={i}",
                headers={"traceparent": f"00-{trace}-{CLIENT_SPAN}-01"},
            )
        )
        for i, trace in enumerate(traces)
    ]
    assert await helpers.eventually(lambda: executor.health().queued == 3)
    assert (await blocker).status == 200
    assert [r.status for r in await asyncio.gather(*calls)] == [200] * 3
    spans = await otlp.received_when(
        lambda s: all(
            any(x.name in ("predict", "predict_batch") for x in trace_of(s, t))
            for t in traces
        )
    )
    for trace in traces:
        mine = trace_of(spans, trace)
        request = only(mine, "POST /v2/models/batcher/predict/")
        (worker,) = [s for s in mine if s.name in ("predict", "predict_batch")]
        assert worker.parent_id == request.span_id
        queue = only(mine, "queue")
        assert (
            queue.attributes["deepaas.batch.size"]
            == worker.attributes["deepaas.batch.size"]
        )


def test_log_lines_name_their_trace():
    import logging

    record = logging.LogRecord("x", logging.INFO, "", 0, "hello", None, None)
    token = tracing.TRACE_ID.set(TRACE)
    try:
        log.RequestIdFilter().filter(record)
    finally:
        tracing.TRACE_ID.reset(token)
    assert TRACE in log.formatter("text", traced=True).format(record)
    assert TRACE not in log.formatter("text").format(record)
    assert f'"trace_id": "{TRACE}"' in log.formatter("json", traced=True).format(record)


def test_off_nothing_of_opentelemetry_is_imported(testmodels_installed, tmp_path):
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from aiohttp.test_utils import TestClient, TestServer
        from deepaas import config
        from deepaas.api import get_app, keys

        async def main():
            conf = config.build_config(["--state-dir", {str(tmp_path)!r}])
            client = TestClient(TestServer(get_app(conf)))
            await client.start_server()
            await client.app[keys.STARTUP].wait()
            resp = await client.post("/v2/models/deepaas-test/predict/")
            assert resp.status == 200
            await client.close()
            loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
            print("loaded:", loaded)

        asyncio.run(main())
        """
    )
    env = helpers.env_with(None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def test_on_without_opentelemetry_is_a_clear_error(tmp_path):
    script = textwrap.dedent(
        """
        import builtins, sys
        real = builtins.__import__
        def hidden(name, *args, **kwargs):
            if name.startswith("opentelemetry"):
                raise ImportError(f"No module named {name!r}")
            return real(name, *args, **kwargs)
        builtins.__import__ = hidden
        from deepaas import exceptions, tracing
        try:
            tracing.Tracing.start("server")
        except exceptions.ConfigurationError as exc:
            print(exc.message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert "pip install 'deepaas[otel]'" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("environ", "flag", "wanted"),
    [
        ({}, False, False),
        ({}, True, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False, True),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"},
            False,
            True,
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318",
                "OTEL_SDK_DISABLED": "true",
            },
            True,
            False,
        ),
    ],
)
def test_when_tracing_is_on(environ, flag, wanted):
    assert tracing.wanted(flag, environ) is wanted

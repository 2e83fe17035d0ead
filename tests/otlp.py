"""A real OTLP/HTTP trace receiver on loopback, for the tracing tests: it
decodes each export (protobuf, as the OpenTelemetry exporters send it) and
keeps its spans."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests import helpers


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    kind: int  # 1 internal, 2 server, 3 client
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    status: int  # 0 unset, 1 ok, 2 error
    start: int
    end: int


class Receiver:
    """Serves ``POST /v1/traces`` on a free loopback port, in a thread."""

    def __init__(self) -> None:
        self.port = helpers.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def environment(self) -> dict[str, str]:
        """What a traced server needs: this endpoint, and exports a tenth of a
        second apart (not the default five seconds)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "deepaas-under-test",
        }

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        received = []
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                            _attributes(span.attributes),
                            resource,
                            tuple(
                                (link.trace_id.hex(), link.span_id.hex())
                                for link in span.links
                            ),
                            span.status.code,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.exports += 1
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def _serve(self) -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_post("/v1/traces", self._receive)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    def start(self) -> Receiver:
        self._thread.start()
        assert self._started.wait(10), "the OTLP receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedSpan]:
        """The spans received once ``predicate`` holds for them (polled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.received()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        spans = self.received()
        assert predicate(spans), f"spans received: {[s.name for s in spans]}"
        return spans

    async def received_when(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedSpan]:
        """``wait_for`` for a test whose server runs on its own event loop
        (which a blocking wait would stop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.received()
            if predicate(spans):
                return spans
            await asyncio.sleep(0.05)
        spans = self.received()
        assert predicate(spans), f"spans received: {[s.name for s in spans]}"
        return spans


def trace_of(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


def receiving() -> Iterator[Receiver]:
    """A started receiver, stopped after (for fixtures)."""
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()

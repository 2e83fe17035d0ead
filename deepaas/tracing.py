"""OpenTelemetry traces, when asked for.

Tracing is off unless ``--otel`` is given or the environment names an OTLP
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). When it is on, spans go there over
OTLP/HTTP, sampled as the standard variables say (``OTEL_TRACES_SAMPLER``,
``OTEL_TRACES_SAMPLER_ARG``: the SDK reads them). OpenTelemetry is imported
only by ``Tracing.start``: the default install does without it
(``pip install 'deepaas[otel]'``), and a server with tracing off pays nothing
for it.

The server and each of its workers, local or on a Ray node, hold a
``Tracing`` of their own. A call carries its context to its worker as a W3C
``traceparent`` (``Call.trace``), so the worker's span is a real child of the
request's. A worker on another machine gets the server's ``OTEL_*`` variables
in its start message (``worker_environment``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from deepaas import __version__, exceptions

if typing.TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
SERVICE_NAME = "deepaas"
TRACEPARENT = "traceparent"
NO_SPAN = contextlib.nullcontext()
# The id of the trace being served, for log lines (deepaas.log)
TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "deepaas_trace_id", default="-"
)


def wanted(flag: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to trace: ``--otel``, or an OTLP endpoint in the environment
    (``OTEL_SDK_DISABLED=true`` wins over both, as the SDK has it)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return flag or any(environ.get(name) for name in ENDPOINT_VARIABLES)


def sampled(traceparent: str | None) -> bool:
    """Whether a ``traceparent`` says its trace is sampled (the lowest bit
    of its flags, its last two hex digits)."""
    if not traceparent:
        return False
    try:
        return bool(int(traceparent[-2:], 16) & 1)
    except ValueError:
        return False


def worker_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The ``OTEL_*`` variables a worker needs to trace as the server does."""
    return {k: v for k, v in environ.items() if k.startswith("OTEL_")}


class Tracing:
    """What one process traces with: its tracer and how spans leave it."""

    def __init__(self, tracer: Tracer, provider: TracerProvider) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )

        self._root = Context()  # no current span: a new trace
        self.tracer = tracer
        self.provider = provider
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def start(
        cls, component: str, environment: Mapping[str, str] | None = None
    ) -> Tracing:
        """Trace this process (``component``: the server, or whose worker);
        ``environment``: ``OTEL_*`` variables to take first (a worker's, from
        its server).

        Raises ``ConfigurationError`` when OpenTelemetry is not installed.
        """
        if environment:
            os.environ.update(environment)
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise exceptions.ConfigurationError(
                "Tracing needs OpenTelemetry, which is not installed: "
                f"pip install 'deepaas[otel]' ({exc})"
            ) from None
        attributes: dict[str, Any] = {
            "service.version": __version__,
            "deepaas.component": component,
            "process.pid": os.getpid(),
            "host.name": socket.gethostname(),
        }
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = SERVICE_NAME
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider.get_tracer("deepaas", __version__), provider)

    # -- contexts ------------------------------------------------------------

    def extract(self, headers: Mapping[str, str]) -> Context:
        """The context a request's ``traceparent`` header gives (an empty
        one without it)."""
        return self._propagator.extract(headers)

    def traceparent(self, span: Span | None = None) -> str | None:
        """The ``traceparent`` of ``span`` (by default the current one), or
        None outside any."""
        carrier: dict[str, str] = {}
        context = self._trace.set_span_in_context(span) if span is not None else None
        self._propagator.inject(carrier, context)
        return carrier.get(TRACEPARENT)

    def context_of(self, traceparent: str | None) -> Context | None:
        """The context a ``traceparent`` names (None for none)."""
        if not traceparent:
            return None
        return self._propagator.extract({TRACEPARENT: traceparent})

    # -- spans ---------------------------------------------------------------

    def start_span(
        self,
        name: str,
        *,
        parent: str | None = None,
        context: Context | None = None,
        root: bool = False,
        kind: str = "internal",
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[str | None] = (),
        start_time: int | None = None,
    ) -> Span:
        """A span, not made current: a child of ``parent`` (a traceparent),
        of ``context``, or of the current span, or with ``root`` the first
        of a trace of its own; linked to the spans ``links`` names."""
        trace = self._trace
        if root:
            context = self._root
        elif context is None:
            context = self.context_of(parent)
        linked = []
        for traceparent in links:
            linked_context = self.context_of(traceparent)
            if linked_context is not None:
                span_context = trace.get_current_span(linked_context).get_span_context()
                linked.append(trace.Link(span_context))
        return self.tracer.start_span(
            name,
            context=context,
            kind=trace.SpanKind[kind.upper()],
            attributes=attributes,
            links=linked,
            start_time=start_time,
        )

    @contextlib.contextmanager
    def span(self, name: str, **options: Any) -> Iterator[Span]:
        """A span (``start_span``'s options) made current for the block,
        ended with it (an exception leaving the block is recorded on it)."""
        span = self.start_span(name, **options)
        with self._trace.use_span(span, end_on_exit=True):
            yield span

    @contextlib.contextmanager
    def lifetime(self, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
        """A span for the block, made current, that starts a trace of its own
        linked to the current span (the request that started a training or
        a job); log lines name its trace meanwhile."""
        with self.span(
            name, root=True, links=[self.traceparent()], attributes=attributes
        ) as span:
            token = TRACE_ID.set(self.trace_id(span))
            try:
                yield span
            finally:
                TRACE_ID.reset(token)

    def trace_id(self, span: Span | None = None) -> str:
        """The hex id of ``span``'s trace (the current one's by default), or
        ``-`` when there is none."""
        context = (span or self._trace.get_current_span()).get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else "-"

    def current_span(self) -> Span:
        return self._trace.get_current_span()

    def recording(self) -> bool:
        """Whether the current span is sampled: the steps of a request the
        sampler left out are not traced at all."""
        return bool(self._trace.get_current_span().is_recording())

    def failed(self, span: Span, description: str) -> None:
        """Mark ``span`` as failed."""
        trace = self._trace
        span.set_status(trace.Status(trace.StatusCode.ERROR, description))

    def shutdown(self) -> None:
        """Send what is still buffered, then stop."""
        self.provider.shutdown()


def span(
    tracing: Tracing | None, name: str, **options: Any
) -> contextlib.AbstractContextManager[Any]:
    """``tracing.span(name, ...)`` within a sampled span; nothing when
    tracing is off or the current span was not sampled."""
    if tracing is None or not tracing.recording():
        return NO_SPAN
    return tracing.span(name, **options)


def lifetime(
    tracing: Tracing | None, name: str, attributes: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Span | None]:
    """``tracing.lifetime(name, attributes)``, or None when tracing is off."""
    if tracing is None:
        return NO_SPAN
    return tracing.lifetime(name, attributes)


__all__ = ["Tracing", "span", "wanted", "worker_environment"]

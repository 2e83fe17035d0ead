"""Prometheus metrics at ``GET /metrics`` (off with ``--nometrics-endpoint``).

Each application has its own registry. Requests are counted by route template
(never by raw path, so unknown URLs cannot grow the series); the state of the
workers and trainings is read when the endpoint is scraped.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import prometheus_client
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractResource
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from deepaas import exceptions
from deepaas.api.auth import APIKeys
from deepaas.api.connections import Connections
from deepaas.runtime.executor import Executor
from deepaas.state.records import TRAINING
from deepaas.work.runner import Runner

LOG = logging.getLogger(__name__)

# From a fast GET to a long prediction, in seconds.
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
# Model calls: predictions up to trainings of hours.
CALL_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400,
)  # fmt: skip

UNMATCHED = "unmatched"
# Any other request method is counted as OTHER: clients cannot grow the series.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def route_template(request: web.Request) -> str:
    """The route a request matched, as declared: ``/v2/models/demo/predict``,
    ``/v2/models/demo/train/{uuid}`` (a trailing slash left out)."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    canonical = resource.canonical
    return (canonical.rstrip("/") or "/") if canonical else UNMATCHED


def call_outcome(error: BaseException | None) -> str:
    """A short label for how a model call ended."""
    if error is None:
        return "ok"
    if isinstance(error, exceptions.InvalidArguments | exceptions.UnreadableRequest):
        return "invalid"  # the worker refused the arguments: the model never ran
    if isinstance(error, exceptions.CallTimedOut):
        return "timeout"
    if isinstance(error, exceptions.NoFreeWorker | exceptions.PoolClosed):
        return "rejected"
    if isinstance(error, exceptions.WorkerDied):
        return "worker_died"
    if not isinstance(error, Exception):  # CancelledError: the client left
        return "cancelled"
    return "error"


class Counts:
    """A counter by label values. Requests and calls are counted on the event
    loop alone, so a count is a plain number (prometheus_client's own metric
    classes take a lock and look their child up on every update, a good share
    of the time the server spends on a small prediction)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]):
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.series: dict[tuple[str, ...], float] = {}

    def add(self, values: tuple[str, ...], amount: float = 1) -> None:
        self.series[values] = self.series.get(values, 0) + amount

    def family(self) -> prometheus_client.Metric:
        family = CounterMetricFamily(
            self.name, self.documentation, labels=list(self.labels)
        )
        for values, total in self.series.items():
            family.add_metric(list(values), total)
        return family


class Histogram:
    """Observations by label values, counted into fixed buckets (the same
    exposition as a ``prometheus_client.Histogram``, updated as ``Counts``
    is)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        bounds: tuple[float, ...],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.bounds = bounds
        self._les = [floatToGoString(b) for b in bounds] + ["+Inf"]
        # per label values: a count per bucket (the last one +Inf), then the sum
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, values: tuple[str, ...], amount: float) -> None:
        counts = self.series.get(values)
        if counts is None:
            counts = self.series[values] = [0] * (len(self.bounds) + 2)
        # the first bucket whose bound is at least ``amount``
        counts[bisect.bisect_left(self.bounds, amount)] += 1
        counts[-1] += amount

    def family(self) -> prometheus_client.Metric:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=list(self.labels)
        )
        for values, counts in self.series.items():
            cumulative = itertools.accumulate(counts[:-1])
            family.add_metric(
                list(values), list(zip(self._les, cumulative, strict=True)), counts[-1]
            )
        return family


class _ObservedCollector(Collector):
    """The counts and histograms that requests and calls update."""

    def __init__(self, observed: tuple[Counts | Histogram, ...]) -> None:
        self.observed = observed

    def collect(self) -> Iterator[prometheus_client.Metric]:
        for one in self.observed:
            yield one.family()


class _StateCollector(Collector):
    """Workers and trainings, read at scrape time."""

    def __init__(
        self,
        executors: Mapping[str, Executor],
        trainings: Runner[Any],
        connections: Connections,
        api_keys: APIKeys | None = None,
    ) -> None:
        self.executors = executors
        self.trainings = trainings
        # (model, status) -> count, as read before the scrape (``refresh``)
        self.training_counts: dict[tuple[str, str], int] = {}
        self.connections = connections
        self.api_keys = api_keys

    def collect(self) -> Iterator[prometheus_client.Metric]:
        configured = GaugeMetricFamily(
            "deepaas_workers_configured", "Workers wanted per model.", labels=["model"]
        )
        alive = GaugeMetricFamily(
            "deepaas_workers", "Live workers per model.", labels=["model"]
        )
        busy = GaugeMetricFamily(
            "deepaas_workers_busy", "Workers running a call.", labels=["model"]
        )
        restarts = CounterMetricFamily(
            "deepaas_worker_restarts",
            "Workers replaced after a death, a time-out or a cancelled call.",
            labels=["model"],
        )
        missing = GaugeMetricFamily(
            "deepaas_workers_missing",
            "Workers wanted but not running (starting, or failing to start).",
            labels=["model"],
        )
        start_failures = CounterMetricFamily(
            "deepaas_worker_start_failures",
            "Attempts to start a replacement worker that failed (retried).",
            labels=["model"],
        )
        unresponsive = CounterMetricFamily(
            "deepaas_workers_unresponsive",
            "Idle workers replaced because they stopped answering heartbeats.",
            labels=["model"],
        )
        devices = GaugeMetricFamily(
            "deepaas_worker_devices",
            "1 for each worker given GPUs (--worker-gpus), labelled with them.",
            labels=["model", "slot", "devices"],
        )
        queued = GaugeMetricFamily(
            "deepaas_queued_calls",
            "Calls waiting for a free worker.",
            labels=["model"],
        )
        batches = CounterMetricFamily(
            "deepaas_prediction_batches",
            "Batches of more than one prediction run by predict_batch().",
            labels=["model"],
        )
        batched = CounterMetricFamily(
            "deepaas_batched_predictions",
            "Predictions run in those batches (divided by the batches: the "
            "mean batch size).",
            labels=["model"],
        )
        generation = GaugeMetricFamily(
            "deepaas_worker_generation",
            "The generation of a model's workers: 1, and one more for each "
            "reload (SIGHUP) that replaced them.",
            labels=["model"],
        )
        for name, executor in sorted(self.executors.items()):
            health = executor.health()
            generation.add_metric([name], health.generation)
            queued.add_metric([name], health.queued)
            for info in health.workers:
                if info.devices is not None:
                    devices.add_metric([name, str(info.slot), info.devices], 1)
            batches.add_metric([name], health.batches)
            batched.add_metric([name], health.batched)
            configured.add_metric([name], health.size)
            alive.add_metric([name], health.alive)
            busy.add_metric([name], health.busy)
            restarts.add_metric([name], health.restarts)
            missing.add_metric([name], health.missing)
            start_failures.add_metric([name], health.start_failures)
            unresponsive.add_metric([name], health.unresponsive)
        yield from (
            configured,
            alive,
            busy,
            restarts,
            missing,
            start_failures,
            unresponsive,
            queued,
            batches,
            batched,
            devices,
            generation,
        )
        trainings = GaugeMetricFamily(
            "deepaas_trainings",
            "Trainings on record, by model and status.",
            labels=["model", "status"],
        )
        for (model_name, status), count in sorted(self.training_counts.items()):
            trainings.add_metric([model_name, status], count)
        yield trainings
        yield GaugeMetricFamily(
            "deepaas_trainings_unsaved",
            "Ended trainings the store could not record yet (kept in memory).",
            value=self.trainings.unsaved,
        )
        yield GaugeMetricFamily(
            "deepaas_connections",
            "Client connections open (under deepaas-run).",
            value=len(self.connections),
        )
        yield CounterMetricFamily(
            "deepaas_connections_refused",
            "Connections turned away with a 503 at --max-connections.",
            value=self.connections.refused,
        )
        yield CounterMetricFamily(
            "deepaas_connections_timed_out",
            "Connections closed with a 408 for headers slower than --header-timeout.",
            value=self.connections.timed_out,
        )
        if self.api_keys is not None:
            yield CounterMetricFamily(
                "deepaas_api_keys_reload_failures",
                "Reloads of --api-keys-file that failed (the previous keys stayed).",
                value=self.api_keys.reload_failures,
            )


class Metrics:
    """The metrics of one application: of its requests and of the model calls
    of ``executors`` (by model name)."""

    def __init__(
        self,
        executors: Mapping[str, Executor],
        trainings: Runner[Any],
        connections: Connections,
        api_keys: APIKeys | None = None,
    ) -> None:
        # The *_created series double what a scrape carries and no dashboard
        # uses them (a switch of prometheus_client as a whole).
        prometheus_client.disable_created_metrics()
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = Counts(
            "deepaas_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
        )
        self.latency = Histogram(
            "deepaas_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
            REQUEST_BUCKETS,
        )
        self.calls = Histogram(
            "deepaas_model_call_duration_seconds",
            "Duration of predict and train calls, by model, method and outcome.",
            ("model", "method", "outcome"),
            CALL_BUCKETS,
        )
        self.upload_bytes = Counts(
            "deepaas_upload_bytes",
            "Bytes of uploaded files received, by route template.",
            ("route",),
        )
        self.reloads = Counts(
            "deepaas_model_reloads",
            "Reloads of a model (SIGHUP), by model and outcome: reloaded, or "
            "failed (the previous version kept serving).",
            ("model", "outcome"),
        )
        self.registry.register(
            _ObservedCollector(
                (
                    self.requests,
                    self.latency,
                    self.calls,
                    self.upload_bytes,
                    self.reloads,
                )
            )
        )
        self._state = _StateCollector(executors, trainings, connections, api_keys)
        self.registry.register(self._state)
        # route templates by resource (the app's own: a fixed few)
        self._templates: dict[AbstractResource, str] = {}

    def observe_request(
        self, request: web.Request, status: int, seconds: float, uploaded: int
    ) -> None:
        route = self._route_of(request)
        method = request.method if request.method in METHODS else "OTHER"
        self.requests.add((method, route, str(status)))
        self.latency.observe((method, route), seconds)
        if uploaded:
            self.upload_bytes.add((route,), uploaded)

    def _route_of(self, request: web.Request) -> str:
        """``route_template``, worked out once per resource."""
        resource = request.match_info.route.resource
        if resource is None:
            return UNMATCHED
        route = self._templates.get(resource)
        if route is None:
            route = self._templates[resource] = route_template(request)
        return route

    def observe_call(
        self, model: str, method: str, seconds: float, error: BaseException | None
    ) -> None:
        self.calls.observe((model, method, call_outcome(error)), seconds)

    async def refresh(self) -> None:
        """Read what the state database holds for the next scrape (the
        last figures stay when it cannot be read)."""
        state = self._state
        try:
            state.training_counts = await state.trainings.records.counts(TRAINING)
        except exceptions.StoreError as exc:
            LOG.warning("Training counts not read for the metrics: %s", exc.message)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


METRICS: web.AppKey[Metrics] = web.AppKey("deepaas_metrics")


def metrics_handler(metrics: Metrics) -> Handler:
    """The handler of ``GET /metrics`` for ``metrics``."""

    async def handler(request: web.Request) -> web.Response:
        await metrics.refresh()
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = prometheus_client.CONTENT_TYPE_LATEST
        return response

    return handler


__all__ = ["Metrics", "call_outcome", "metrics_handler", "route_template"]

"""Options of the server: where it listens, what it serves, its connections."""

from __future__ import annotations

from oslo_config import cfg

# The environment variable naming the model to serve, as upstream has it.
MODEL_NAME_ENV = "DEEPAAS_V2_MODEL"

OPTS = [
    cfg.StrOpt(
        "model-name",
        sample_default="$" + MODEL_NAME_ENV,
        help="Name of the model entry point to serve (from the deepaas.v2.model "
        "group). Required when several models are installed and only one is "
        "wanted; by default every installed model is served. Defaults to the "
        "DEEPAAS_V2_MODEL environment variable.",
    ),
    cfg.HostAddressOpt(
        "listen-ip",
        default="127.0.0.1",
        help="IP address the API server listens on.",
    ),
    cfg.PortOpt(
        "listen-port",
        default=5000,
        help="Port the API server listens on.",
    ),
    cfg.StrOpt(
        "base-path",
        default="",
        help="Path prefix for every route, the spec and the UI, for a server "
        "published under a sub-path behind a reverse proxy (e.g. /models).",
    ),
    cfg.BoolOpt(
        "predict-endpoint",
        default=True,
        help="Serve the predict endpoints.",
    ),
    cfg.BoolOpt(
        "train-endpoint",
        default=True,
        help="Serve the train endpoints.",
    ),
    cfg.BoolOpt(
        "inference-protocol",
        default=True,
        help="Serve the Open Inference Protocol (REST) beside the DEEPaaS API: "
        "/v2/health/live and /ready, each model's readiness, its metadata "
        "with the protocol's keys and, with the predict endpoints, "
        "/v2/models/<name>/infer.",
    ),
    cfg.BoolOpt(
        "doc-endpoint",
        default=True,
        help="Serve the Swagger UI at /api and /ui.",
    ),
    cfg.BoolOpt(
        "metrics-endpoint",
        default=True,
        help="Serve GET /metrics in the Prometheus text format.",
    ),
    cfg.BoolOpt(
        "debug-endpoint",
        default=False,
        help="Serve GET /v2/debug/ with captured output and logs.",
    ),
    cfg.IntOpt(
        "max-connections",
        default=1000,
        min=0,
        help="Most client connections open at once; one more is answered 503 "
        "and closed, rather than the server running out of file descriptors "
        "(the limit is lowered to fit the process' descriptor limit). 0 means "
        "no limit.",
    ),
    cfg.FloatOpt(
        "header-timeout",
        default=30.0,
        min=0,
        help="Seconds a request's line and headers may take to arrive (408 and "
        "the connection closed beyond). 0 means no limit.",
    ),
    cfg.FloatOpt(
        "keepalive-timeout",
        default=75.0,
        min=0,
        help="Seconds an idle keep-alive connection is kept open.",
    ),
    cfg.BoolOpt(
        "answer-half-closed",
        default=False,
        help="Answer a client that shuts down writing while its request runs "
        "(a half-close). TCP cannot tell that from a client that went away, "
        "whose call is cancelled by default.",
    ),
    cfg.FloatOpt(
        "shutdown-timeout",
        default=30.0,
        min=0,
        help="On SIGTERM/SIGINT, seconds to let in-flight requests finish before "
        "they are cut; running trainings are then recorded as interrupted.",
    ),
]

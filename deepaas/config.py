"""Every deepaas option, declared once with its help text.

Options are registered on a ``ConfigOpts`` object handed in by the caller, so
nothing here holds state: the commands build their own configuration, tests
build theirs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from oslo_config import cfg

from deepaas import __version__

MODEL_NAME_ENV = "DEEPAAS_V2_MODEL"

# Where the server listens, what it serves, and its connections.
server_opts = [
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

# Request bodies: their sizes, their time, where uploaded files go.
upload_opts = [
    cfg.IntOpt(
        "client-max-size",
        default=0,
        min=0,
        help="Largest request body accepted, in bytes; larger ones get 413. "
        "0 means no limit.",
    ),
    cfg.IntOpt(
        "max-memory-body",
        default=16 * 1024 * 1024,
        min=0,
        help="Largest request body read into memory, in bytes, counted after "
        "decompression: a JSON or urlencoded body, or the non-file fields of a "
        "multipart body (413 beyond). Uploaded files stream to disk and are "
        "bounded by --client-max-size only. 0 means no limit.",
    ),
    cfg.FloatOpt(
        "body-timeout",
        default=60.0,
        min=0,
        help="Seconds a request body may go without sending data (a file "
        "upload), or take in all (a body read into memory); 408 beyond. 0 "
        "means no limit.",
    ),
    cfg.IntOpt(
        "max-parts",
        default=500,
        min=0,
        help="Most parts a multipart request body may have (413 beyond). "
        "0 means no limit.",
    ),
    cfg.StrOpt(
        "upload-memory-dir",
        default="/dev/shm",
        help="Memory-backed directory (a tmpfs) for the uploaded files of small "
        "predictions, which the model then reads at memory speed. Empty, or "
        "a directory that cannot be written, keeps every upload on disk "
        "(in TMPDIR). A model that renames an upload with os.rename() to "
        "another file system must copy it instead (shutil.move does).",
    ),
    cfg.IntOpt(
        "upload-memory-max",
        default=8 * 1024 * 1024,
        min=0,
        help="Largest prediction request, in bytes (its declared "
        "Content-Length), whose files go to --upload-memory-dir; larger ones, "
        "those of unknown length and those of trainings go to disk.",
    ),
    cfg.IntOpt(
        "upload-memory-total",
        default=256 * 1024 * 1024,
        min=0,
        help="Most bytes the uploads of all requests may hold in "
        "--upload-memory-dir at once; beyond, new uploads go to disk.",
    ),
    cfg.BoolOpt(
        "strict-arguments",
        default=False,
        help="Refuse (422) arguments a model does not declare. By default they "
        "are ignored, as upstream DEEPaaS does, and named in the answer's "
        "Deepaas-Ignored-Arguments header.",
    ),
]

# The worker processes (or Ray actors) that run the model, and their queue.
worker_opts = [
    cfg.IntOpt(
        "workers",
        short="p",
        default=1,
        min=1,
        help="Number of worker processes that run predict and train calls. "
        "Each loads the model once.",
    ),
    cfg.BoolOpt(
        "warm",
        default=True,
        help="Call the model's warm() in every worker before it takes calls.",
    ),
    cfg.StrOpt(
        "executor",
        default="local",
        choices=[
            ("local", "worker processes on this machine"),
            (
                "ray",
                "workers as Ray actors, on this machine or across a cluster "
                "(needs pip install 'deepaas[ray]')",
            ),
        ],
        help="Where the workers run. With ray, the server (HTTP, validation, the "
        "spec, training records) stays here and each worker is a Ray actor.",
    ),
    cfg.FloatOpt(
        "predict-timeout",
        default=0.0,
        min=0,
        help="Longest a predict may run, in seconds; a slower one answers 504 and "
        "its worker is replaced. 0 means no limit.",
    ),
    cfg.FloatOpt(
        "queue-timeout",
        default=60.0,
        min=0,
        help="Longest a predict waits for a free worker, in seconds, before it "
        "answers 503 with Retry-After. 0 means wait as long as it takes.",
    ),
    cfg.IntOpt(
        "max-queued-predictions",
        default=0,
        min=0,
        help="Most predictions of a model that may wait for a free worker; one "
        "more is answered 503 with Retry-After at once, before its body is read. "
        "0 means no limit (--queue-timeout still bounds each wait).",
    ),
    cfg.FloatOpt(
        "worker-heartbeat",
        default=10.0,
        min=0,
        help="Seconds between checks that idle workers still answer; one that "
        "misses a check (stopped, wedged) is replaced. 0 turns the checks off.",
    ),
    cfg.IntOpt(
        "max-batch-size",
        default=16,
        min=1,
        help="Most predictions a worker runs in one predict_batch() call, for "
        "models that define predict_batch (an optional addition to the model "
        "API). Waiting predictions are grouped as a worker becomes free. 1 "
        "turns batching off: every prediction is a predict() call.",
    ),
    cfg.FloatOpt(
        "max-batch-wait-ms",
        default=2.0,
        min=0,
        help="Under load (another worker busy), how long in milliseconds a free "
        "worker of a batching model waits for more predictions to fill a batch "
        "before it runs the ones it has. With every worker free a prediction "
        "runs at once. 0 never waits: batches then form only from predictions "
        "that queued while every worker was busy.",
    ),
    cfg.ListOpt(
        "worker-gpus",
        default=[],
        help="GPU device ids (for example 0,1) given to the workers round robin: "
        "worker i sees only the i-th (CUDA_VISIBLE_DEVICES, set before the model "
        "is imported; a replacement sees what the worker it replaces saw). "
        "Empty leaves the workers' environment as the server's.",
    ),
    cfg.StrOpt(
        "ray-address",
        default="",
        help="With --executor ray: the Ray cluster to join, 'auto' or HOST:PORT "
        "(the head's GCS address). Empty: the cluster the RAY_ADDRESS "
        "environment variable names, or else a new Ray runtime on this machine.",
    ),
    cfg.FloatOpt(
        "worker-num-cpus",
        default=1.0,
        min=0,
        help="With --executor ray: CPUs each worker asks Ray for (fractions allowed).",
    ),
    cfg.FloatOpt(
        "worker-num-gpus",
        default=0.0,
        min=0,
        help="With --executor ray: GPUs each worker asks Ray for (fractions "
        "allowed, to share a GPU); Ray sets the worker's CUDA_VISIBLE_DEVICES.",
    ),
    cfg.DictOpt(
        "worker-resources",
        default={},
        help="With --executor ray: custom Ray resources each worker asks for, as "
        "NAME:AMOUNT pairs (for example gpu_a100:1), to place the workers on the "
        "nodes that declare them (ray start --resources).",
    ),
]

# What the server keeps on disk, and for how long.
state_opts = [
    cfg.StrOpt(
        "state-dir",
        default=os.path.join(
            os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"),
            "deepaas",
        ),
        sample_default="$XDG_DATA_HOME/deepaas (~/.local/share/deepaas)",
        help="Directory where deepaas keeps its state: the training records "
        "(trainings.sqlite3) and each training's log (logs/<uuid>.log). It must "
        "be writable; keep it on a volume to keep trainings across restarts.",
    ),
    cfg.FloatOpt(
        "training-retention",
        default=0.0,
        min=0,
        help="Seconds a finished training is kept (record and log) after it "
        "ended, for example 604800 for a week; older ones are removed. 0 keeps "
        "them until deleted.",
    ),
    cfg.FloatOpt(
        "job-retention",
        default=86400.0,
        min=0,
        help="Seconds an asynchronous prediction (sent with Prefer: "
        "respond-async) and its result are kept after it ended; older ones are "
        "removed. 0 keeps them until deleted.",
    ),
    cfg.IntOpt(
        "training-log-max-bytes",
        default=0,
        min=0,
        help="Most bytes a training's log keeps: beyond it the oldest output is "
        "dropped (checked every second), and the log, when read, starts with a "
        "line saying how much was cut. 0 means no limit.",
    ),
]

# Trainings and asynchronous predictions: how many at once.
job_opts = [
    cfg.IntOpt(
        "max-trainings",
        default=0,
        min=0,
        help="Most trainings running at once on this server, all models "
        "together; one more is answered 429 with Retry-After and nothing is "
        "started. 0 means no limit.",
    ),
    cfg.IntOpt(
        "max-trainings-per-user",
        default=0,
        min=0,
        help="With authentication on: most trainings one user may have running "
        "at once; one more is answered 429 with Retry-After. 0 means no limit.",
    ),
    cfg.IntOpt(
        "max-jobs",
        default=1000,
        min=1,
        help="Most asynchronous predictions waiting or running at once, all "
        "users and models together; one more is answered 429 with Retry-After "
        "and nothing is stored.",
    ),
    cfg.IntOpt(
        "max-jobs-per-user",
        default=100,
        min=1,
        help="With authentication on: most asynchronous predictions one user "
        "may have waiting or running at once; one more is answered 429 with "
        "Retry-After and nothing is stored.",
    ),
    cfg.IntOpt(
        "max-job-arguments",
        default=1 << 20,
        min=1024,
        help="Most bytes of an asynchronous prediction's arguments, as the JSON "
        "kept with it (an uploaded file counts as its name); more is answered "
        "413 and nothing is stored.",
    ),
]

# Webhooks: where they may go, how they are signed and retried.
webhook_opts = [
    cfg.ListOpt(
        "webhook-allow",
        default=[],
        help="Hosts that a Webhook-URL may name: names matched label by label "
        "(hooks.example.org, *.example.org for one label under it), addresses "
        "or networks (10.0.0.0/24), each with a port (:8443, or :* for any); "
        "without one, ports 80 and 443 only. A name is looked up at every "
        "delivery, and loopback, private, link-local and multicast addresses "
        "are refused unless an entry names the address or its network. None "
        "(the default): webhooks are refused with a 422, so that the server "
        "cannot be made to call any address.",
    ),
    cfg.StrOpt(
        "webhook-secret",
        default="",
        secret=True,
        help="The key that signs webhook deliveries as the Standard Webhooks "
        "specification says (webhook-id, webhook-timestamp, webhook-signature "
        "headers): whsec_ and the key in base64. Empty: deliveries go unsigned.",
    ),
    cfg.IntOpt(
        "webhook-attempts",
        default=8,
        min=1,
        help="Most attempts to deliver one webhook; between them the wait "
        "doubles from one second (at most ten minutes). Pending deliveries "
        "survive a restart.",
    ),
]

# Who may call the server, from which sites and names.
security_opts = [
    cfg.StrOpt(
        "api-keys-file",
        default="",
        help="Turns authentication on with API keys: a file with one key per "
        "line, 'KEY ROLES [NAME]', where KEY is the key itself or sha256:<hex "
        "digest of it> (deepaas-api-key makes both), ROLES a comma-separated "
        "list of predict, train and admin, and NAME who owns what the key "
        "starts. Clients send the key as 'Authorization: Bearer KEY' or "
        "'X-API-Key: KEY'. Read again on SIGHUP.",
    ),
    cfg.StrOpt(
        "oidc-issuer",
        default="",
        help="Turns authentication on with OpenID Connect access tokens (JWT) "
        "of this issuer (for example https://aai.egi.eu/auth/realms/egi), sent "
        "as 'Authorization: Bearer TOKEN'. Its signing keys come from "
        "--oidc-jwks or else from the issuer's discovery document.",
    ),
    cfg.StrOpt(
        "oidc-audience",
        default="",
        help="With --oidc-issuer (and then required): the audience (aud) a "
        "token must name, so that a token the issuer made for another service "
        "is not accepted here. '*' accepts any audience (said at start-up).",
    ),
    cfg.StrOpt(
        "oidc-jwks",
        default="",
        help="With --oidc-issuer: the issuer's keys (a JWKS), as an https URL or "
        "a file. Kept for an hour and fetched again at once for a token signed "
        "with an unknown key. Empty: the jwks_uri of the issuer's "
        "/.well-known/openid-configuration.",
    ),
    cfg.StrOpt(
        "oidc-roles-claim",
        default="groups",
        help="With --oidc-issuer: the token claim that lists the user's roles or "
        "groups, a dotted path for nested claims (realm_access.roles, "
        "eduperson_entitlement).",
    ),
    cfg.MultiStrOpt(
        "oidc-role",
        default=[],
        help="With --oidc-issuer: ROLE=VALUE gives role ROLE (predict, train or "
        "admin) to users whose roles claim holds VALUE, for example "
        "admin=urn:mace:egi.eu:group:vo.example.org:role=manager#aai.egi.eu. "
        "Repeat for several; at least one is required with --oidc-issuer. "
        "Roles come from these alone: a claim value that happens to be called "
        "admin gives no role.",
    ),
    cfg.StrOpt(
        "oidc-user-claim",
        default="sub",
        help="With --oidc-issuer: the claim naming the user, who owns the "
        "trainings they start.",
    ),
    cfg.BoolOpt(
        "public-docs",
        default=False,
        help="With authentication on: serve the spec (/swagger.json, "
        "/openapi.json) and Swagger UI without credentials. Swagger UI's "
        "Authorize button then takes a key or token for the calls it makes.",
    ),
    cfg.BoolOpt(
        "public-metrics",
        default=False,
        help="With authentication on: serve /metrics without credentials (for a "
        "Prometheus on a private network); otherwise it needs the admin role.",
    ),
    cfg.ListOpt(
        "allowed-hosts",
        default=[],
        help="Host names (the Host header) this server answers to, besides "
        "its loopback names and addresses: exact names, '*.example.org' for "
        "one label under it, a ':port' to require that port, or '*' for any. "
        "A server listening on a loopback address refuses (421) requests for "
        "any other name, so that a web page whose name was made to resolve to "
        "127.0.0.1 (DNS rebinding) cannot drive it; on other addresses, names "
        "are checked only when this option is set.",
    ),
    cfg.MultiStrOpt(
        "cors-origin",
        default=[],
        help="An origin (for example https://app.example.org) whose web pages "
        "may call this server from the browser: its requests get CORS headers "
        "and their preflights are answered. Repeat for several. Pages of any "
        "other site may not POST or DELETE here (checked with Sec-Fetch-Site "
        "and Origin); clients that are not browsers are not affected.",
    ),
]

# What is logged, and where.
logging_opts = [
    cfg.BoolOpt(
        "debug",
        short="d",
        default=False,
        help="Log at DEBUG level and show tracebacks.",
    ),
    cfg.StrOpt(
        "log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="Level of the log messages written.",
    ),
    cfg.StrOpt(
        "log-format",
        default="text",
        choices=["text", "json"],
        help="Log lines as text or as one JSON object per line (for log "
        "collectors). Applies to the server and its workers.",
    ),
    cfg.BoolOpt(
        "use-json",
        default=False,
        help="Log JSON lines: the same as --log-format json (the option's "
        "name in upstream DEEPaaS).",
    ),
    cfg.StrOpt(
        "log-date-format",
        metavar="DATE_FORMAT",
        help="strftime format of the time in text log lines (default: ISO 8601 "
        "with milliseconds).",
    ),
    cfg.StrOpt(
        "log-file",
        metavar="PATH",
        deprecated_name="logfile",
        help="Write logs to this file instead of standard error (relative to "
        "--log-dir when that is set).",
    ),
    cfg.StrOpt(
        "log-dir",
        deprecated_name="logdir",
        help="Directory of the log file; without --log-file the file is "
        "deepaas-run.log there.",
    ),
    cfg.BoolOpt(
        "watch-log-file",
        default=False,
        help="Reopen the log file when it is moved or removed (for logrotate "
        "without copytruncate).",
    ),
    cfg.BoolOpt(
        "use-syslog",
        default=False,
        help="Also send logs to syslog (/dev/log, else UDP to localhost:514).",
    ),
    cfg.StrOpt(
        "syslog-log-facility",
        default="LOG_USER",
        help="Syslog facility of the logs sent with --use-syslog: LOG_USER, "
        "LOG_LOCAL0 to LOG_LOCAL7, LOG_DAEMON, ...",
    ),
    cfg.BoolOpt(
        "use-journal",
        default=False,
        help="Also send logs to the systemd journal, with the request id and "
        "the logger as journal fields.",
    ),
    cfg.StrOpt(
        "log-config-append",
        metavar="PATH",
        deprecated_opts=[
            cfg.DeprecatedOpt("log-config"),
            cfg.DeprecatedOpt("log_config"),
        ],
        help="A logging configuration file (the standard library's INI format, "
        "or JSON for dictConfig). When it is given it configures all logging "
        "and the other logging options are ignored.",
    ),
    cfg.BoolOpt(
        "access-log",
        default=True,
        help="Log one line per HTTP request: method, path, status, duration "
        "and request id.",
    ),
]


@dataclasses.dataclass(frozen=True)
class Concern:
    """Options that belong together: documented under one title and read
    into one settings object (``deepaas.settings``)."""

    name: str
    title: str
    opts: Sequence[cfg.Opt]


CONCERNS = [
    Concern("server", "Server", server_opts),
    Concern("uploads", "Uploads and request bodies", upload_opts),
    Concern("workers", "Workers", worker_opts),
    Concern("state", "State", state_opts),
    Concern("jobs", "Trainings and jobs", job_opts),
    Concern("webhooks", "Webhooks", webhook_opts),
    Concern("security", "Security", security_opts),
    Concern("logging", "Logging", logging_opts),
]


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Every option, for registration and the sample generator. The options
    stay in one flat group (``[DEFAULT]`` in a configuration file, plain
    ``--name`` on the command line), as upstream DEEPaaS has them."""
    return [(None, [opt for concern in CONCERNS for opt in concern.opts])]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option on ``conf`` as a command-line option."""
    for group, opts in list_opts():
        conf.register_cli_opts(opts, group=group)


def build_config(
    argv: Sequence[str] | None = None,
    *,
    default_config_files: list[str] | None = None,
) -> cfg.ConfigOpts:
    """Return a fresh ``ConfigOpts`` with every option, parsed from ``argv``."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf.set_default("model_name", os.environ.get(MODEL_NAME_ENV) or None)
    conf(
        list(argv) if argv is not None else [],
        project="deepaas",
        version=__version__,
        default_config_files=default_config_files or [],
    )
    return conf

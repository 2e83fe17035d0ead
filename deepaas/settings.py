"""The options, read once into typed settings, one object per concern.

``config`` declares the options (flat on the command line, as upstream
DEEPaaS has them) and groups them by concern; ``Settings.from_conf`` reads
each group into its dataclass here, whose fields are the options' names.
The app and the commands are assembled from these objects: nothing reads
the ``ConfigOpts`` after start-up, and a handler is handed the values it
needs when its route is made.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, Self

from oslo_config import cfg

from deepaas import config, tracing


def normalize_base_path(base_path: str | None) -> str:
    """``/x/y`` from ``x/y/``, ``/x/y`` or ``''``."""
    base = (base_path or "").strip().strip("/")
    return f"/{base}" if base else ""


class _Concern:
    """What every settings class shares: it is read from the options of the
    concern of ``config.CONCERNS`` named ``concern``, one field each."""

    concern: ClassVar[str]

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Self:
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = conf[field.name]
            if isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, dict):
                value = dict(value)
            values[field.name] = value
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ServerSettings(_Concern):
    concern = "server"

    model_name: str | None
    listen_ip: str
    listen_port: int
    base_path: str
    predict_endpoint: bool
    train_endpoint: bool
    inference_protocol: bool
    doc_endpoint: bool
    metrics_endpoint: bool
    debug_endpoint: bool
    max_connections: int
    header_timeout: float
    keepalive_timeout: float
    answer_half_closed: bool
    shutdown_timeout: float

    @property
    def base(self) -> str:
        """The path prefix of every route: ``''`` or ``/x/y``."""
        return normalize_base_path(self.base_path)


@dataclasses.dataclass(frozen=True)
class UploadSettings(_Concern):
    concern = "uploads"

    client_max_size: int
    max_memory_body: int
    body_timeout: float
    max_parts: int
    upload_memory_dir: str
    upload_memory_max: int
    upload_memory_total: int
    strict_arguments: bool


@dataclasses.dataclass(frozen=True)
class WorkerSettings(_Concern):
    concern = "workers"

    workers: int
    warm: bool
    executor: str
    predict_timeout: float
    queue_timeout: float
    max_queued_predictions: int
    worker_heartbeat: float
    max_batch_size: int
    max_batch_wait_ms: float
    worker_gpus: tuple[str, ...]
    ray_address: str
    worker_num_cpus: float
    worker_num_gpus: float
    worker_resources: dict[str, str]

    @property
    def devices(self) -> list[str]:
        """The GPUs named by --worker-gpus, one per worker in turn."""
        return [d.strip() for d in self.worker_gpus if d.strip()]


@dataclasses.dataclass(frozen=True)
class StateSettings(_Concern):
    concern = "state"

    state_dir: str
    database: str
    replica_lease: float
    training_retention: float
    job_retention: float
    training_log_max_bytes: int

    @property
    def logs_dir(self) -> str:
        """Where trainings' logs are written."""
        return os.path.join(self.state_dir, "logs")

    @property
    def jobs_dir(self) -> str:
        """Where jobs' results are written."""
        return os.path.join(self.state_dir, "jobs")


@dataclasses.dataclass(frozen=True)
class JobSettings(_Concern):
    concern = "jobs"

    max_trainings: int
    max_trainings_per_user: int
    max_jobs: int
    max_jobs_per_user: int
    max_job_arguments: int


@dataclasses.dataclass(frozen=True)
class WebhookSettings(_Concern):
    concern = "webhooks"

    webhook_allow: tuple[str, ...]
    webhook_secret: str
    webhook_attempts: int


@dataclasses.dataclass(frozen=True)
class SecuritySettings(_Concern):
    concern = "security"

    api_keys_file: str
    oidc_issuer: str
    oidc_audience: str
    oidc_jwks: str
    oidc_roles_claim: str
    oidc_role: tuple[str, ...]
    oidc_user_claim: str
    public_docs: bool
    public_metrics: bool
    allowed_hosts: tuple[str, ...]
    cors_origin: tuple[str, ...]

    @property
    def authenticates(self) -> bool:
        """Whether requests must carry credentials."""
        return bool(self.api_keys_file or self.oidc_issuer)


@dataclasses.dataclass(frozen=True)
class LoggingSettings(_Concern):
    concern = "logging"

    debug: bool
    log_level: str
    log_format: str
    use_json: bool
    log_date_format: str | None
    log_file: str | None
    log_dir: str | None
    watch_log_file: bool
    use_syslog: bool
    syslog_log_facility: str
    use_journal: bool
    log_config_append: str | None
    access_log: bool
    otel: bool

    @property
    def traced(self) -> bool:
        """Whether traces are sent (--otel, or an OTLP endpoint in the
        environment)."""
        return tracing.wanted(self.otel)

    @property
    def format(self) -> str:
        """``text`` or ``json``: --log-format, or json with --use-json."""
        return "json" if self.use_json else self.log_format

    @property
    def path(self) -> str | None:
        """Where the log file is (--log-file, under --log-dir), if anywhere."""
        if self.log_dir:
            return os.path.join(self.log_dir, self.log_file or "deepaas-run.log")
        return self.log_file or None


# The settings class of each concern of config.CONCERNS, in their order.
CLASSES: tuple[type[_Concern], ...] = (
    ServerSettings,
    UploadSettings,
    WorkerSettings,
    StateSettings,
    JobSettings,
    WebhookSettings,
    SecuritySettings,
    LoggingSettings,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option, by concern."""

    server: ServerSettings
    uploads: UploadSettings
    workers: WorkerSettings
    state: StateSettings
    jobs: JobSettings
    webhooks: WebhookSettings
    security: SecuritySettings
    logging: LoggingSettings

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Settings:
        return cls(
            server=ServerSettings.from_conf(conf),
            uploads=UploadSettings.from_conf(conf),
            workers=WorkerSettings.from_conf(conf),
            state=StateSettings.from_conf(conf),
            jobs=JobSettings.from_conf(conf),
            webhooks=WebhookSettings.from_conf(conf),
            security=SecuritySettings.from_conf(conf),
            logging=LoggingSettings.from_conf(conf),
        )

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Settings:
        """The settings of a command line (default: every option at its
        default)."""
        return cls.from_conf(config.build_config(argv or []))


__all__ = [
    "CLASSES",
    "JobSettings",
    "LoggingSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "StateSettings",
    "UploadSettings",
    "WebhookSettings",
    "WorkerSettings",
    "normalize_base_path",
]

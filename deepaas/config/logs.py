"""Options of logging: what is logged, and where."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
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
    cfg.BoolOpt(
        "otel",
        default=False,
        help="Send OpenTelemetry traces of requests, calls, trainings and jobs "
        "over OTLP/HTTP (pip install 'deepaas[otel]'). Also on when "
        "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is "
        "set; the standard OTEL_* variables (OTEL_SERVICE_NAME, "
        "OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG...) apply. Log lines then "
        "name their trace.",
    ),
]

"""Logging set-up for the server, its workers and the commands.

Every record carries ``request_id``: the id of the HTTP request being served
(``-`` outside one). The server sets it per request, and a worker sets it for
the duration of each call, so a model's own log lines name the request too.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import typing

from pythonjsonlogger.json import JsonFormatter

if typing.TYPE_CHECKING:
    from oslo_config import cfg

TEXT_FORMAT = (
    "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s]: %(message)s"
)
JSON_FIELDS = (
    "%(asctime)s %(process)d %(levelname)s %(name)s %(request_id)s %(message)s"
)

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "deepaas_request_id", default="-"
)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records that do not bring their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def formatter(log_format: str, label: str = "") -> logging.Formatter:
    """The formatter for ``log_format`` (``text`` or ``json``).

    ``label`` names the process in text lines (a worker says whose it is); in
    JSON it is the ``worker`` field.
    """
    if log_format == "json":
        static = {"worker": label} if label else None
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields=static,
        )
    text = TEXT_FORMAT
    if label:
        escaped = label.replace("%", "%%")  # a literal in a %-style format
        text = text.replace("%(name)s", f"[{escaped}] %(name)s")
    return logging.Formatter(text)


def configure(
    level: int, log_format: str, *, log_file: str | None = None, label: str = ""
) -> None:
    """Send every log record at ``level`` or above to one handler."""
    # Records skip what no deepaas format shows: the caller's file and line,
    # the thread and the process name (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, label))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def setup(conf: cfg.ConfigOpts) -> None:
    """Configure the root logger from the logging options."""
    level = logging.DEBUG if conf.debug else getattr(logging, conf.log_level)
    configure(level, conf.log_format, log_file=conf.log_file)
    # Access lines are INFO: shown at the INFO and DEBUG levels, unless
    # --noaccess-log turns them off.
    logging.getLogger("aiohttp.access").setLevel(
        logging.NOTSET if conf.access_log else logging.WARNING
    )

"""Logging set-up for the server, its workers and the commands.

Every record carries ``request_id``: the id of the HTTP request being served
(``-`` outside one). The server sets it per request, and a worker sets it for
the duration of each call, so a model's own log lines name the request too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import logging.handlers
import os
import socket
import struct
import sys
import time
import typing

from pythonjsonlogger.json import JsonFormatter

from deepaas import exceptions
from deepaas.tracing import TRACE_ID

if typing.TYPE_CHECKING:
    from deepaas.settings import LoggingSettings

TEXT_FORMAT = (
    "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s]: %(message)s"
)
JSON_FIELDS = (
    "%(asctime)s %(process)d %(levelname)s %(name)s %(request_id)s %(message)s"
)

SYSLOG_SOCKET = "/dev/log"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "deepaas_request_id", default="-"
)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and ``trace_id``) to records that do not bring
    their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "trace_id"):
            record.trace_id = TRACE_ID.get()  # with tracing on
        return True


class CachedTime(logging.Formatter):
    """Formats a record's time once per second, not once per record: a
    busy server writes thousands of access lines a second, and strftime
    with its time-zone look-up is a good part of each."""

    _second = -1
    _text = ""

    def formatTime(  # noqa: N802 - logging's name
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        return self.time_text(record.created, record.msecs, datefmt)

    def time_text(
        self, created: float, msecs: float, datefmt: str | None = None
    ) -> str:
        """The time ``created`` (``msecs`` its milliseconds) as
        ``formatTime`` shows a record made then."""
        second = int(created)
        if second != self._second:
            converted = self.converter(created)
            self._text = time.strftime(datefmt or self.default_time_format, converted)
            self._second = second
        if datefmt or not self.default_msec_format:
            return self._text
        return self.default_msec_format % (self._text, msecs)


class TextFormatter(CachedTime, logging.Formatter):
    """The text lines of deepaas' logs."""


class JSONFormatter(CachedTime, JsonFormatter):
    """One JSON object per record."""


def formatter(
    log_format: str,
    label: str = "",
    date_format: str | None = None,
    *,
    traced: bool = False,
) -> logging.Formatter:
    """The formatter for ``log_format`` (``text`` or ``json``).

    ``label`` names the process in text lines (a worker says whose it is); in
    JSON it is the ``worker`` field. ``date_format`` is strftime's, for the
    time. With ``traced`` each line names its trace too.
    """
    if log_format == "json":
        static = {"worker": label} if label else None
        return JSONFormatter(
            JSON_FIELDS + " %(trace_id)s" if traced else JSON_FIELDS,
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields=static,
            datefmt=date_format,
        )
    text = TEXT_FORMAT
    if traced:
        text = text.replace("[%(request_id)s]", "[%(request_id)s %(trace_id)s]")
    if label:
        escaped = label.replace("%", "%%")  # a literal in a %-style format
        text = text.replace("%(name)s", f"[{escaped}] %(name)s")
    return TextFormatter(text, datefmt=date_format)


def configure(
    level: int,
    log_format: str,
    *,
    handlers: list[logging.Handler] | None = None,
    label: str = "",
    date_format: str | None = None,
    traced: bool = False,
) -> None:
    """Send every log record at ``level`` or above to ``handlers`` (standard
    error by default), formatted as ``log_format`` (naming each line's trace
    with ``traced``)."""
    # Records skip what no deepaas format shows: the caller's file and line,
    # the thread and the process name (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    if handlers is None:
        handlers = [logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(formatter(log_format, label, date_format, traced=traced))
        handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)


def setup(settings: LoggingSettings) -> None:
    """Configure the root logger from the logging options.

    Raises ``ConfigurationError`` for a logging option that cannot be used.
    """
    if settings.log_config_append:
        load_config_file(settings.log_config_append)
    else:
        level = (
            logging.DEBUG if settings.debug else getattr(logging, settings.log_level)
        )
        configure(
            level,
            settings.format,
            handlers=handlers_of(settings),
            date_format=settings.log_date_format,
            traced=settings.traced,
        )
    # Access lines are INFO: shown at the INFO and DEBUG levels, unless
    # --noaccess-log turns them off.
    logging.getLogger("aiohttp.access").setLevel(
        logging.NOTSET if settings.access_log else logging.WARNING
    )


def handlers_of(settings: LoggingSettings) -> list[logging.Handler]:
    """The handlers the options ask for: a file or standard error, and
    syslog and the journal when wanted."""
    handlers: list[logging.Handler] = []
    path = settings.path
    try:
        if path is None:
            handlers.append(logging.StreamHandler(sys.stderr))
        elif settings.watch_log_file:
            handlers.append(logging.handlers.WatchedFileHandler(path))
        else:
            handlers.append(logging.FileHandler(path))
    except OSError as exc:
        raise exceptions.ConfigurationError(
            f"Cannot open the log file {path}: {exc.strerror}"
        ) from None
    if settings.use_syslog:
        handlers.append(
            logging.handlers.SysLogHandler(
                address=syslog_address(),
                facility=syslog_facility(settings.syslog_log_facility),
            )
        )
    if settings.use_journal:
        handlers.append(JournalHandler())
    return handlers


def syslog_address() -> str | tuple[str, int]:
    """The local syslog socket, or the syslog port of this host."""
    return SYSLOG_SOCKET if os.path.exists(SYSLOG_SOCKET) else ("localhost", 514)


def syslog_facility(name: str) -> int:
    """The number of a syslog facility named ``LOG_LOCAL0`` or ``local0``."""
    key = name.strip().lower().removeprefix("log_")
    facility = logging.handlers.SysLogHandler.facility_names.get(key)
    if facility is None:
        choices = ", ".join(
            f"LOG_{n.upper()}" for n in logging.handlers.SysLogHandler.facility_names
        )
        raise exceptions.ConfigurationError(
            f"Unknown syslog facility {name!r}; choose one of {choices}."
        )
    return facility


def load_config_file(path: str) -> None:
    """Configure logging from a file: JSON for dictConfig, else INI."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except Exception as exc:  # the logging module raises many kinds
        raise exceptions.ConfigurationError(
            f"Cannot configure logging from {path}: {type(exc).__name__}: {exc}"
        ) from None


class JournalHandler(logging.Handler):
    """Records to the systemd journal, over journald's native protocol.

    The protocol is a datagram of ``FIELD=value`` lines (a value holding a
    newline goes as the field name, a newline, its 64-bit little-endian
    length and the bytes); systemd's own Python binding needs libsystemd to
    build, which is why it is not used here.
    """

    PRIORITIES = {
        logging.CRITICAL: 2,
        logging.ERROR: 3,
        logging.WARNING: 4,
        logging.INFO: 6,
        logging.DEBUG: 7,
    }

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.path = path or JOURNAL_SOCKET
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "MESSAGE": self.format(record),
                "PRIORITY": str(self.PRIORITIES.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": "deepaas",
                "LOGGER_NAME": record.name,
                "REQUEST_ID": str(getattr(record, "request_id", "-")),
            }
            self._socket.sendto(self.encode(fields), self.path)
        except Exception:
            self.handleError(record)

    @staticmethod
    def encode(fields: dict[str, str]) -> bytes:
        """One journal entry in the native protocol."""
        entry = bytearray()
        for key, value in fields.items():
            data = value.encode("utf-8", errors="replace")
            if b"\n" in data:
                entry += key.encode() + b"\n" + struct.pack("<Q", len(data))
                entry += data + b"\n"
            else:
                entry += key.encode() + b"=" + data + b"\n"
        return bytes(entry)

    def close(self) -> None:
        self._socket.close()
        super().close()

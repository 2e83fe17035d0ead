"""Logging options, upstream's (oslo.log's) names included."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepaas import exceptions, log
from deepaas.settings import Settings


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, put back as it was after each test."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], root.level = saved[0], saved[1]


def set_up(*argv: str) -> None:
    log.setup(Settings.parse(list(argv)).logging)


def lines(path: Path) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text().splitlines()


def test_use_json_is_json_lines_in_the_log_dir(tmp_path):
    set_up("--use-json", "--log-dir", str(tmp_path), "--log-file", "api.log")
    logging.getLogger("deepaas.test").warning("hello %s", "json")
    (line,) = lines(tmp_path / "api.log")
    record = json.loads(line)
    assert (record["message"], record["level"], record["logger"]) == (
        "hello json",
        "WARNING",
        "deepaas.test",
    )


def test_log_dir_alone_names_the_file_after_the_command(tmp_path):
    set_up("--log-dir", str(tmp_path))
    logging.getLogger("deepaas.test").warning("in the dir")
    assert "in the dir" in lines(tmp_path / "deepaas-run.log")[0]


def test_log_date_format(tmp_path):
    path = tmp_path / "a.log"
    set_up("--log-file", str(path), "--log-date-format", "DAY %d")
    logging.getLogger("deepaas.test").warning("dated")
    assert lines(path)[0].startswith("DAY ")


def test_an_unwritable_log_file_is_a_clear_error(tmp_path):
    with pytest.raises(exceptions.ConfigurationError) as info:
        set_up("--log-file", str(tmp_path / "missing" / "a.log"))
    assert "Cannot open the log file" in info.value.message


def test_watch_log_file_reopens_a_rotated_file(tmp_path):
    path = tmp_path / "a.log"
    set_up("--log-file", str(path), "--watch-log-file")
    logger = logging.getLogger("deepaas.test")
    logger.warning("before")
    os.rename(path, tmp_path / "a.log.1")
    logger.warning("after")
    assert "before" in (tmp_path / "a.log.1").read_text()
    assert "after" in lines(path)[0]


def bound_datagram_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def test_use_syslog_with_a_facility(tmp_path, monkeypatch):
    address = tmp_path / "log.sock"
    monkeypatch.setattr(log, "SYSLOG_SOCKET", str(address))
    with bound_datagram_socket(address) as syslog:
        set_up("--use-syslog", "--syslog-log-facility", "LOG_LOCAL0")
        logging.getLogger("deepaas.test").warning("to syslog")
        message = syslog.recv(65536).decode()
    assert message.startswith("<132>")  # local0 (16) * 8 + warning (4)
    assert "to syslog" in message


def test_an_unknown_syslog_facility_is_a_clear_error():
    with pytest.raises(exceptions.ConfigurationError) as info:
        set_up("--use-syslog", "--syslog-log-facility", "LOG_NOWHERE")
    assert "LOG_LOCAL0" in info.value.message


def test_use_journal_sends_native_entries(tmp_path, monkeypatch):
    address = tmp_path / "journal.sock"
    monkeypatch.setattr(log, "JOURNAL_SOCKET", str(address))
    with bound_datagram_socket(address) as journal:
        set_up("--use-journal")
        logging.getLogger("deepaas.test").error("first line\nsecond line")
        entry = journal.recv(65536)
    assert b"PRIORITY=3\n" in entry
    assert b"LOGGER_NAME=deepaas.test\n" in entry
    assert b"SYSLOG_IDENTIFIER=deepaas\n" in entry
    # a multi-line message goes with its length
    assert b"MESSAGE\n" in entry and b"second line" in entry


def test_log_config_append_configures_everything(tmp_path):
    path = tmp_path / "from-config.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root\n"
        "[handlers]\nkeys=file\n"
        "[formatters]\nkeys=plain\n"
        "[logger_root]\nlevel=INFO\nhandlers=file\n"
        f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(path)!r},)\n"
        "[formatter_plain]\nformat=CONFIGURED %(message)s\n"
    )
    set_up("--log-config", str(ini), "--use-json")  # the others are ignored
    logging.getLogger("deepaas.test").info("from the file")
    assert lines(path) == ["CONFIGURED from the file"]


def test_a_broken_log_config_file_is_a_clear_error(tmp_path):
    ini = tmp_path / "broken.ini"
    ini.write_text("[loggers]\nkeys=nothing\n")
    with pytest.raises(exceptions.ConfigurationError) as info:
        set_up("--log-config-append", str(ini))
    assert str(ini) in info.value.message


def test_upstream_logging_options_in_a_config_file(tmp_path):
    conf_file = tmp_path / "deepaas.conf"
    conf_file.write_text(
        "[DEFAULT]\n"
        f"log_dir = {tmp_path}\n"
        "logfile = upstream.log\n"
        "use_json = true\n"
        "debug = true\n"
        "use_stderr = false\n"  # an oslo.log option deepaas has no use for
    )
    set_up("--config-file", str(conf_file))
    logging.getLogger("deepaas.test").debug("configured the old way")
    assert json.loads(lines(tmp_path / "upstream.log")[0])["level"] == "DEBUG"


def access_lines(tmp_path: Path, *argv: str) -> tuple[list[str], bool]:
    """One request's access line, written by each path of the access logger
    under these logging options: straight to the handler when it may be
    (``direct``), and as a record."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from deepaas.api import access, keys

    set_up("--log-dir", str(tmp_path), "--log-file", "api.log", *argv)
    request = make_mocked_request("POST", "/v2/models/m/predict/?text=h%C3%A9")
    request[keys.REQUEST_ID] = "rid-1"
    logger = access.AccessLogger(logging.getLogger("aiohttp.access"), "")
    direct = logger.direct is not None
    logger.log(request, web.Response(status=201), 0.01234)
    logger.direct = None
    logger.log(request, web.Response(status=201), 0.01234)
    written = lines(tmp_path / "api.log")
    return written, direct


def test_an_access_line_written_directly_is_the_records_line(tmp_path):
    written, direct = access_lines(tmp_path)
    assert direct  # deepaas' own text lines: written directly
    assert len(written) == 2
    fast, record = written
    # the same line but for the clock's time (23 characters, to the millisecond)
    assert fast[23:] == record[23:]
    assert record[23:].endswith(
        " INFO aiohttp.access [rid-1]: POST /v2/models/m/predict/?text=h%C3%A9 "
        "201 12.3ms -"
    )
    assert fast[:19].count("-") == 2 and fast[19] == ","


def test_the_time_of_a_direct_line_is_the_records(tmp_path):
    formatter = log.formatter("text")
    for created in (1764000000.0, 1764000000.999, 1764000001.0005):
        record = logging.makeLogRecord({"created": created})
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert formatter.time_text(
            created, record.msecs, formatter.datefmt
        ) == formatter.formatTime(record, formatter.datefmt)


@pytest.mark.parametrize(
    "argv", [("--use-json",), ("--log-date-format", "%H:%M:%S"), ("--use-syslog",)]
)
def test_access_lines_are_records_where_anything_else_may_see_them(
    tmp_path, monkeypatch, argv
):
    """JSON lines, or a second handler: every line is a record (a date format
    of the user's is still written directly, with it)."""
    monkeypatch.setattr(log, "SYSLOG_SOCKET", str(tmp_path / "no-syslog"))
    written, direct = access_lines(tmp_path, *argv)
    assert len(written) == 2
    if argv == ("--log-date-format", "%H:%M:%S"):
        assert direct
        assert written[0][8:] == written[1][8:]
        assert written[0][2] == ":" and written[0][8] == " "
    else:
        assert not direct

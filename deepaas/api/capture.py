"""Capture of the server's output and logs for ``GET /v2/debug/``."""

from __future__ import annotations

import collections
import io
import logging
import sys
import threading
from typing import TextIO

from deepaas import log

MAX_LINES = 10_000


class _Tee(io.TextIOBase):
    """A text stream writing both to the original stream and to the capture."""

    def __init__(self, original: TextIO, capture: DebugCapture) -> None:
        self.original = original
        self.capture = capture

    def write(self, text: str) -> int:
        self.capture.append(text)
        return self.original.write(text)

    def flush(self) -> None:
        self.original.flush()

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return self.original.isatty()


class _CaptureHandler(logging.Handler):
    def __init__(self, capture: DebugCapture) -> None:
        super().__init__()
        self.capture = capture
        self.setFormatter(logging.Formatter(log.TEXT_FORMAT))
        self.addFilter(log.RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.capture.append(self.format(record) + "\n")


class DebugCapture:
    """The last ``MAX_LINES`` lines of stdout, stderr and deepaas logs."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._partial = ""
        self._lock = threading.Lock()
        self._handler = _CaptureHandler(self)
        self._saved: tuple[TextIO, TextIO] | None = None

    def append(self, text: str) -> None:
        with self._lock:
            pieces = (self._partial + text).split("\n")
            self._partial = pieces.pop()
            self._lines.extend(p + "\n" for p in pieces)

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines) + self._partial

    def install(self) -> None:
        """Start capturing."""
        if self._saved is not None:
            return
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, self)  # type: ignore[assignment]
        logging.getLogger("deepaas").addHandler(self._handler)

    def uninstall(self) -> None:
        """Stop capturing and put the streams back."""
        if self._saved is None:
            return
        sys.stdout, sys.stderr = self._saved
        self._saved = None
        logging.getLogger("deepaas").removeHandler(self._handler)

"""Connections that stall, or too many of them: found and closed.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but has no
time limit on a request's headers, and no cap on connections. Each connection
of ``deepaas-run`` goes through a ``Guard``, a thin protocol in front of
aiohttp's own, which

- refuses a connection beyond ``--max-connections`` with a 503 at once, rather
  than running out of file descriptors;
- closes one whose request headers take longer than ``--header-timeout``
  (slowloris), with a 408;
- keeps a half-closed connection (the client sent its request, then shut down
  writing) open until its answer is sent: always when the request had not
  started yet, and for a running one with ``--answer-half-closed`` (by
  default a client that closes while its request runs has hung up, and its
  call is cancelled).

Request bodies have their own read time-out, in the parser. ``Connections`` is
the registry the guards and the request middleware share.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import typing
from collections.abc import Callable

LOG = logging.getLogger(__name__)


def _answer(status: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


MAX_TRACKED = 64 * 1024  # bytes of a request looked at for a half-close


def is_whole_request(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a complete request: its headers, and all of the
    body they announce (a chunked one up to its last chunk)."""
    head, found, body = bytes(data).partition(b"\r\n\r\n")
    if not found:
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return body.endswith(b"0\r\n\r\n")
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return False
    return len(body) >= length


class Guard(asyncio.Protocol):
    """One connection, in front of aiohttp's protocol for it."""

    def __init__(self, inner: asyncio.Protocol, connections: Connections) -> None:
        self.inner = inner
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.waiting_since: float | None = None  # first byte of a request
        self.in_request = False
        self.eof = False
        self.refused = False
        self._request = b""  # what came of a request not yet started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses)
        self.transport = typing.cast(asyncio.Transport, transport)
        if not self.connections.admit(self):
            self.refused = True
            self.transport.write(
                _answer(
                    "503 Service Unavailable",
                    "Too many open connections; try again later.",
                )
            )
            transport.close()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if not self.in_request:
            if self.waiting_since is None:
                self.waiting_since = self.connections.now()
                # kept, not copied (a slice of bytes shorter than the limit
                # is the bytes object itself): most requests come whole
                self._request = data[:MAX_TRACKED]
            elif len(self._request) < MAX_TRACKED:
                self._request += data[: MAX_TRACKED - len(self._request)]
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        # TCP does not tell a client that shut down writing (half-close) from
        # one that went away. A whole request not yet started is answered;
        # for one already running, ``answer_half_closed`` decides: answer it,
        # or take the client as gone (aiohttp then cancels the request, and
        # its model call with it).
        self.eof = True
        whole = is_whole_request(self._request)
        if self.waiting_since is not None and not self.in_request and whole:
            return True
        if self.in_request and self.connections.answer_half_closed:
            return True
        return bool(self.inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.forget(self)
        if not self.refused:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self.in_request = True
        self.waiting_since = None

    def request_ended(self) -> None:
        """The request's handler is done (its answer is being sent)."""
        self.in_request = False

    def time_out(self) -> None:
        """The request headers took too long: answer 408 and close."""
        LOG.info("Closing a connection whose request headers took too long (408)")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                _answer("408 Request Timeout", "The request took too long to arrive.")
            )
            self.transport.close()


class Connections:
    """The open connections of a server, and their limits (0 for none)."""

    def __init__(
        self,
        max_connections: int = 0,
        header_timeout: float = 0,
        clock: Callable[[], float] | None = None,
        *,
        answer_half_closed: bool = False,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.answer_half_closed = answer_half_closed
        self._guards: set[Guard] = set()
        self._by_transport: dict[int, Guard] = {}
        # the loop's clock (asyncio's loops use time.monotonic)
        self._clock = clock or time.monotonic
        self.refused = 0  # connections turned away, for the metrics
        self.timed_out = 0

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return len(self._guards)

    def guard(self, inner: asyncio.Protocol) -> Guard:
        """A protocol factory's product wrapped: ``loop.create_server(lambda:
        connections.guard(server()), ...)``."""
        return Guard(inner, self)

    def admit(self, guard: Guard) -> bool:
        if self.max_connections and len(self._guards) >= self.max_connections:
            self.refused += 1
            return False
        self._guards.add(guard)
        if guard.transport is not None:
            self._by_transport[id(guard.transport)] = guard
        return True

    def forget(self, guard: Guard) -> None:
        self._guards.discard(guard)
        if guard.transport is not None:
            self._by_transport.pop(id(guard.transport), None)

    def of(self, transport: object) -> Guard | None:
        """The guard of a request's connection (None outside deepaas-run)."""
        return self._by_transport.get(id(transport))

    async def watch(self, interval: float = 1.0) -> None:
        """Close connections whose request headers are overdue, for good."""
        while True:
            await asyncio.sleep(interval)
            if not self.header_timeout:
                continue
            deadline = self.now() - self.header_timeout
            for guard in list(self._guards):
                if guard.waiting_since is not None and guard.waiting_since < deadline:
                    self.timed_out += 1
                    guard.waiting_since = None
                    guard.time_out()

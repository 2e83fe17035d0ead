"""The front end's side of a Ray cluster: its connection to Ray, shared by
the executors of every model (``Connection``), the handshake by which a
worker process started on a node proves whose it is (``Handshake``), and how
an actor ended, in words. Imported by ``ray_executor`` only, after the
environment Ray reads is set.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

import ray

from deepaas import exceptions
from deepaas.runtime.channel import Channel
from deepaas.runtime.ray_worker import Placement

LOG = logging.getLogger(__name__)
NAMESPACE = "deepaas"
TOKEN_SIZE = 32  # bytes of the token a worker's connection opens with
HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to send it
CONNECT_CHECK = 10.0  # seconds a cluster's address has to answer

# A token and the connection that sent it -> the channel of the worker it
# names (None: nobody expects it)
Connected = Callable[[bytes, asyncio.Transport], "Channel | None"]


class Connection:
    """This process's connection to Ray, shared by the executors of every
    model: made by the first to start, closed by the last to stop (unless
    something else connected this process to Ray first)."""

    lock = threading.Lock()
    users = 0
    ours = False

    @classmethod
    def open(cls, address: str, num_cpus: float = 0) -> None:
        """Join the cluster at ``address`` (``auto``, ``HOST:PORT``), or
        with an empty one, the cluster ``RAY_ADDRESS`` names or else a new
        Ray runtime on this machine, with ``num_cpus`` logical CPUs (what
        the workers of every model ask for together: the local executor
        starts them all too) or this machine's count if that is more."""
        with cls.lock:
            cls.users += 1
            if ray.is_initialized():
                return
            address = address or os.environ.get("RAY_ADDRESS", "")
            options: dict[str, Any] = {
                "namespace": NAMESPACE,
                "configure_logging": False,
                "log_to_driver": True,
            }
            try:
                if address:
                    LOG.info("Joining the Ray cluster at %s", address)
                    check_reachable(address)
                    ray.init(address=address, **options)
                else:
                    cpus = max(math.ceil(num_cpus), os.cpu_count() or 1)
                    LOG.info("Starting a Ray runtime on this machine (%d CPUs)", cpus)
                    ray.init(
                        address="local",
                        include_dashboard=False,
                        num_cpus=cpus,
                        **options,
                    )
            except exceptions.DeepaasError:
                cls.users -= 1
                raise
            except Exception as exc:
                cls.users -= 1
                what = f"join the Ray cluster at {address}" if address else "start Ray"
                raise exceptions.ConfigurationError(
                    f"Could not {what}: {type(exc).__name__}: {exc}"
                ) from None
            cls.ours = True

    @classmethod
    def close(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0 and cls.ours:
                cls.ours = False
                ray.shutdown()


def check_reachable(address: str) -> None:
    """Fail at once when a ``HOST:PORT`` address does not answer (Ray itself
    would try to connect for ever)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # auto, or another form Ray reads itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_CHECK).close()
    except OSError as exc:
        raise exceptions.ConfigurationError(
            f"Cannot reach the Ray cluster at {address} (--ray-address or "
            f"RAY_ADDRESS): {exc.strerror or exc}"
        ) from None


def describe_death(exc: BaseException, placement: Placement | None) -> str:
    """How an actor ended, in words, from the error Ray raised for it."""
    text = str(exc)
    if "node has died" in text or "node was terminated" in text:
        why = "its node was lost"
    elif isinstance(exc, ray.exceptions.OutOfMemoryError):
        why = "killed by Ray for lack of memory"
    elif "worker process has died" in text:
        why = "its process ended: it exited, crashed or was killed"
    else:
        why = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if placement is None:
        return f"Ray actor: {why}"
    return f"Ray actor pid {placement.pid} on {placement.address}: {why}"


class Handshake(asyncio.Protocol):
    """A new connection to the front end: it must open with the token of a
    worker that is expected, and then is that worker's channel; anything
    else is dropped."""

    def __init__(self, connected: Connected) -> None:
        self.connected = connected
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self.transport.abort
        )

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.received += data
        if len(self.received) < TOKEN_SIZE:
            return
        if self.timer is not None:
            self.timer.cancel()
        token, rest = bytes(self.received[:TOKEN_SIZE]), self.received[TOKEN_SIZE:]
        channel = self.connected(token, self.transport)
        if channel is None:
            LOG.warning("A connection without a worker's token was dropped")
            self.transport.abort()
        elif rest:
            channel.data_received(bytes(rest))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

"""A worker process at the other end of a stream (``ConnectedWorker``):
what the local workers (``deepaas.runtime.local``) and those on Ray nodes
(``deepaas.runtime.ray_executor``) share. The server's end of the stream is
a ``Channel``: frames in, messages to its worker, with flow control; the
worker is told what to load (``Start``), greets when it has (``Ready``), and
then takes calls and answers them in order.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from typing import cast

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.runtime import protocol
from deepaas.runtime.pool import WorkerPool
from deepaas.runtime.protocol import (
    Answer,
    Batch,
    Call,
    Failure,
    Item,
    Ping,
    Pong,
    Progress,
    Ready,
    Replies,
    ResultMemory,
    Scratch,
    Start,
)
from deepaas.runtime.workers import PendingCall, PoolWorker, WorkerState

PING_FRAME = protocol.encode(Ping())


class Channel(asyncio.Protocol):
    """The server's end of a worker socket: frames in, messages to its worker."""

    def __init__(self, worker: ConnectedWorker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self._frames = protocol.FrameReader()
        # Messages read but held back while paused (flow control)
        self._held: collections.deque[protocol.Message] = collections.deque()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        messages = self._frames.feed(data)
        if not self.paused and not self._held:
            for index, message in enumerate(messages):
                self.worker.on_message(message)
                if self.paused:  # that message paused us: hold the rest
                    self._held.extend(messages[index + 1 :])
                    return
            return
        self._held.extend(messages)

    def pause(self) -> None:
        """Take no more messages (nor bytes) until ``resume()``."""
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        while self._held and not self.paused:
            self.worker.on_message(self._held.popleft())
        if not self.paused and self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.on_closed()

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (its peer is known to be gone)."""
        if self.transport is not None:
            self.transport.abort()


class ConnectedWorker(PoolWorker):
    """A worker process that talks to the server over a ``Channel``; how it
    is launched, and how it ends, is its subclass's."""

    pool: WorkerPool

    def __init__(self, spec: ModelSpec, pool: WorkerPool, slot: int = 0) -> None:
        super().__init__(spec, slot)
        self.pool = pool
        self._channel: Channel | None = None
        self._greeting: asyncio.Future[Ready | Failure | None] | None = None
        self.scratch: Scratch | None = None  # its directories for large results

    @abc.abstractmethod
    async def _launch(self) -> list[str]:
        """Start the worker process and connect ``_channel`` to it; the
        import path it is to use."""

    def result_memory(self) -> ResultMemory | None:
        """The memory the worker is to share with the server for results."""
        return None

    async def start(self) -> None:
        """Launch the worker and wait until it has loaded and warmed the model."""
        self._greeting = asyncio.get_running_loop().create_future()
        sys_path = await self._launch()
        assert self._channel is not None
        self._channel.send(
            protocol.encode(
                Start(
                    spec=self.spec,
                    warm=self.pool.warm,
                    log_level=self.pool.log_level,
                    log_format=self.pool.log_format,
                    sys_path=sys_path,
                    scratch=self.scratch,
                    results=self.result_memory(),
                    tracing=self.pool.tracing_environment,
                )
            )
        )
        greeting = await self._greeting
        if greeting is None:
            how = await self.how_it_ended()
            await self.stop()
            raise exceptions.ModelLoadError(
                f"Worker for model {self.spec.name!r} died while loading it ({how})."
            )
        if isinstance(greeting, Failure):
            await self.stop()
            raise greeting.error.to_load_error(self.spec.name)
        self.pid = greeting.pid
        self.state = WorkerState.IDLE

    def run(self, calls: list[PendingCall]) -> None:
        """Send one call, or several predictions as a batch, to this (idle)
        worker."""
        self._send(self._take(calls))

    def _take(self, calls: list[PendingCall]) -> Call | Batch:
        """BUSY with ``calls``: the message that runs them."""
        self.state = WorkerState.BUSY
        for call in calls:
            call.worker = self
        self.calls = calls
        if len(calls) == 1:
            return self._with_slot(calls[0])
        return Batch(tuple(self._with_slot(call) for call in calls))

    def send_ahead(self, pending: PendingCall) -> bool:
        # The worker reads its socket only between calls, in order: what is
        # sent now waits there until the current calls are answered.
        pending.worker = self
        self.ahead = pending
        self._send(self._with_slot(pending))
        return True

    def _with_slot(self, pending: PendingCall) -> Call:
        """The message of a call (with what the worker's kind adds)."""
        return pending.message

    def _send(self, message: protocol.Message) -> None:
        assert self._channel is not None
        self._channel.send(protocol.encode(message))

    def pause_reading(self) -> None:
        if self._channel is not None:
            self._channel.pause()

    def resume_reading(self) -> None:
        if self._channel is not None:
            self._channel.resume()

    def ping(self) -> None:
        """Ask the worker to show it is alive (answered between calls)."""
        assert self._channel is not None
        self.pinged_at = asyncio.get_running_loop().time()
        self._channel.send(PING_FRAME)

    def on_message(self, message: protocol.Message) -> None:
        if self._greeting is not None and not self._greeting.done():
            assert isinstance(message, Ready | Failure)
            self._greeting.set_result(message)
            return
        if isinstance(message, Pong):
            self.pinged_at = None
            return
        if isinstance(message, Progress):
            self.pool.on_progress(self, message)
            return
        if isinstance(message, Item):
            self.pool.on_item(self, message)
            return
        assert isinstance(message, Answer | Failure | Replies)
        self.pool.on_reply(self, message)

    def on_closed(self) -> None:
        if self._greeting is not None and not self._greeting.done():
            self._greeting.set_result(None)
            return
        self.pool.on_worker_lost(self)

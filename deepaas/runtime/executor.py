"""The interface every executor offers: where model calls actually run.

The local spawned-process pool (``deepaas.runtime.local.LocalExecutor``) is the
default; ``deepaas.runtime.ray_executor.RayExecutor`` runs the workers as Ray
actors across a cluster. Both are ``WorkerPool``-s and speak the same
messages (``deepaas.runtime.protocol``) to their workers. Cancelling the
task that awaits ``call`` cancels the call itself.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepaas.model.loading import ModelSpec
    from deepaas.runtime.protocol import RawForm


class ItemStream:
    """The items of a streamed prediction as they arrive, with flow control:
    past ``high`` items waiting, the worker is not read from (so it blocks
    sending the next, and the model waits) until half of them are taken."""

    def __init__(self, high: int = 64) -> None:
        self.high = high
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._resume: Callable[[], None] | None = None

    def put(
        self, data: bytes, pause: Callable[[], None], resume: Callable[[], None]
    ) -> None:
        self.queue.put_nowait(data)
        if self._resume is None and self.queue.qsize() >= self.high:
            pause()
            self._resume = resume

    async def get(self) -> bytes:
        """The next item, once it is here."""
        data = await self.queue.get()
        self._taken()
        return data

    def take(self) -> bytes:
        """An item already here (``queue.empty()`` is False)."""
        data = self.queue.get_nowait()
        self._taken()
        return data

    def _taken(self) -> None:
        if self._resume is not None and self.queue.qsize() <= self.high // 2:
            resume, self._resume = self._resume, None
            resume()


ProgressCallback = Callable[[float | None, str | None], None]
"""Told (fraction from 0 to 1 or None, message or None) when a running call
reports how far it has got (``deepaas.progress``)."""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One worker, as ``/readyz`` and ``/metrics`` show it."""

    slot: int  # its place in the pool (a replacement takes the same)
    pid: int | None
    state: str  # starting, idle, busy, leaving (replaced by a reload)
    devices: str | None = None  # the GPUs it sees (CUDA_VISIBLE_DEVICES)
    node: str | None = None  # the address of the machine it runs on
    generation: int = 1  # the reload that started it (1: none)


@dataclasses.dataclass(frozen=True)
class Health:
    """A snapshot of an executor's workers."""

    size: int  # workers wanted
    alive: int  # workers started and answering
    busy: int  # workers running a call
    restarts: int  # workers replaced after a death, kill or cancel
    start_failures: int = 0  # replacements that could not start (retried)
    unresponsive: int = 0  # idle workers replaced for missing a heartbeat
    queued: int = 0  # calls waiting for a worker
    batches: int = 0  # batches of more than one prediction run
    batched: int = 0  # predictions those batches held
    workers: tuple[WorkerInfo, ...] = ()  # each worker, by slot
    generation: int = 1  # the reload the pool's workers come from (1: none)

    @property
    def missing(self) -> int:
        """Workers wanted but not running (starting or failing to start)."""
        return max(0, self.size - self.alive)


class Executor(abc.ABC):
    """Runs a model's methods somewhere other than the event loop."""

    # Whether its workers read a prediction's arguments out of a forwarded
    # form (``call(form=...)``).
    reads_forms = False

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the workers; return once each has loaded (and warmed) the model.

        Raises ``ModelLoadError`` when a worker cannot load the model.
        """

    @abc.abstractmethod
    async def call(
        self,
        method: str,
        kwargs: dict[str, Any],
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        log_path: str | None = None,
        finish_prediction: bool = False,
        validate: bool = False,
        on_progress: ProgressCallback | None = None,
        items: ItemStream | None = None,
        form: RawForm | None = None,
    ) -> Any:
        """Run ``model.<method>(**kwargs)`` in a worker and return its result.

        With ``finish_prediction`` the result comes back as the client gets
        it: a JSON prediction validated against the response schema and
        encoded (``EncodedJSON``), anything else raw (a ``ReturnedFile``,
        bytes, or text for a non-JSON ``accept``).

        ``queue_timeout`` bounds the wait for a free worker (``NoFreeWorker``),
        ``timeout`` the call itself (``CallTimedOut``, the worker is stopped);
        with ``log_path`` the call's output is written to that file. With
        ``validate`` the worker loads ``kwargs`` through the method's argument
        schema first (``InvalidArguments`` when they fail it). ``on_progress``
        is told of the call's progress reports as they come. With ``items``, a
        prediction that makes its items one by one sends them there as they
        come, and returns ``Streamed``. With ``form`` (an executor that
        ``reads_forms`` only) the worker reads the arguments out of it, and
        the result is a ``FormResult``.

        Raises ``ModelCallError`` (the model raised), ``WorkerDied``,
        ``PoolClosed``. Cancelling the awaiting task stops the call.
        """

    @abc.abstractmethod
    async def reload(
        self,
        spec: ModelSpec,
        *,
        batch_size: int = 1,
        serving: Callable[[], None] | None = None,
    ) -> None:
        """Replace every worker, one at a time, with a fresh one that loads
        the model from ``spec`` anew (the next generation); ``serving`` is
        called once the first of them takes calls. A worker is retired only
        once its replacement has loaded and warmed the model, and once its
        own calls (a training too) are answered.

        Raises ``ModelLoadError`` when a new worker cannot load the model:
        the workers not yet replaced go on serving.
        """

    @abc.abstractmethod
    def queued(self) -> int:
        """How many calls wait for a free worker (cheap: asked per request)."""

    @abc.abstractmethod
    def health(self) -> Health:
        """How many workers there are, alive and busy."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every worker; pending and future calls fail with PoolClosed."""

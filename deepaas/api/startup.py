"""Starting the model workers while the server already answers.

The HTTP server listens at once, so that a liveness probe succeeds during a
long warm-up; ``/readyz`` says when every worker has loaded and warmed its
model. Calls that arrive earlier wait for a worker like any other queued call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from deepaas.runtime.wrapper import ModelWrapper

LOG = logging.getLogger(__name__)


class Startup:
    """The progress of starting the workers of every model."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        """Every worker loaded and warmed its model."""
        task = self.task
        return (
            task is not None
            and task.done()
            and not task.cancelled()
            and task.exception() is None
        )

    @property
    def failed(self) -> BaseException | None:
        """Why starting the workers failed, if it did."""
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    def begin(self, models: Iterable[ModelWrapper]) -> None:
        """Start the workers of ``models`` in a task of the running loop."""
        self.task = asyncio.get_running_loop().create_task(start_executors(models))
        # The failure is read from the task (by /readyz and deepaas-run), not
        # reported as "never retrieved".
        self.task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def cancel(self) -> None:
        """Stop starting (at shutdown) if it is still under way."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def wait(self) -> None:
        """Return once the workers are started; raise why they could not be."""
        assert self.task is not None, "the application has not started"
        await asyncio.shield(self.task)


async def start_executors(models: Iterable[ModelWrapper]) -> None:
    """Start every model's workers; if one cannot, stop them all and raise."""
    models = list(models)
    results = await asyncio.gather(
        *(m.executor.start() for m in models), return_exceptions=True
    )
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        await asyncio.gather(*(m.executor.stop() for m in models))
        LOG.critical("Could not start the model workers: %s", failure)
        raise failure
    LOG.info("Every model's workers are ready")

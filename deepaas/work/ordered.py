"""Writes asked for where nothing may wait (an event published from a
progress report), made one after another in the order they were asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from deepaas import exceptions

LOG = logging.getLogger(__name__)


class InOrder:
    """A queue of writes to the state database: ``add`` starts one after
    those added before it; ``flushed`` waits for all of them."""

    def __init__(self) -> None:
        self._last: asyncio.Task[None] | None = None

    def add(self, write: Awaitable[None], what: str) -> None:
        """Make ``write`` once the writes added before it are made; a
        failure is logged as ``what`` not kept."""
        self._last = asyncio.get_running_loop().create_task(
            self._after(self._last, write, what)
        )

    @staticmethod
    async def _after(
        previous: asyncio.Task[None] | None, write: Awaitable[None], what: str
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        del previous
        try:
            await write
        except exceptions.StoreError as exc:
            LOG.error("%s not kept: %s", what, exc.message)

    async def flushed(self) -> None:
        """Return once every write added so far is made (or has failed)."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])

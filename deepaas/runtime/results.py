"""The memory a local worker shares with the server for its results
(``ResultSlots``: an anonymous ``memfd`` of a few slots, named by the call
that may use one), and a result file taken over from a worker's scratch
directory (``take_over``)."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os

from deepaas import exceptions
from deepaas.model.v2.types import (
    MappedResult,
    OpenResult,
    SharedResult,
    SpooledResult,
)
from deepaas.runtime.protocol import (
    ResultMemory,
    SharedBody,
)

LOG = logging.getLogger(__name__)

# The memory a local worker shares with the server for results: results up
# to RESULT_SLOT_SIZE bytes are written there (larger ones to files).
RESULT_SLOTS = 4
RESULT_SLOT_SIZE = 4 * 1024 * 1024


class ResultSlots:
    """The server's side of the memory a worker shares with it for results
    (``protocol.ResultMemory``): an anonymous file mapped here too, and
    which of its slots are free.

    A call that may end in a result of moderate size takes a free slot
    (``take``); the worker writes the result there; the caller gets a
    ``MappedResult``, a view of it, and frees the slot once the bytes are
    sent. With no slot free, results go to files as when there is none.
    The server may first write the call's form there (``put_body``), which
    the worker reads before it writes the result.
    """

    def __init__(self, slots: int, slot_size: int) -> None:
        self.slot_size = slot_size
        self.fd = os.memfd_create("deepaas-results")
        try:
            os.ftruncate(self.fd, slots * slot_size)
            self._map = mmap.mmap(self.fd, slots * slot_size)
        except BaseException:
            os.close(self.fd)
            raise
        self._view = memoryview(self._map)
        self._free = list(range(slots - 1, -1, -1))
        self._held: set[int] = set()  # slots of results not yet released
        self._closing = False
        self.memory = ResultMemory(self.fd, slots, slot_size)

    @classmethod
    def make(cls, slots: int, slot_size: int) -> ResultSlots | None:
        """Result memory for a new worker; None where there can be none
        (no ``memfd_create``, or no memory or descriptors left)."""
        if slots <= 0 or not hasattr(os, "memfd_create"):
            return None
        try:
            return cls(slots, slot_size)
        except OSError as exc:
            LOG.warning("No memory shared with a worker for results: %s", exc)
            return None

    def close_fd(self) -> None:
        """The worker has its copy of the descriptor: ours is not needed."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def available(self) -> int:
        """How many slots are free."""
        return len(self._free)

    def take(self) -> int | None:
        """A free slot, now taken; None if all are."""
        return self._free.pop() if self._free else None

    def put_body(self, slot: int, body: bytes) -> SharedBody | None:
        """A form's ``body`` written into the free ``slot`` just taken for
        its call; None if it does not fit."""
        size = len(body)
        if size > self.slot_size:
            return None
        start = slot * self.slot_size
        self._view[start : start + size] = body
        return SharedBody(slot, size)

    def free(self, slot: int) -> None:
        self._free.append(slot)
        self._held.discard(slot)
        if self._closing and not self._held:
            self._unmap()

    def close(self) -> None:
        """The worker has ended: unmap the memory (and close the descriptor
        the mapping keeps) now, or once the last result held is released."""
        self.close_fd()
        self._closing = True
        if not self._held:
            self._unmap()

    def _unmap(self) -> None:
        self._view.release()
        with contextlib.suppress(BufferError):  # a view not yet collected
            self._map.close()

    def result(self, shared: SharedResult) -> MappedResult:
        """The result the worker wrote into its slot, for the caller."""
        self._held.add(shared.slot)
        start = shared.slot * self.slot_size
        return MappedResult(
            self._view[start : start + shared.size],
            shared.is_json,
            lambda: self.free(shared.slot),
        )


def take_over(result: SpooledResult) -> OpenResult | exceptions.ModelCallError:
    """Open a worker's result file and remove its name at once: the data
    lives while the file is open, and nothing is left behind whatever
    happens next. A file that cannot be opened is the call's error."""
    try:
        opened = open(result.path, "rb")  # noqa: SIM115 - the answer closes it
    except OSError as exc:
        return exceptions.ModelCallError(
            f"The worker's result could not be read: {exc.strerror}"
        )
    with contextlib.suppress(OSError):
        os.unlink(result.path)
    return OpenResult(opened, result.size, result.is_json, result.content_type)

"""A worker's side of results: what travels back to the server (a reply
encoded, a large result in the memory it shares with the server or in a
scratch file), and what makes a result a stream of items."""

from __future__ import annotations

import io
import mmap
import os
import pickle
import tempfile
from collections.abc import Iterator
from typing import Any

from deepaas.model.v2.types import (
    EncodedJSON,
    ReturnedFile,
    SharedResult,
    SpooledResult,
)
from deepaas.runtime import protocol
from deepaas.runtime.protocol import (
    Answer,
    Failure,
    Replies,
    ResultMemory,
    Scratch,
    SharedBody,
)

# Finished results from this size on go through a scratch file, not the socket.
SPOOL_MIN = 64 * 1024


def is_stream(result: Any) -> bool:
    """Whether a prediction made its items one by one: a generator or an
    iterator (not a file, which is answered as one)."""
    return isinstance(result, Iterator) and not isinstance(result, io.IOBase)


def portable(result: Any) -> Any:
    """``result`` made fit to cross the process boundary: an open file becomes
    a ``ReturnedFile`` pointing at its path."""
    if not isinstance(result, io.IOBase):
        return result
    name = getattr(result, "name", None)
    if isinstance(name, str):
        path = os.path.abspath(name)
        result.close()
        return ReturnedFile(
            name=None,
            filename=path,
            content_type=None,
            original_filename=os.path.basename(path),
        )
    return result


class SharedSlots:
    """The worker's side of the memory it shares with the server for
    results (``protocol.ResultMemory``)."""

    def __init__(self, memory: ResultMemory) -> None:
        self.slots = memory.slots
        self.slot_size = memory.slot_size
        try:
            self.map = mmap.mmap(memory.fd, memory.slots * memory.slot_size)
        finally:
            os.close(memory.fd)

    def body(self, shared: SharedBody) -> bytes:
        """The bytes of a form the server wrote into a slot."""
        if not 0 <= shared.slot < self.slots or shared.size > self.slot_size:
            raise ValueError(f"No form in slot {shared.slot} of {shared.size} bytes")
        start = shared.slot * self.slot_size
        return self.map[start : start + shared.size]

    def put(
        self, slot: int, data: bytes | bytearray | memoryview, is_json: bool
    ) -> SharedResult | None:
        """``data`` (one run of bytes) written into ``slot``; None if it
        does not fit."""
        view = memoryview(data).cast("B")
        size = view.nbytes
        if not 0 <= slot < self.slots or size > self.slot_size:
            return None
        start = slot * self.slot_size
        self.map[start : start + size] = view
        return SharedResult(slot, size, is_json)


def spooled(
    result: Any,
    scratch: Scratch | None,
    shared: SharedSlots | None = None,
    slot: int | None = None,
) -> Any:
    """A finished result of ``SPOOL_MIN`` bytes or more as the server takes
    it best: in the call's ``slot`` of the memory shared with the server (a
    ``SharedResult``) when it fits, else written to a scratch file (a
    ``SpooledResult``); or ``result`` to send through the socket: small, not
    bytes, nowhere to put it, or no room (a memoryview, which does not
    pickle, as bytes)."""
    data: bytes | bytearray | memoryview
    if isinstance(result, EncodedJSON):
        data, is_json = result.data, True
    elif isinstance(result, bytes | bytearray | memoryview):
        if isinstance(result, memoryview) and not result.c_contiguous:
            result = result.tobytes()  # a strided view: its bytes, in one run
        data, is_json = result, False
    else:
        return result
    size = memoryview(data).nbytes
    if size < SPOOL_MIN:
        return bytes(result) if isinstance(result, memoryview) else result
    if shared is not None and slot is not None:
        placed = shared.put(slot, data, is_json)
        if placed is not None:
            return placed
    if scratch is not None:
        fits = scratch.memory is not None and size <= scratch.memory_max
        for directory in (scratch.memory, scratch.disk) if fits else (scratch.disk,):
            assert directory is not None
            written = _write_scratch(directory, data)
            if written is not None:
                return SpooledResult(written, size, is_json)
    return bytes(result) if isinstance(result, memoryview) else result


def _write_scratch(directory: str, data: bytes | bytearray | memoryview) -> str | None:
    """The path of a new file in ``directory`` holding ``data``; None when
    there is no room."""
    try:
        fd, path = tempfile.mkstemp(prefix="result-", dir=directory)
    except OSError:
        return None
    try:
        with open(fd, "wb") as f:
            f.write(data)
    except OSError:
        os.unlink(path)
        return None
    return path


def encode_reply(reply: Answer | Failure | Replies) -> bytes:
    """The frame of a reply; a result that does not pickle goes as its str()."""
    try:
        return protocol.encode(reply)
    except Exception:
        if isinstance(reply, Replies):
            return protocol.encode(Replies(tuple(map(_picklable, reply.replies))))
        return protocol.encode(_picklable(reply))


def _picklable(reply: Answer | Failure) -> Answer | Failure:
    if isinstance(reply, Failure):
        return reply  # a WorkerError is plain data
    try:
        pickle.dumps(reply.value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return Answer(str(reply.value))
    return reply


# Uploads that reach the worker as something other than a path to read.

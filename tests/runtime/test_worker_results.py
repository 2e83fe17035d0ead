"""How a worker sends results back: in the slot of the memory it shares
with the server when given one and they fit, else through its scratch
files, in memory while they fit, on disk beyond, through the socket without
room."""

from __future__ import annotations

import array
import os

import pytest

from deepaas.model.v2.types import EncodedJSON, MappedResult, SpooledResult
from deepaas.runtime.protocol import ResultMemory, Scratch, SharedBody
from deepaas.runtime.results import ResultSlots
from deepaas.runtime.worker_results import SPOOL_MIN, SharedSlots, spooled


@pytest.fixture
def scratch(tmp_path):
    memory, disk = tmp_path / "memory", tmp_path / "disk"
    memory.mkdir()
    disk.mkdir()
    return Scratch(str(memory), str(disk), memory_max=1 << 20)


def read(result: SpooledResult) -> bytes:
    with open(result.path, "rb") as f:
        return f.read()


def test_small_results_and_other_values_go_through_the_socket(scratch):
    assert spooled(b"x" * (SPOOL_MIN - 1), scratch) == b"x" * (SPOOL_MIN - 1)
    assert spooled({"a": 1}, scratch) == {"a": 1}
    assert spooled("text", scratch) == "text"
    small = memoryview(bytearray(b"abc"))
    assert spooled(small, scratch) == b"abc"  # a memoryview does not pickle
    assert spooled(b"x" * SPOOL_MIN, None) == b"x" * SPOOL_MIN


@pytest.mark.parametrize(
    "value", [b"b" * SPOOL_MIN, bytearray(b"a" * 100_000), memoryview(b"m" * 70_000)]
)
def test_large_bytes_go_to_a_memory_file(scratch, value):
    result = spooled(value, scratch)
    assert isinstance(result, SpooledResult)
    assert os.path.dirname(result.path) == scratch.memory
    assert (result.size, result.is_json) == (len(bytes(value)), False)
    assert read(result) == bytes(value)


def test_large_json_is_spooled_as_json(scratch):
    data = b'{"values": [' + b"1.5, " * 20_000 + b"2]}"
    result = spooled(EncodedJSON(data), scratch)
    assert isinstance(result, SpooledResult)
    assert result.is_json
    assert read(result) == data


def test_beyond_the_memory_maximum_results_go_to_disk(scratch):
    result = spooled(b"d" * ((1 << 20) + 1), scratch)
    assert isinstance(result, SpooledResult)
    assert os.path.dirname(result.path) == scratch.disk


def test_without_a_memory_directory_results_go_to_disk(scratch):
    disk_only = Scratch(None, scratch.disk, 0)
    result = spooled(b"d" * SPOOL_MIN, disk_only)
    assert isinstance(result, SpooledResult)
    assert os.path.dirname(result.path) == scratch.disk


def test_without_room_anywhere_the_result_goes_through_the_socket(tmp_path):
    gone = Scratch(str(tmp_path / "no-memory"), str(tmp_path / "no-disk"), 1 << 20)
    value = b"z" * SPOOL_MIN
    assert spooled(value, gone) == value
    assert not (tmp_path / "no-memory").exists()


@pytest.fixture
def slots():
    """Both sides of a worker's result memory (3 slots of 256 KiB), in this
    one process: the server's, and the worker's on a copy of its descriptor."""
    server = ResultSlots(3, 256 * 1024)
    worker = SharedSlots(ResultMemory(os.dup(server.fd), 3, 256 * 1024))
    server.close_fd()
    return server, worker


def test_a_result_that_fits_goes_into_its_slot(scratch, slots):
    server, worker = slots
    data = bytes(range(256)) * 1000
    slot = server.take()
    placed = spooled(data, scratch, worker, slot)
    assert (placed.slot, placed.size, placed.is_json) == (slot, len(data), False)
    assert os.listdir(scratch.memory) == os.listdir(scratch.disk) == []
    mapped = server.result(placed)
    assert isinstance(mapped, MappedResult)
    assert bytes(mapped.view) == data
    encoded = spooled(EncodedJSON(b"[" + b"1," * 40_000 + b"1]"), None, worker, 2)
    held = server.result(encoded)
    assert held.is_json and bytes(held.view)[:3] == b"[1,"


def test_a_result_larger_than_a_slot_or_without_one_goes_to_a_file(scratch, slots):
    _, worker = slots
    too_big = spooled(b"x" * (256 * 1024 + 1), scratch, worker, 0)
    assert isinstance(too_big, SpooledResult)
    without = spooled(b"x" * SPOOL_MIN, scratch, worker, None)
    assert isinstance(without, SpooledResult)
    no_such_slot = spooled(b"x" * SPOOL_MIN, scratch, worker, 3)
    assert isinstance(no_such_slot, SpooledResult)
    # bytes that are not one run (a strided view) are made one first
    strided = memoryview(bytearray(b"ab" * SPOOL_MIN))[::2]
    assert read(spooled(strided, scratch)) == b"a" * SPOOL_MIN
    # small results keep going through the socket
    assert spooled(b"s" * 10, scratch, worker, 0) == b"s" * 10


def test_a_typed_or_strided_view_is_written_as_its_bytes(slots):
    server, worker = slots
    values = array.array("d", range(20_000))
    placed = spooled(memoryview(values), None, worker, 1)
    held = server.result(placed)
    assert bytes(held.view) == values.tobytes()
    strided = memoryview(bytearray(b"ab" * SPOOL_MIN))[::2]
    held = server.result(spooled(strided, None, worker, 0))
    assert bytes(held.view) == b"a" * SPOOL_MIN


def test_slots_are_taken_until_released(slots):
    server, worker = slots
    taken = [server.take(), server.take(), server.take()]
    assert sorted(taken) == [0, 1, 2]
    assert server.take() is None  # all in use: results go to files
    mapped = server.result(worker.put(taken[0], b"r" * SPOOL_MIN, False))
    mapped.release()
    mapped.release()  # once only
    with pytest.raises(ValueError):  # released: its bytes cannot be read
        bytes(mapped.view)
    assert server.take() == taken[0]
    assert server.take() is None
    # one dropped without being released frees its slot too
    dropped = server.result(worker.put(taken[1], b"d" * SPOOL_MIN, False))
    del dropped
    assert server.take() == taken[1]


def test_a_form_goes_into_its_slot_and_its_result_after_it(slots):
    """The server writes a call's form into the call's slot; the worker reads
    it whole before the model runs, and the result takes the slot after."""
    server, worker = slots
    slot = server.take()
    body = bytes(range(256)) * 900
    shared = server.put_body(slot, body)
    assert (shared.slot, shared.size) == (slot, len(body))
    assert worker.body(shared) == body
    result = server.result(worker.put(slot, b"r" * SPOOL_MIN, False))
    assert bytes(result.view) == b"r" * SPOOL_MIN
    result.release()
    # a body larger than a slot stays in the call
    assert server.put_body(server.take(), b"x" * (256 * 1024 + 1)) is None
    with pytest.raises(ValueError):  # a slot the memory does not have
        worker.body(SharedBody(3, 10))

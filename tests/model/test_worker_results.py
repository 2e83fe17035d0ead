"""How a worker sends results back: large ones through its scratch files,
in memory while they fit, on disk beyond, through the socket without room."""

from __future__ import annotations

import os

import pytest

from deepaas.model.v2.protocol import Scratch
from deepaas.model.v2.types import EncodedJSON, SpooledResult
from deepaas.model.v2.worker import SPOOL_MIN, spooled


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

"""Results of moderate size come back through memory a local worker shares
with the server: written once by the worker, read in place by the server,
their slot free again once the caller is done with them."""

from __future__ import annotations

import json
import os

import pytest

from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import EncodedJSON, MappedResult, OpenResult
from deepaas.runtime.local import LocalExecutor
from deepaas.runtime.protocol import Scratch
from deepaas.runtime.results import RESULT_SLOT_SIZE
from tests.packages.testmodels.deepaas_testmodels.outputs import pattern

OUTPUTS = ModelSpec("outputs", "deepaas_testmodels.outputs")
SLOTS = 2


@pytest.fixture
async def pool(testmodels_installed, tmp_path):
    pool = LocalExecutor(
        OUTPUTS, size=1, scratch=Scratch(None, str(tmp_path)), result_slots=SLOTS
    )
    await pool.start()
    yield pool
    await pool.stop()


def predict(pool, size, seed=0, kind="bytes"):
    accept = "application/json" if kind == "json" else "image/png"
    kwargs = {"kind": kind, "size": size, "seed": seed, "accept": accept}
    return pool.call("predict", kwargs, finish_prediction=True)


async def test_results_up_to_a_slot_come_through_shared_memory(pool):
    result = await predict(pool, 1 << 20, seed=7)
    assert isinstance(result, MappedResult)
    assert not result.is_json
    assert bytes(result.view) == pattern(1 << 20, 7)
    result.release()
    encoded = await predict(pool, 300_000, kind="json")
    assert isinstance(encoded, MappedResult) and encoded.is_json
    assert json.loads(bytes(encoded.view))["predictions"]["size"] == 300_000
    encoded.release()
    # small ones through the socket, larger ones through a file
    assert await predict(pool, 1000) == pattern(1000)
    assert isinstance(await predict(pool, 100, kind="json"), EncodedJSON)
    large = await predict(pool, RESULT_SLOT_SIZE + 1)
    assert isinstance(large, OpenResult)
    with large.file:
        assert large.file.read() == pattern(RESULT_SLOT_SIZE + 1)


async def test_a_held_slot_is_not_written_until_released(pool):
    held = [await predict(pool, 200_000, seed=seed) for seed in range(SLOTS)]
    assert all(isinstance(result, MappedResult) for result in held)
    # every slot is held: the next results go through files, and the held
    # ones keep their bytes
    for seed in range(10, 14):
        other = await predict(pool, 200_000, seed=seed)
        assert isinstance(other, OpenResult)
        with other.file:
            assert other.file.read() == pattern(200_000, seed)
    for seed, result in enumerate(held):
        assert bytes(result.view) == pattern(200_000, seed)
    held[0].release()
    again = await predict(pool, 200_000, seed=99)
    assert isinstance(again, MappedResult)
    assert bytes(again.view) == pattern(200_000, 99)
    assert bytes(held[1].view) == pattern(200_000, 1)


async def test_a_result_dropped_unread_frees_its_slot(pool):
    for seed in range(SLOTS * 3):  # more than there are slots
        result = await predict(pool, 100_000, seed=seed)
        assert isinstance(result, MappedResult)
        del result  # never released by hand


async def test_a_failed_call_frees_its_slot(pool):
    for _ in range(SLOTS * 2):
        with pytest.raises(Exception, match="size"):
            await pool.call(
                "predict",
                {"kind": "bytes", "size": -1, "seed": 0, "accept": "image/png"},
                finish_prediction=True,
                validate=True,
            )
    assert isinstance(await predict(pool, 100_000), MappedResult)


async def test_without_slots_results_come_through_files(testmodels_installed, tmp_path):
    pool = LocalExecutor(OUTPUTS, size=1, scratch=Scratch(None, str(tmp_path)))
    await pool.start()
    try:
        result = await predict(pool, 200_000)
        assert isinstance(result, OpenResult)
        result.file.close()
    finally:
        await pool.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_memory_of_a_stopped_pool_goes_once_its_results_are_released(
    testmodels_installed, tmp_path
):
    before = open_fds()
    pool = LocalExecutor(
        OUTPUTS, size=2, scratch=Scratch(None, str(tmp_path)), result_slots=SLOTS
    )
    await pool.start()
    held = await predict(pool, 100_000, seed=3)
    await pool.stop()
    # the worker is gone: what it answered can still be sent
    assert bytes(held.view) == pattern(100_000, 3)
    held.release()
    assert open_fds() == before

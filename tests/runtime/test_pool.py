"""The spawned worker pool, used directly (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.types import EncodedJSON
from deepaas.runtime.local import LocalExecutor
from tests import helpers

FAILING = ModelSpec("failing", "deepaas_testmodels.failing")


@pytest.fixture
async def pool(testmodels_installed):
    pool = LocalExecutor(FAILING, size=2)
    await pool.start()
    yield pool
    await pool.stop()


def ok_args(**extra):
    return {"mode": "ok", "seconds": 0.0, "data": None, **extra}


async def test_workers_are_spawned_processes(pool):
    pids = pool.pids()
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert all(p in helpers.children(os.getpid()) for p in pids)
    health = pool.health()
    assert (health.size, health.alive, health.busy, health.restarts) == (2, 2, 0, 0)


async def test_calls_run_concurrently_on_both_workers(pool):
    results = await asyncio.gather(
        pool.call("predict", ok_args(mode="sleep", seconds=0.5)),
        pool.call("predict", ok_args(mode="sleep", seconds=0.5)),
    )
    assert len({r["pid"] for r in results}) == 2


async def test_event_loop_is_free_during_a_call(pool):
    call = asyncio.ensure_future(pool.call("predict", ok_args(mode="sleep", seconds=1)))
    ticks = 0
    while not call.done():
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks > 20
    assert pool.health().busy == 0


async def test_model_exception_details(pool):
    with pytest.raises(exceptions.ModelCallError) as info:
        await pool.call("predict", ok_args(mode="raise"))
    assert info.value.status == 500
    assert info.value.exc_type == "ValueError"
    assert "Traceback" in info.value.traceback


async def test_missing_method_is_not_implemented(pool):
    with pytest.raises(exceptions.NotImplementedByModel) as info:
        await pool.call("warm_up_the_oven", {})
    assert info.value.status == 501


async def test_dead_worker_is_replaced(pool):
    before = set(pool.pids())
    with pytest.raises(exceptions.WorkerDied) as info:
        await pool.call("predict", ok_args(mode="exit"))
    assert info.value.exitcode == 3
    assert await helpers.eventually(lambda: len(pool.pids()) == 2)
    assert len(set(pool.pids()) - before) == 1
    assert pool.health().restarts == 1
    for _ in range(4):
        assert (await pool.call("predict", ok_args()))["mode"] == "ok"


async def test_cancelling_a_call_kills_its_worker(pool):
    call = asyncio.ensure_future(
        pool.call("predict", ok_args(mode="sleep", seconds=60))
    )
    assert await helpers.eventually(lambda: pool.health().busy == 1)
    busy_pids = set(pool.pids())
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await helpers.eventually(
        lambda: len(pool.pids()) == 2 and pool.pids() != sorted(busy_pids)
    )
    assert len(set(pool.pids()) & busy_pids) == 1
    assert pool.health().restarts == 1


async def test_stop_leaves_no_process(testmodels_installed):
    pool = LocalExecutor(FAILING, size=2)
    await pool.start()
    pids = pool.pids()
    pending = asyncio.ensure_future(
        pool.call("predict", ok_args(mode="sleep", seconds=60))
    )
    assert await helpers.eventually(lambda: pool.health().busy == 1)
    await pool.stop()
    assert not any(helpers.pid_alive(p) for p in pids)
    with pytest.raises((exceptions.PoolClosed, exceptions.WorkerDied)):
        await pending
    with pytest.raises(exceptions.PoolClosed):
        await pool.call("predict", ok_args())


async def test_waiting_callers_fail_when_pool_stops(testmodels_installed):
    pool = LocalExecutor(FAILING, size=1)
    await pool.start()
    busy = asyncio.ensure_future(
        pool.call("predict", ok_args(mode="sleep", seconds=60))
    )
    waiting = asyncio.ensure_future(pool.call("predict", ok_args()))
    assert await helpers.eventually(lambda: pool.health().busy == 1)
    await pool.stop()
    with pytest.raises(exceptions.PoolClosed):
        await waiting
    with pytest.raises(exceptions.DeepaasError):
        await busy


async def test_each_queued_call_waits_its_own_time_out(testmodels_installed):
    """Queue time-outs are kept by one timer for the whole queue: a call
    queued later with a shorter time-out fails first, one with a longer
    time-out still gets the worker when it is free, one without waits on."""
    pool = LocalExecutor(FAILING, size=1)
    await pool.start()
    try:
        busy = asyncio.ensure_future(
            pool.call("predict", ok_args(mode="sleep", seconds=3))
        )
        assert await helpers.eventually(lambda: pool.health().busy == 1)
        patient = asyncio.ensure_future(
            pool.call("predict", ok_args(), queue_timeout=60)
        )
        hasty = asyncio.ensure_future(
            pool.call("predict", ok_args(), queue_timeout=0.2)
        )
        hastier = asyncio.ensure_future(
            pool.call("predict", ok_args(), queue_timeout=0.1)
        )
        unbounded = asyncio.ensure_future(pool.call("predict", ok_args()))
        with pytest.raises(exceptions.NoFreeWorker) as info:
            await hasty
        assert "0.2" in str(info.value)
        assert hastier.done() and isinstance(
            hastier.exception(), exceptions.NoFreeWorker
        )
        assert not patient.done() and not unbounded.done()
        assert (await busy)["pid"] == (await patient)["pid"]
        assert (await unbounded)["pid"] == (await patient)["pid"]
        assert pool.queued() == 0
    finally:
        await pool.stop()


async def test_warm_failure_is_a_load_error(model_sites, monkeypatch):
    monkeypatch.syspath_prepend(str(model_sites["broken"]))
    pool = LocalExecutor(ModelSpec("bad-warm", "deepaas_broken.bad:BadWarm"), size=1)
    with pytest.raises(exceptions.ModelLoadError) as info:
        await pool.start()
    assert "weights file missing" in info.value.message
    assert "bad-warm" in info.value.message
    assert pool.pids() == []


async def test_nowarm_skips_warm(model_sites, monkeypatch):
    monkeypatch.syspath_prepend(str(model_sites["broken"]))
    pool = LocalExecutor(
        ModelSpec("bad-warm", "deepaas_broken.bad:BadWarm"), size=1, warm=False
    )
    await pool.start()
    try:
        assert await pool.call("predict", {}) == {}
    finally:
        await pool.stop()


async def test_a_worker_imports_nothing_of_the_server(testmodels_installed):
    import aiohttp  # noqa: F401 - imported here, and still not in the worker

    pool = LocalExecutor(ModelSpec("introspect", "deepaas_testmodels.introspect"))
    await pool.start()
    try:
        seen = await pool.call("predict", {})
    finally:
        await pool.stop()
    assert seen["server_modules"] == []
    assert seen["main_file"] is None


def test_pool_and_worker_do_not_import_aiohttp():
    code = (
        "import sys, deepaas.runtime.pool, deepaas.runtime.worker;"
        "print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


async def test_model_exception_keeps_the_worker(pool):
    before = pool.pids()
    for mode in ("raise", "not-implemented", "http"):
        with pytest.raises(exceptions.ModelCallError):
            await pool.call("predict", ok_args(mode=mode))
    assert pool.pids() == before
    assert pool.health().restarts == 0
    assert pool.health().alive == 2


async def test_worker_finishes_json_predictions(pool):
    finished = await pool.call("predict", ok_args(), finish_prediction=True)
    assert isinstance(finished, EncodedJSON)
    body = json.loads(finished.data)
    assert body["status"] == "OK" and body["predictions"]["mode"] == "ok"


async def test_worker_reports_a_response_that_fails_the_schema(testmodels_installed):
    pool = LocalExecutor(
        ModelSpec("class-model", "deepaas_testmodels.class_model:ClassModel")
    )
    await pool.start()
    try:
        with pytest.raises(exceptions.ModelCallError) as info:
            await pool.call(
                "predict", {"label": "x", "valid": False}, finish_prediction=True
            )
        assert "does not match its schema" in info.value.message
        raw = await pool.call("predict", {"label": "x", "valid": False})
        assert raw["predictions"] == [{"label": 42}]  # unfinished: as returned
    finally:
        await pool.stop()


@pytest.mark.slow  # ten deaths and replacements
async def test_a_replacement_is_ready_at_once_ten_times_in_a_row(pool):
    loop = asyncio.get_running_loop()
    for _ in range(10):
        with pytest.raises(exceptions.WorkerDied):
            await pool.call("predict", ok_args(mode="exit"))
        died = loop.time()
        assert await helpers.eventually(lambda: pool.health().alive == 2, timeout=10)
        assert loop.time() - died < 2
    assert pool.health().restarts == 10


@pytest.mark.slow  # waits out real time
async def test_a_replacement_that_cannot_start_is_retried_until_it_can(
    testmodels_installed,
):
    pool = LocalExecutor(FAILING, size=1)
    await pool.start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # No file descriptor to spare: the replacement's socket cannot be made.
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds(), hard))
        with pytest.raises(exceptions.WorkerDied):
            await pool.call("predict", ok_args(mode="exit"))
        assert await helpers.eventually(lambda: pool.health().start_failures >= 1)
        health = pool.health()
        assert (health.alive, health.missing) == (0, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert await helpers.eventually(lambda: pool.health().alive == 1, timeout=15)
        assert (await pool.call("predict", ok_args()))["mode"] == "ok"
        assert pool.health().missing == 0
    finally:
        await pool.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow  # waits out real time
async def test_a_stopped_idle_worker_is_found_and_replaced(testmodels_installed):
    pool = LocalExecutor(FAILING, size=1, heartbeat=0.2)
    await pool.start()
    try:
        (stopped,) = pool.pids()
        os.kill(stopped, signal.SIGSTOP)
        assert await helpers.eventually(
            lambda: pool.pids() and stopped not in pool.pids(), timeout=15
        )
        assert await helpers.eventually(lambda: pool.health().alive == 1)
        assert pool.health().unresponsive == 1
        assert (await pool.call("predict", ok_args()))["mode"] == "ok"
        assert await helpers.eventually(lambda: not helpers.pid_alive(stopped))
    finally:
        await pool.stop()


@pytest.mark.slow  # waits out real time
async def test_a_busy_worker_keeps_answering_heartbeats(testmodels_installed):
    pool = LocalExecutor(FAILING, size=1, heartbeat=0.1)
    await pool.start()
    try:
        for _ in range(3):  # calls longer than the heartbeat, back to back
            assert (await pool.call("predict", ok_args(mode="sleep", seconds=0.3)))[
                "mode"
            ] == "sleep"
        assert pool.health().unresponsive == 0
        assert pool.health().restarts == 0
    finally:
        await pool.stop()

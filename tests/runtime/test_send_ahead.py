"""Predictions sent ahead to a busy worker (the pool's ``SEND_AHEAD_BELOW``):
what is sent ahead still runs once, in order, with its own time limit, and
goes back to the queue when its worker is lost before taking it up."""

from __future__ import annotations

import asyncio

import pytest

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.runtime import pool as pool_mod
from deepaas.runtime.local import LocalExecutor, WorkerProcess

FAILING = ModelSpec("failing", "deepaas_testmodels.failing")


def args(mode: str = "ok", seconds: float = 0.0) -> dict:
    return {"mode": mode, "seconds": seconds, "data": None}


@pytest.fixture
def sent_ahead(monkeypatch):
    """The calls sent ahead, in order (the real method runs)."""
    sent: list[dict] = []
    real = WorkerProcess.send_ahead

    def spy(self, pending):
        sent.append(pending.message.kwargs)
        return real(self, pending)

    monkeypatch.setattr(WorkerProcess, "send_ahead", spy)
    return sent


@pytest.fixture
async def one_worker(testmodels_installed, monkeypatch):
    """A pool of one worker whose recent calls count as short whatever the
    machine's load (a loaded CI machine may take longer than 5 ms)."""
    monkeypatch.setattr(pool_mod, "SEND_AHEAD_BELOW", 5.0)
    pool = LocalExecutor(FAILING, size=1)
    await pool.start()
    await pool.call("predict", args())  # how long a call takes, once known
    yield pool
    await pool.stop()


async def test_short_predictions_are_sent_ahead_and_each_runs_once(
    one_worker, sent_ahead
):
    results = await asyncio.gather(
        *(one_worker.call("predict", args(f"call-{n}")) for n in range(30))
    )
    assert len({r["pid"] for r in results}) == 1
    assert [r["mode"] for r in results] == [f"call-{n}" for n in range(30)]
    assert len(sent_ahead) > 10
    assert one_worker.queued() == 0
    assert one_worker.health().busy == 0


async def test_nothing_is_sent_ahead_while_calls_are_long(
    testmodels_installed, sent_ahead, monkeypatch
):
    monkeypatch.setattr(pool_mod, "SEND_AHEAD_BELOW", 0.01)
    pool = LocalExecutor(FAILING, size=1)
    await pool.start()
    try:
        await pool.call("predict", args("sleep", 0.05))
        await asyncio.gather(
            *(pool.call("predict", args("sleep", 0.02)) for _ in range(4))
        )
        assert sent_ahead == []
    finally:
        await pool.stop()


async def test_a_call_sent_ahead_to_a_worker_that_dies_runs_on_its_replacement(
    one_worker, sent_ahead
):
    first, dying, after = await asyncio.gather(
        one_worker.call("predict", args()),
        one_worker.call("predict", args("exit")),
        one_worker.call("predict", args("after")),
        return_exceptions=True,
    )
    assert isinstance(dying, exceptions.WorkerDied)
    assert [kwargs["mode"] for kwargs in sent_ahead] == ["after"]
    assert after["mode"] == "after"
    assert after["pid"] != first["pid"]


async def test_a_call_sent_ahead_outlives_a_cancelled_one(one_worker, sent_ahead):
    first = asyncio.ensure_future(one_worker.call("predict", args()))
    running = asyncio.ensure_future(one_worker.call("predict", args("sleep", 30)))
    after = asyncio.ensure_future(one_worker.call("predict", args("after")))
    pid = (await first)["pid"]
    assert await _eventually(lambda: len(sent_ahead) == 1)
    running.cancel()  # its worker is stopped: the call ahead had not started
    answer = await asyncio.wait_for(after, 60)
    assert answer["mode"] == "after"
    assert answer["pid"] != pid


async def test_the_time_limit_of_a_call_sent_ahead_starts_when_it_runs(
    one_worker, sent_ahead
):
    """Both sleep 0.5 s under a 0.8 s limit: the second would time out if its
    limit ran from when it was sent, behind the first."""
    results = await asyncio.gather(
        one_worker.call("predict", args()),
        one_worker.call("predict", args("sleep", 0.5), timeout=0.8),
        one_worker.call("predict", args("sleep", 0.5), timeout=0.8),
    )
    assert len(sent_ahead) == 1 and sent_ahead[0]["seconds"] == 0.5
    assert [r["mode"] for r in results] == ["ok", "sleep", "sleep"]
    assert len({r["pid"] for r in results}) == 1


async def test_the_pool_stopping_fails_a_call_sent_ahead(one_worker, sent_ahead):
    first = asyncio.ensure_future(one_worker.call("predict", args()))
    running = asyncio.ensure_future(one_worker.call("predict", args("sleep", 30)))
    ahead = asyncio.ensure_future(one_worker.call("predict", args("ahead")))
    await first
    assert await _eventually(lambda: len(sent_ahead) == 1)
    assert one_worker.queued() == 1  # the call ahead waits too
    await one_worker.stop()
    for call in (running, ahead):
        with pytest.raises(exceptions.PoolClosed):
            await call


async def _eventually(predicate, timeout: float = 30.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True

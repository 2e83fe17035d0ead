"""One runner, two kinds of work: trainings and jobs, on a real database,
with work that is a coroutine (what a model's call is to the runner)."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket

import pytest

from deepaas import exceptions
from deepaas.state import Record
from deepaas.state.records import (
    CANCELLED,
    DONE,
    ERROR,
    INTERRUPTED,
    JOB,
    RUNNING,
    TRAINING,
)
from deepaas.state.sqlite import SQLiteDatabase
from deepaas.work.events import EventJournal
from deepaas.work.jobs import Jobs
from deepaas.work.runner import Runner
from deepaas.work.trainings import Trainings
from tests import helpers

GONE = f"{socket.gethostname()}:{os.getpid()}:0"  # this pid, another start


def runners_of(database, root):
    journal = EventJournal(database.events)
    trainings = Runner(Trainings(str(root / "logs")), database, journal)
    jobs = Runner(Jobs(str(root / "jobs")), database, journal, "/base")
    return trainings, jobs


@pytest.fixture
def runners(database, tmp_path):
    return runners_of(database, tmp_path)


async def returns(value, record, on_progress):
    on_progress(0.5, "half way")
    return value


async def forever(record, on_progress):
    await asyncio.sleep(3600)


async def ended(runner, record) -> Record:
    """``record`` once it has ended, and its end is saved (a server alone on
    its database tells the end first)."""

    async def done():
        kept = await runner.records.get(runner.kind.name, record.model, record.id)
        return kept is not None and not kept.running

    assert await helpers.eventually(done, timeout=10)
    return await runner.get(record.model, record.id)


async def test_both_kinds_run_and_end_the_same_way(runners):
    for runner, value in zip(
        runners, ({"loss": 1}, {"type": "t", "size": 1}), strict=True
    ):
        record, created = await runner.start(
            "m", {"n": 1}, lambda r, p, v=value: returns(v, r, p), started_by="alice"
        )
        assert created and record.status == RUNNING
        done = await ended(runner, record)
        assert (done.status, done.result, done.started_by) == (DONE, value, "alice")
        kept = await runner.records.get(runner.kind.name, "m", record.id)
        assert kept.status == DONE and kept.finish_date == done.finish_date
        events = await runner.events.after(runner.kind.name, record.id, 0)
        assert [e.name for e in events] == ["status", "progress", "status", "result"]
        assert events[-1].final


async def test_an_ended_record_is_answered_from_memory_unless_shared(
    database, tmp_path
):
    """What ended here changes no more but by its runner's removal, so it is
    answered from memory, unless other servers share the database."""
    database.shared = False
    _, jobs = runners_of(database, tmp_path)
    record, _ = await jobs.start("m", {}, lambda r, p: returns({"x": 1}, r, p))
    await ended(jobs, record)
    await database.records.remove(JOB, "m", record.id)  # behind the runner's back
    assert (await jobs.get("m", record.id)).status == DONE
    await jobs.remove("m", record.id)
    with pytest.raises(exceptions.JobNotFound):
        await jobs.get("m", record.id)

    database.shared = True
    _, shared = runners_of(database, tmp_path)
    record, _ = await shared.start("m", {}, lambda r, p: returns({"x": 1}, r, p))
    await ended(shared, record)
    await database.records.remove(JOB, "m", record.id)  # by another server
    with pytest.raises(exceptions.JobNotFound):
        await shared.get("m", record.id)


async def test_a_failure_is_an_error_with_its_status(runners):
    _, jobs = runners

    async def refuses(record, on_progress):
        raise exceptions.InvalidArguments({"x": ["bad"]})

    record, _ = await jobs.start("m", {}, refuses)
    failed = await ended(jobs, record)
    assert (failed.status, failed.error_status) == (ERROR, 422)
    view = jobs.kind.view(failed, "/base")
    assert view["error_status"] == 422 and "result_type" not in view


async def test_work_cut_by_a_previous_server_is_interrupted_as_its_kind_says(
    runners, tmp_path
):
    trainings, jobs = runners
    training = Record(kind=TRAINING, model="m", args={}, owner=GONE)
    job = Record(kind=JOB, model="m", args={}, owner=GONE)
    # run by a server that is there (this one)
    other = Record(kind=JOB, model="m", args={}, owner=jobs.database.owner)
    for record in (training, job, other):
        await trainings.records.add(record)
    os.makedirs(tmp_path / "jobs")
    (tmp_path / "jobs" / f"{job.id}.result").write_text("partial")
    os.makedirs(tmp_path / "logs")
    (tmp_path / "logs" / f"{training.id}.log").write_text("epoch 1\n")
    assert await trainings.recover() == 1
    assert await jobs.recover() == 1
    cut = await trainings.get("m", training.id)
    assert cut.status == ERROR and "restart" in cut.message  # as upstream's know
    cut = await jobs.get("m", job.id)
    assert cut.status == INTERRUPTED and "send it again" in cut.message
    assert not (tmp_path / "jobs" / f"{job.id}.result").exists()
    assert (tmp_path / "logs" / f"{training.id}.log").exists()  # to read why
    assert (await jobs.get("m", other.id)).status == RUNNING  # another host's


async def test_cancelling_forgets_a_training_and_keeps_a_job(runners):
    trainings, jobs = runners
    training, _ = await trainings.start("m", {}, forever)
    job, _ = await jobs.start("m", {}, forever)
    cancelled = await trainings.cancel("m", training.id)
    assert cancelled.status == CANCELLED
    with pytest.raises(exceptions.TrainingNotFound):
        await trainings.get("m", training.id)
    assert (await jobs.cancel("m", job.id)).status == CANCELLED
    assert (await jobs.get("m", job.id)).status == CANCELLED
    await jobs.cancel("m", job.id)  # an ended job: removed
    with pytest.raises(exceptions.JobNotFound):
        await jobs.get("m", job.id)


async def test_an_idempotency_key_gives_the_record_it_started(runners):
    _, jobs = runners
    first, created = await jobs.start("m", {"x": 1}, forever, key="k", started_by="a")
    again, created_again = await jobs.start(
        "m", {"x": 1}, forever, key="k", started_by="a"
    )
    assert created and not created_again and again.id == first.id
    with pytest.raises(exceptions.IdempotencyKeyReused):
        await jobs.start("m", {"x": 2}, forever, key="k", started_by="a")
    other, created = await jobs.start("m", {"x": 2}, forever, key="k", started_by="b")
    assert created and other.id != first.id
    await jobs.cancel("m", first.id)
    await jobs.cancel("m", first.id)  # removed: its key is free again
    new, created = await jobs.start("m", {"x": 3}, forever, key="k", started_by="a")
    assert created and new.id != first.id
    await jobs.stop()


async def test_quotas_refuse_before_anything_is_kept(database, tmp_path):
    jobs = Runner(Jobs(str(tmp_path)), database, max_running=2, max_per_user=1)
    cleaned = []
    await jobs.start("m", {}, forever, started_by="a")
    with pytest.raises(exceptions.TooManyJobsOfUser):
        await jobs.start(
            "m", {}, forever, started_by="a", cleanup=lambda: cleaned.append(1)
        )
    await jobs.start("m", {}, forever, started_by="b")
    with pytest.raises(exceptions.TooManyJobs):
        await jobs.start("m", {}, forever, started_by="c")
    assert cleaned == [1]
    assert len(await jobs.list("m")) == 2
    trainings = Runner(Trainings(str(tmp_path)), database, max_running=1)
    await trainings.start("m", {}, forever)
    with pytest.raises(exceptions.TooManyTrainings):
        await trainings.start("m", {}, forever)
    await jobs.stop()
    await trainings.stop()


async def refuse_writes(database, refuse: bool) -> None:
    """Make the database refuse to save records, or take them again."""
    if isinstance(database, SQLiteDatabase):
        pragma = "PRAGMA query_only = " + ("ON" if refuse else "OFF")
        await database.run("refused", database.execute, pragma)
    elif refuse:
        await database.pool.execute(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON records "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse()"
        )
    else:
        await database.pool.execute("DROP TRIGGER refuse ON records")


async def test_an_end_the_database_refuses_is_kept_and_saved_later(database, runners):
    trainings, _ = runners
    go = asyncio.Event()

    async def waits(record, on_progress):
        await go.wait()
        return {"loss": 0.1}

    record, _ = await trainings.start("m", {}, waits)
    await refuse_writes(database, True)
    go.set()  # it ends; its end cannot be written
    assert await helpers.eventually(lambda: trainings.unsaved == 1, timeout=10)
    assert "Cannot save training" in trainings.store_error
    answered = await trainings.get("m", record.id)  # from memory meanwhile
    assert answered.status == DONE and answered.result == {"loss": 0.1}
    await refuse_writes(database, False)
    assert await helpers.eventually(lambda: trainings.unsaved == 0, timeout=15)
    assert trainings.store_error is None
    kept = await trainings.records.get(TRAINING, "m", record.id)
    assert kept.status == DONE and kept.result == {"loss": 0.1}


async def test_work_whose_record_cannot_be_written_is_stopped_and_leaves_nothing(
    database, runners
):
    _, jobs = runners
    cleaned = []
    started = asyncio.Event()

    async def runs(record, on_progress):
        started.set()
        await asyncio.sleep(3600)

    await refuse_writes(database, True)
    with pytest.raises(exceptions.StoreError):
        await jobs.start("m", {}, runs, cleanup=lambda: cleaned.append(1))
    await refuse_writes(database, False)
    assert cleaned == [1]  # once, however it went
    assert await jobs.list("m") == []
    assert jobs.unsaved == 0 and not jobs._tasks
    record, _ = await jobs.start("m", {}, lambda r, p: returns({"x": 1}, r, p))
    assert (await ended(jobs, record)).status == DONE


async def test_retention_forgets_ended_records_their_events_keys_and_files(
    runners, tmp_path
):
    _, jobs = runners
    old, _ = await jobs.start(
        "m", {}, lambda r, p: returns({"type": "t"}, r, p), key="k"
    )
    await ended(jobs, old)
    os.makedirs(tmp_path / "jobs", exist_ok=True)
    (tmp_path / "jobs" / f"{old.id}.result").write_text("result")
    running, _ = await jobs.start("m", {}, forever)
    assert await jobs.purge(3600) == 0  # nothing old enough
    later = datetime.datetime.now() + datetime.timedelta(hours=2)
    assert await jobs.records.finished_before(JOB, later) == [("m", old.id)]
    assert await jobs.purge(0) == 1
    with pytest.raises(exceptions.JobNotFound):
        await jobs.get("m", old.id)
    assert await jobs.events.after(JOB, old.id, 0) == []
    assert not (tmp_path / "jobs" / f"{old.id}.result").exists()
    again, created = await jobs.start("m", {}, forever, key="k")
    assert created
    assert (await jobs.get("m", running.id)).running
    await jobs.stop()


async def test_a_shutdown_interrupts_what_runs_as_its_kind_says(runners):
    trainings, jobs = runners
    training, _ = await trainings.start("m", {}, forever)
    job, _ = await jobs.start("m", {}, forever)
    await trainings.stop()
    await jobs.stop()
    cut = await trainings.records.get(TRAINING, "m", training.id)
    assert cut.status == ERROR and "shut down" in cut.message
    cut = await jobs.records.get(JOB, "m", job.id)
    assert cut.status == INTERRUPTED and "shut down" in cut.message

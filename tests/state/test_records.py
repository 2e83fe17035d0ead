"""The records repository, on every backend: what is kept, how it is
found, paged and filtered, and how records cut by a stop end."""

from __future__ import annotations

import datetime

from deepaas.state import Record
from deepaas.state.records import DONE, ERROR, INTERRUPTED, JOB, RUNNING, TRAINING


def record(kind: str = TRAINING, model: str = "m", **fields) -> Record:
    return Record(kind=kind, model=model, args={"epochs": 3, "names": ["a"]}, **fields)


async def test_a_record_is_kept_as_it_was_written(database):
    training = record(owner="host:1:1", started_by="key:alice")
    await database.records.add(training)
    training.status = DONE
    training.result = {"loss": 0.5}
    training.finish_date = training.date + datetime.timedelta(seconds=90)
    training.progress, training.progress_message = 1.0, "all done"
    await database.records.update(training)
    again = await database.records.get(TRAINING, "m", training.id)
    assert again == training
    assert again.duration() == datetime.timedelta(seconds=90)


async def test_kinds_and_models_share_the_table_without_mixing(database):
    a, b, job = record(model="a"), record(model="b"), record(JOB, model="a")
    for each in (a, b, job):
        await database.records.add(each)
    assert [r.id for r in await database.records.find(TRAINING, "a")] == [a.id]
    assert [r.id for r in await database.records.find(JOB, "a")] == [job.id]
    assert await database.records.get(TRAINING, "b", a.id) is None
    assert await database.records.get(JOB, "a", a.id) is None
    await database.records.remove(TRAINING, "a", a.id)
    assert await database.records.find(TRAINING, "a") == []
    assert len(await database.records.find(TRAINING, "b")) == 1


async def test_records_are_found_oldest_first_by_user_a_page_at_a_time(database):
    start = datetime.datetime(2026, 1, 1)
    made = []
    for n in range(7):
        each = record(
            date=start + datetime.timedelta(minutes=n),
            started_by="alice" if n % 2 else "bob",
        )
        made.append(each)
    for each in reversed(made):  # written in another order
        await database.records.add(each)
    found = await database.records.find(TRAINING, "m")
    assert [r.id for r in found] == [r.id for r in made]
    alices = await database.records.find(TRAINING, "m", "alice")
    assert [r.id for r in alices] == [r.id for r in made if r.started_by == "alice"]
    page = await database.records.find(TRAINING, "m", after=made[2].id, limit=3)
    assert [r.id for r in page] == [r.id for r in made[3:6]]
    assert await database.records.find(TRAINING, "m", after=made[6].id) == []


async def test_ended_records_are_found_by_when_they_ended(database):
    now = datetime.datetime.now()
    old, recent, running = record(), record(JOB), record()
    for each, ended in ((old, now - datetime.timedelta(days=2)), (recent, now)):
        await database.records.add(each)
        each.status, each.finish_date = DONE, ended
        await database.records.update(each)
    await database.records.add(running)
    cutoff = now - datetime.timedelta(days=1)
    assert await database.records.finished_before(TRAINING, cutoff) == [("m", old.id)]
    assert await database.records.finished_before(JOB, cutoff) == []
    later = now + datetime.timedelta(minutes=1)
    assert await database.records.finished_before(JOB, later) == [("m", recent.id)]


async def test_running_records_of_a_gone_process_are_interrupted(database):
    gone, alive = record(JOB, owner="gone"), record(JOB, owner="alive")
    training = record(owner="gone")
    for each in (gone, alive, training):
        await database.records.add(each)
    ended = await database.records.interrupt(
        JOB, INTERRUPTED, "cut short", lambda owner: owner == "gone"
    )
    assert [r.id for r in ended] == [gone.id]
    assert ended[0].status == INTERRUPTED and ended[0].finish_date is not None
    kept = await database.records.get(JOB, "m", gone.id)
    assert (kept.status, kept.message) == (INTERRUPTED, "cut short")
    assert (await database.records.get(JOB, "m", alive.id)).status == RUNNING
    assert (await database.records.get(TRAINING, "m", training.id)).status == RUNNING
    # and once ended, it is found by when
    later = datetime.datetime.now() + datetime.timedelta(seconds=1)
    assert ("m", gone.id) in await database.records.finished_before(JOB, later)


async def test_records_are_counted_by_model_and_status(database):
    for model, status in (("a", DONE), ("a", DONE), ("a", ERROR), ("b", RUNNING)):
        await database.records.add(record(model=model, status=status))
    await database.records.add(record(JOB, model="a"))
    assert await database.records.counts(TRAINING) == {
        ("a", DONE): 2,
        ("a", ERROR): 1,
        ("b", RUNNING): 1,
    }


async def test_an_idempotency_key_is_held_by_one_record(database):
    keys = database.keys
    assert await keys.claim("m", "alice", "k1", "r1") is None
    assert await keys.claim("m", "alice", "k1", "r2") == "r1"
    assert await keys.claim("m", "bob", "k1", "r3") is None  # another user's
    assert await keys.claim("m", None, "k1", "r4") is None  # nobody's
    assert await keys.claim("m", None, "k1", "r5") == "r4"
    assert await keys.claim("other", "alice", "k1", "r6") is None
    await keys.release("r1")
    assert await keys.claim("m", "alice", "k1", "r7") is None


async def test_an_ended_record_is_not_changed_by_a_later_save(database):
    """Another server may have ended a record as interrupted: the server that
    ran it, saving how it ended later, changes nothing."""
    mine = record(JOB, owner="slow")
    await database.records.add(mine)
    ended = await database.records.interrupt(
        JOB, INTERRUPTED, "cut short", lambda owner: owner == "slow"
    )
    assert [r.id for r in ended] == [mine.id]
    mine.status, mine.result = DONE, {"type": "application/json", "size": 2}
    assert not await database.records.update(mine)
    kept = await database.records.get(JOB, "m", mine.id)
    assert (kept.status, kept.result) == (INTERRUPTED, None)
    running = record(JOB)
    await database.records.add(running)
    running.status = DONE
    assert await database.records.update(running)


async def test_a_record_is_added_only_within_the_limits(database):
    records = database.records
    alice = [record(JOB, started_by="alice") for _ in range(3)]
    assert await records.add_if_room(alice[0], 3, 2) is None
    assert await records.add_if_room(alice[1], 3, 2) is None
    assert await records.add_if_room(alice[2], 3, 2) == "of user"
    assert await records.add_if_room(record(JOB, started_by="bob"), 3, 2) is None
    assert await records.add_if_room(record(JOB, started_by="carol"), 3, 2) == "all"
    assert await records.add_if_room(record(TRAINING), 3, 2) is None  # other kind
    assert await records.get(JOB, "m", alice[2].id) is None  # refused: not kept
    alice[0].status = DONE
    await records.update(alice[0])  # ended: counts no more
    assert await records.add_if_room(alice[2], 3, 2) is None
    assert await records.add_if_room(record(JOB), 0, 0) is None  # no limits

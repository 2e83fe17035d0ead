"""The event journal on a real database: numbering, pruning, paging, and
events kept in the order they were published."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deepaas.state.sqlite import SQLiteDatabase
from deepaas.work import events
from deepaas.work.events import EventJournal


@pytest.fixture
async def journal(tmp_path) -> AsyncIterator[EventJournal]:
    database = SQLiteDatabase(str(tmp_path))
    yield EventJournal(database.events)
    await database.close()


async def test_a_chatty_record_keeps_its_latest_events_only(journal):
    total = events.EVENTS_KEPT + 2 * events.PRUNE_EVERY + 10
    for n in range(total):
        journal.publish("training", "t1", "log", f"line {n}")
    kept = await journal.after("training", "t1", 0)
    assert kept[-1].seq == total and kept[-1].data == f"line {total - 1}"
    assert events.EVENTS_KEPT <= len(kept) <= events.EVENTS_KEPT + events.PRUNE_EVERY
    assert [e.seq for e in kept] == list(range(kept[0].seq, total + 1))  # no gap
    journal.publish("training", "t1", "result", {"status": "done"}, final=True)
    assert (await journal.after("training", "t1", total))[0].final
    await journal.forget("training", "t1")
    assert await journal.after("training", "t1", 0) == []


async def test_a_record_of_long_lines_keeps_a_bounded_number_of_bytes(journal):
    line = "x" * (256 * 1024)
    count = events.EVENT_BYTES_KEPT // len(line) * 2  # twice what is kept
    for n in range(count):
        journal.publish("training", "t1", "log", f"{n:06d}{line}")
    kept = await journal.after("training", "t1", 0)
    held = sum(len(e.data) for e in kept)
    assert held <= events.EVENT_BYTES_KEPT + events.PRUNE_BYTES + len(line)
    assert held >= events.EVENT_BYTES_KEPT // 2
    assert kept[-1].seq == count  # the latest are those kept, without a gap
    assert [e.seq for e in kept] == list(range(kept[0].seq, count + 1))


async def test_events_are_read_a_page_at_a_time(journal):
    for n in range(25):
        journal.publish("job", "j1", "progress", {"n": n})
    page = await journal.after("job", "j1", 0, 10)
    assert [e.seq for e in page] == list(range(1, 11))
    later = await journal.after("job", "j1", 20, 10)
    assert [e.seq for e in later] == [21, 22, 23, 24, 25]


async def test_publishing_never_waits_and_readers_see_every_event(journal):
    """``publish`` returns at once; what it published is kept in order, and
    a reader right after it sees all of it."""
    published = [journal.publish("job", "j1", "progress", {"n": n}) for n in range(50)]
    assert [e.seq for e in published] == list(range(1, 51))
    with journal.subscribe("job", "j1") as live:
        last = journal.publish("job", "j1", "result", {}, final=True)
        assert live.pending() == [last]
    kept = await journal.after("job", "j1", 0)
    assert kept == [*published, last]


class CountingReads:
    """The database's events, counting the reads made of them."""

    def __init__(self, events):
        self.events = events
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self.events, name)

    async def after(self, *args):
        self.reads += 1
        return await self.events.after(*args)


async def test_the_last_events_of_a_record_published_here_are_read_from_memory(
    tmp_path,
):
    database = SQLiteDatabase(str(tmp_path))
    store = CountingReads(database.events)
    journal = EventJournal(store)
    try:
        for n in range(10):
            journal.publish("job", "j1", "progress", {"n": n})
        assert [e.seq for e in await journal.after("job", "j1", 0)] == list(
            range(1, 11)
        )
        assert [e.seq for e in await journal.after("job", "j1", 7, 2)] == [8, 9]
        assert await journal.after("job", "j1", 10) == []
        assert store.reads == 0
        # more than a tail holds: the oldest are read from the database
        for n in range(events.TAIL_EVENTS):
            journal.publish("job", "j1", "progress", {"n": n})
        everything = await journal.after("job", "j1", 0)
        assert [e.seq for e in everything] == list(range(1, events.TAIL_EVENTS + 11))
        assert store.reads == 1
        latest = await journal.after("job", "j1", events.TAIL_EVENTS)
        assert [e.seq for e in latest] == list(
            range(events.TAIL_EVENTS + 1, events.TAIL_EVENTS + 11)
        )
        assert store.reads == 1
        # what the memory holds is what the database keeps
        await journal.flushed()
        assert await database.events.after("job", "j1", 0) == everything
        # a forgotten record is forgotten in memory too
        await journal.forget("job", "j1")
        assert await journal.after("job", "j1", 0) == []
        assert store.reads == 2
    finally:
        await database.close()


async def test_a_record_no_longer_held_is_read_from_the_database(tmp_path):
    """Once more records have been published than memory holds, the least
    recent one's events, old and new, come from the database."""
    database = SQLiteDatabase(str(tmp_path))
    store = CountingReads(database.events)
    journal = EventJournal(store)
    try:
        journal.publish("job", "first", "status", {"status": "running"})
        for n in range(events.TAILS):
            journal.publish("job", f"other{n}", "status", {"status": "running"})
        journal.publish("job", "first", "result", {"status": "done"}, final=True)
        assert [e.seq for e in await journal.after("job", "first", 0)] == [1, 2]
        assert store.reads == 1
        assert len(await journal.after("job", f"other{events.TAILS - 1}", 0)) == 1
        assert store.reads == 1
    finally:
        await database.close()


async def test_memory_holds_a_bounded_number_of_bytes(journal):
    line = "y" * (64 * 1024)
    for record in range(3 * events.TAILS_BYTES // events.TAIL_BYTES):
        for _ in range(events.TAIL_BYTES // len(line) + 2):
            journal.publish("training", f"t{record}", "log", line)
    assert 0 < journal.held <= events.TAILS_BYTES
    # every record still reads whole, from memory or from the database
    first = await journal.after("training", "t0", 0)
    assert [e.seq for e in first] == list(range(1, events.TAIL_BYTES // len(line) + 3))

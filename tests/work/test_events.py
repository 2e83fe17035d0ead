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

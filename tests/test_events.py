"""The event journal on the real SQLite store: numbering and pruning."""

from __future__ import annotations

from deepaas import events
from deepaas.events import EventJournal
from deepaas.store import SQLiteEventStore, SQLiteTrainingStore


def test_a_chatty_record_keeps_its_latest_events_only(tmp_path):
    journal = EventJournal(SQLiteEventStore(SQLiteTrainingStore(str(tmp_path))))
    total = events.EVENTS_KEPT + 2 * events.PRUNE_EVERY + 10
    for n in range(total):
        journal.publish("training", "t1", "log", f"line {n}")
    kept = journal.after("training", "t1", 0)
    assert kept[-1].seq == total and kept[-1].data == f"line {total - 1}"
    assert events.EVENTS_KEPT <= len(kept) <= events.EVENTS_KEPT + events.PRUNE_EVERY
    assert [e.seq for e in kept] == list(range(kept[0].seq, total + 1))  # no gap
    journal.publish("training", "t1", "result", {"status": "done"}, final=True)
    assert journal.after("training", "t1", total)[0].final
    journal.forget("training", "t1")
    assert journal.after("training", "t1", 0) == []


def test_a_record_of_long_lines_keeps_a_bounded_number_of_bytes(tmp_path):
    journal = EventJournal(SQLiteEventStore(SQLiteTrainingStore(str(tmp_path))))
    line = "x" * (256 * 1024)
    count = events.EVENT_BYTES_KEPT // len(line) * 2  # twice what is kept
    for n in range(count):
        journal.publish("training", "t1", "log", f"{n:06d}{line}")
    kept = journal.after("training", "t1", 0)
    held = sum(len(e.data) for e in kept)
    assert held <= events.EVENT_BYTES_KEPT + events.PRUNE_BYTES + len(line)
    assert held >= events.EVENT_BYTES_KEPT // 2
    assert kept[-1].seq == count  # the latest are those kept, without a gap
    assert [e.seq for e in kept] == list(range(kept[0].seq, count + 1))


def test_events_are_read_a_page_at_a_time(tmp_path):
    journal = EventJournal(SQLiteEventStore(SQLiteTrainingStore(str(tmp_path))))
    for n in range(25):
        journal.publish("job", "j1", "progress", {"n": n})
    page = journal.after("job", "j1", 0, 10)
    assert [e.seq for e in page] == list(range(1, 11))
    assert [e.seq for e in journal.after("job", "j1", 20, 10)] == [21, 22, 23, 24, 25]

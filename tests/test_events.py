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

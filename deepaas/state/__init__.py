"""The server's state: the records of trainings and jobs, their events,
webhooks and deliveries, and idempotency keys, behind one ``Database``
(``repositories``) that a backend implements (``sqlite``, the embedded
default). This package imports no other part of the server but its
exceptions and private-file helpers.
"""

from __future__ import annotations

from deepaas.state.records import Record
from deepaas.state.repositories import Database, Delivery, Event, StoredHook


def open_database(state_dir: str) -> Database:
    """The state database of a server whose state directory is ``state_dir``
    (created, or migrated to this version's schema)."""
    from deepaas.state.sqlite import SQLiteDatabase

    return SQLiteDatabase(state_dir)


__all__ = ["Database", "Delivery", "Event", "Record", "StoredHook", "open_database"]

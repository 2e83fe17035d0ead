"""The SQLite backend's events, webhooks and outputs (``sqlite`` holds
the database, its records and idempotency keys)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from deepaas.state.repositories import (
    Delivery,
    Event,
    Events,
    Outputs,
    StoredHook,
    Webhooks,
)

P = ParamSpec("P")
T = TypeVar("T")


class SQLiteDatabase(Protocol):
    """What the tables use of the database (``sqlite.SQLiteDatabase``)."""

    async def run(
        self, what: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor: ...

    def transaction(self, statements: list[tuple[str, Any]]) -> None: ...


# Events written by one INSERT: 6 values each, within SQLite's oldest limit
# of 999 values a statement.
EVENTS_PER_INSERT = 150


class SQLiteEvents(Events):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def add(self, kind: str, record: str, event: Event) -> None:
        await self.db.run(
            "save an event",
            self.db.execute,
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
            (kind, record, event.seq, event.name, event.data, int(event.final)),
        )

    async def add_all(self, events: list[tuple[str, str, Event]]) -> None:
        # A statement of many rows rather than one per event: each statement
        # the thread runs waits for the event loop to let go of the GIL.
        statements = []
        for start in range(0, len(events), EVENTS_PER_INSERT):
            chunk = events[start : start + EVENTS_PER_INSERT]
            rows = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            values = [
                value
                for kind, record, e in chunk
                for value in (kind, record, e.seq, e.name, e.data, int(e.final))
            ]
            statements.append((f"INSERT INTO events VALUES {rows}", values))
        if len(statements) == 1:
            await self.db.run("save events", self.db.execute, *statements[0])
        elif statements:
            await self.db.run("save events", self.db.transaction, statements)

    def _after(self, kind: str, record: str, seq: int, limit: int) -> list[Event]:
        rows = self.db.execute(
            "SELECT seq, name, data, final FROM events "
            "WHERE kind = ? AND record = ? AND seq > ? ORDER BY seq LIMIT ?",
            (kind, record, seq, limit),
        ).fetchall()
        return [Event(s, name, data, bool(final)) for s, name, data, final in rows]

    async def after(
        self, kind: str, record: str, seq: int, limit: int | None = None
    ) -> list[Event]:
        return await self.db.run(
            "read events",
            self._after,
            kind,
            record,
            seq,
            -1 if limit is None else limit,
        )

    def _last_seq(self, kind: str, record: str) -> int:
        row = self.db.execute(
            "SELECT MAX(seq) FROM events WHERE kind = ? AND record = ?",
            (kind, record),
        ).fetchone()
        return row[0] or 0

    async def last_seq(self, kind: str, record: str) -> int:
        return await self.db.run("read events", self._last_seq, kind, record)

    async def remove(self, kind: str, record: str) -> None:
        await self.db.run(
            "remove events",
            self.db.execute,
            "DELETE FROM events WHERE kind = ? AND record = ?",
            (kind, record),
        )

    async def prune(self, kind: str, record: str, up_to: int) -> None:
        await self.db.run(
            "prune events",
            self.db.execute,
            "DELETE FROM events WHERE kind = ? AND record = ? AND seq <= ?",
            (kind, record, up_to),
        )

    def _prune_to_bytes(self, kind: str, record: str, keep: int) -> None:
        rows = self.db.execute(
            "SELECT seq, LENGTH(CAST(data AS BLOB)) FROM events "
            "WHERE kind = ? AND record = ? ORDER BY seq DESC",
            (kind, record),
        )
        total = 0
        for seq, size in rows:
            total += size or 0
            if total > keep:
                self.db.execute(
                    "DELETE FROM events WHERE kind = ? AND record = ? AND seq <= ?",
                    (kind, record, seq),
                )
                return

    async def prune_to_bytes(self, kind: str, record: str, keep: int) -> None:
        await self.db.run("prune events", self._prune_to_bytes, kind, record, keep)


class SQLiteWebhooks(Webhooks):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def _write(self, sql: str, params: Any) -> None:
        await self.db.run("save a webhook", self.db.execute, sql, params)

    async def add_hook(self, hook: StoredHook) -> None:
        await self._write(
            "INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?, ?, ?)",
            (hook.kind, hook.record, hook.model, hook.url, ",".join(hook.events)),
        )

    def _hooks(self) -> list[StoredHook]:
        rows = self.db.execute(
            "SELECT kind, record, model, url, events FROM webhooks"
        ).fetchall()
        return [
            StoredHook(kind, record, model, url, tuple(events.split(",")))
            for kind, record, model, url, events in rows
        ]

    async def hooks(self) -> list[StoredHook]:
        return await self.db.run("read the webhooks", self._hooks)

    async def remove_hook(self, kind: str, record: str) -> None:
        await self._write(
            "DELETE FROM webhooks WHERE kind = ? AND record = ?", (kind, record)
        )

    def _fire(self, kind: str, record: str, delivery: Delivery | None) -> bool:
        self.db.execute("BEGIN")
        try:
            gone = self.db.execute(
                "DELETE FROM webhooks WHERE kind = ? AND record = ?", (kind, record)
            ).rowcount
            if gone and delivery is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    dataclasses.astuple(delivery),
                )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return bool(gone)

    async def fire(self, kind: str, record: str, delivery: Delivery | None) -> bool:
        return await self.db.run("save a webhook", self._fire, kind, record, delivery)

    async def add_delivery(self, delivery: Delivery) -> None:
        await self._write(
            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            dataclasses.astuple(delivery),
        )

    def _add_progress(self, delivery: Delivery) -> None:
        row = self.db.execute(
            "SELECT id FROM deliveries WHERE kind = ? AND record = ? AND "
            "type LIKE '%.progress' AND attempts = 0",
            (delivery.kind, delivery.record),
        ).fetchone()
        if row is not None:
            delivery = dataclasses.replace(delivery, id=row[0])
        self.db.execute(
            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            dataclasses.astuple(delivery),
        )

    async def add_progress(self, delivery: Delivery) -> None:
        await self.db.run("save a webhook", self._add_progress, delivery)

    def _due(self, now: float, limit: int) -> list[Delivery]:
        rows = self.db.execute(
            "SELECT * FROM deliveries WHERE due <= ? ORDER BY due LIMIT ?",
            (now, limit),
        ).fetchall()
        return [Delivery(*row) for row in rows]

    async def due(self, now: float, limit: int) -> list[Delivery]:
        return await self.db.run("read the webhooks", self._due, now, limit)

    def _claim(self, now: float, limit: int, hold: float) -> list[Delivery]:
        due = self._due(now, limit)
        if hold and due:
            self.db.execute(
                f"UPDATE deliveries SET due = ? WHERE id IN "
                f"({', '.join('?' * len(due))})",
                (now + hold, *(delivery.id for delivery in due)),
            )
        return due

    async def claim(self, now: float, limit: int, hold: float) -> list[Delivery]:
        return await self.db.run("read the webhooks", self._claim, now, limit, hold)

    def _next_due(self) -> float | None:
        return self.db.execute("SELECT MIN(due) FROM deliveries").fetchone()[0]

    async def next_due(self) -> float | None:
        return await self.db.run("read the webhooks", self._next_due)

    async def remove_delivery(self, delivery_id: str) -> None:
        await self._write("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def _count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]

    async def count(self) -> int:
        return await self.db.run("read the webhooks", self._count)


class SQLiteOutputs(Outputs):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def add(self, kind: str, record: str, at: int, data: bytes) -> None:
        await self.db.run(
            "save output",
            self.db.execute,
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
            (kind, record, at, data),
        )

    def _read(self, sql: str, params: Any) -> list[tuple[int, bytes]]:
        return [(at, bytes(data)) for at, data in self.db.execute(sql, params)]

    async def read(
        self, kind: str, record: str, start: int, count: int
    ) -> list[tuple[int, bytes]]:
        return await self.db.run(
            "read output",
            self._read,
            "SELECT at, data FROM outputs WHERE kind = ? AND record = ? AND at >= ? "
            "ORDER BY at LIMIT ?",
            (kind, record, start, count),
        )

    async def last(self, kind: str, record: str, size: int) -> list[tuple[int, bytes]]:
        # The chunks after the newest that begins ``size`` bytes or more from
        # the end, and that one.
        chunks = await self.db.run(
            "read output",
            self._read,
            "SELECT at, data FROM outputs WHERE kind = ? AND record = ? AND at >= "
            "COALESCE((SELECT at FROM (SELECT at, SUM(length(data)) OVER "
            "(ORDER BY at DESC) AS held FROM outputs WHERE kind = ? AND record = ?) "
            "WHERE held >= ? ORDER BY at DESC LIMIT 1), 0) ORDER BY at",
            (kind, record, kind, record, size),
        )
        return chunks

    async def trim(self, kind: str, record: str, keep: int) -> None:
        await self.db.run(
            "trim output",
            self.db.execute,
            "DELETE FROM outputs WHERE kind = ? AND record = ? AND at <= ("
            "SELECT at FROM (SELECT at, SUM(length(data)) OVER (ORDER BY at DESC) "
            "AS held, ROW_NUMBER() OVER (ORDER BY at DESC) AS n FROM outputs "
            "WHERE kind = ? AND record = ?) WHERE held > ? AND n > 1 "
            "ORDER BY at DESC LIMIT 1)",
            (kind, record, kind, record, keep),
        )

    async def remove(self, kind: str, record: str) -> None:
        await self.db.run(
            "remove output",
            self.db.execute,
            "DELETE FROM outputs WHERE kind = ? AND record = ?",
            (kind, record),
        )

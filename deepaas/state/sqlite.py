"""The embedded backend: every repository in one SQLite file.

The file (``trainings.sqlite3`` in the state directory, its name since the
first version) is opened in WAL mode, so that readers and the writer
proceed together and several processes may share it. Every query runs on
one thread of its own, in the order asked, never on the event loop: a slow
disk delays the answers that need the database, not the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import os
import sqlite3
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from deepaas import exceptions, private
from deepaas.state import processes, sqlite_schema
from deepaas.state.records import (
    RUNNING,
    Record,
    date_text,
)
from deepaas.state.repositories import (
    Database,
    Delivery,
    Event,
    Events,
    IdempotencyKeys,
    Outputs,
    Records,
    StoredHook,
    Webhooks,
)
from deepaas.state.rows import (
    OWNER,
    limit_reached,
    record_from_row,
    record_names,
    record_values,
)

FILENAME = "trainings.sqlite3"
# Events written by one INSERT: 6 values each, within SQLite's oldest limit
# of 999 values a statement.
EVENTS_PER_INSERT = 150

P = ParamSpec("P")
T = TypeVar("T")


class SQLiteDatabase(Database):
    """The state in ``<state_dir>/trainings.sqlite3``, or in the file
    ``path`` names."""

    def __init__(self, state_dir: str, path: str | None = None) -> None:
        self.path = path or os.path.join(state_dir, FILENAME)
        self.where = self.path
        self.owner = processes.this_process()
        self.migrated_from: int | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="deepaas-sqlite"
        )
        try:
            self._db = self._thread.submit(self._open).result()
        except (OSError, sqlite3.Error) as exc:
            self._thread.shutdown()
            raise exceptions.StoreError(
                f"Cannot use the state database {self.path}: {exc}. Check that "
                "the state directory (--state-dir) is writable and the file is an "
                "intact SQLite database (move a damaged one aside to start afresh)."
            ) from exc
        self.records = SQLiteRecords(self)
        self.keys = SQLiteIdempotencyKeys(self)
        self.events = SQLiteEvents(self)
        self.webhooks = SQLiteWebhooks(self)
        self.outputs = SQLiteOutputs(self)

    def _open(self) -> sqlite3.Connection:
        private.private_directory(os.path.dirname(os.path.abspath(self.path)))
        # SQLite gives the WAL and shared-memory files the database's mode.
        private.private_file(self.path)
        for suffix in ("-wal", "-shm", "-journal"):
            private.restrict_if_present(self.path + suffix)
        db = sqlite3.connect(
            self.path, isolation_level=None, timeout=10, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self.migrated_from = sqlite_schema.migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def run(
        self, what: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``function(*args)`` on the database's thread; a failure is a
        ``StoreError`` saying ``what`` was being done."""
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._thread, call)
        except sqlite3.Error as exc:
            raise exceptions.StoreError(f"Cannot {what}: {exc}") from exc

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """Run one statement (on the database's thread)."""
        return self._db.execute(sql, params)

    def transaction(self, statements: list[tuple[str, Any]]) -> None:
        """Run statements as one transaction (on the database's thread)."""
        self._db.execute("BEGIN")
        try:
            for sql, params in statements:
                self._db.execute(sql, params)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def owner_is_gone(self, owner: str | None) -> bool:
        return processes.is_gone(owner)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._db.close)
        self._thread.shutdown()

    def close_now(self) -> None:
        """Close from outside an event loop (the file is done with)."""
        self._thread.submit(self._db.close).result()
        self._thread.shutdown()


RECORD_COLUMNS = ", ".join(record_names)


class SQLiteRecords(Records):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def add(self, record: Record) -> None:
        names = ", ".join(f":{c}" for c in record_names)
        await self.db.run(
            f"save {record.kind} {record.id}",
            self.db.execute,
            f"INSERT INTO records VALUES ({names})",
            record_values(record),
        )

    def _add_if_room(
        self, record: Record, max_running: int, max_of_user: int
    ) -> str | None:
        self.db.execute("BEGIN IMMEDIATE")  # no other process writes meanwhile
        try:
            running, of_user = self.db.execute(
                "SELECT COUNT(*), COUNT(CASE WHEN started_by = ? THEN 1 END) "
                "FROM records WHERE kind = ? AND status = ?",
                (record.started_by, record.kind, RUNNING),
            ).fetchone()
            refused = limit_reached(running, of_user, max_running, max_of_user)
            if refused is None:
                names = ", ".join(f":{c}" for c in record_names)
                self.db.execute(
                    f"INSERT INTO records VALUES ({names})", record_values(record)
                )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return refused

    async def add_if_room(
        self, record: Record, max_running: int, max_of_user: int
    ) -> str | None:
        return await self.db.run(
            f"save {record.kind} {record.id}",
            self._add_if_room,
            record,
            max_running,
            max_of_user,
        )

    async def update(self, record: Record) -> bool:
        saved = await self.db.run(
            f"save {record.kind} {record.id}",
            self.db.execute,
            "UPDATE records SET status = :status, finish_date = :finish_date, "
            "message = :message, result = :result, error_status = :error_status, "
            "progress = :progress, progress_message = :progress_message "
            f"WHERE kind = :kind AND id = :id AND status = '{RUNNING}'",
            record_values(record),
        )
        return saved.rowcount > 0

    def _get(self, kind: str, model: str, record_id: str) -> Record | None:
        row = self.db.execute(
            f"SELECT {RECORD_COLUMNS} FROM records "
            "WHERE kind = ? AND model = ? AND id = ?",
            (kind, model, record_id),
        ).fetchone()
        return record_from_row(row) if row else None

    async def get(self, kind: str, model: str, record_id: str) -> Record | None:
        return await self.db.run(
            f"read {kind} {record_id}", self._get, kind, model, record_id
        )

    def _find(
        self,
        kind: str,
        model: str,
        started_by: str | None,
        after: str | None,
        limit: int | None,
    ) -> list[Record]:
        sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = ? AND model = ?"
        params: tuple[Any, ...] = (kind, model)
        if started_by is not None:
            sql += " AND started_by = ?"
            params += (started_by,)
        if after is not None:
            sql += (
                " AND (date, id) > (SELECT date, id FROM records "
                "WHERE kind = ? AND model = ? AND id = ?)"
            )
            params += (kind, model, after)
        sql += " ORDER BY date, id LIMIT ?"
        params += (-1 if limit is None else limit,)
        return [record_from_row(row) for row in self.db.execute(sql, params).fetchall()]

    async def find(
        self,
        kind: str,
        model: str,
        started_by: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        return await self.db.run(
            f"list the {kind}s", self._find, kind, model, started_by, after, limit
        )

    async def remove(self, kind: str, model: str, record_id: str) -> None:
        await self.db.run(
            f"remove {kind} {record_id}",
            self.db.execute,
            "DELETE FROM records WHERE kind = ? AND model = ? AND id = ?",
            (kind, model, record_id),
        )

    def _finished_before(self, kind: str, cutoff: str) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT model, id FROM records WHERE kind = ? AND status != ? "
            "AND finish_date IS NOT NULL AND finish_date < ?",
            (kind, RUNNING, cutoff),
        ).fetchall()
        return [(model, record_id) for model, record_id in rows]

    async def finished_before(
        self, kind: str, cutoff: datetime.datetime
    ) -> list[tuple[str, str]]:
        return await self.db.run(
            f"find old {kind}s", self._finished_before, kind, date_text(cutoff)
        )

    def _interrupt(
        self,
        kind: str,
        status: str,
        message: str,
        is_gone: Callable[[str | None], bool],
    ) -> list[Record]:
        rows = self.db.execute(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = ? AND status = ?",
            (kind, RUNNING),
        ).fetchall()
        stale = [record_from_row(row) for row in rows if is_gone(row[OWNER])]
        ended = date_text(datetime.datetime.now())
        self.db.transaction(
            [
                (
                    "UPDATE records SET status = ?, message = ?, finish_date = ? "
                    "WHERE kind = ? AND id = ? AND status = ?",
                    (status, message, ended, kind, record.id, RUNNING),
                )
                for record in stale
            ]
        )
        for record in stale:
            record.status, record.message = status, message
            record.finish_date = datetime.datetime.fromisoformat(ended)
        return stale

    async def interrupt(
        self,
        kind: str,
        status: str,
        message: str,
        is_gone: Callable[[str | None], bool],
    ) -> list[Record]:
        return await self.db.run(
            f"record interrupted {kind}s",
            self._interrupt,
            kind,
            status,
            message,
            is_gone,
        )

    def _counts(self, kind: str) -> dict[tuple[str, str], int]:
        rows = self.db.execute(
            "SELECT model, status, COUNT(*) FROM records WHERE kind = ? "
            "GROUP BY model, status",
            (kind,),
        ).fetchall()
        return {(model, status): count for model, status, count in rows}

    async def counts(self, kind: str) -> dict[tuple[str, str], int]:
        return await self.db.run(f"count the {kind}s", self._counts, kind)


class SQLiteIdempotencyKeys(IdempotencyKeys):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def _claim(
        self, model: str, started_by: str, key: str, record_id: str
    ) -> str | None:
        inserted = self.db.execute(
            "INSERT OR IGNORE INTO idempotency_keys VALUES (?, ?, ?, ?)",
            (model, started_by, key, record_id),
        ).rowcount
        if inserted:
            return None
        row = self.db.execute(
            "SELECT record FROM idempotency_keys "
            "WHERE model = ? AND started_by = ? AND key = ?",
            (model, started_by, key),
        ).fetchone()
        return row[0] if row else None

    async def claim(
        self, model: str, started_by: str | None, key: str, record_id: str
    ) -> str | None:
        return await self.db.run(
            "keep an idempotency key",
            self._claim,
            model,
            started_by or "",
            key,
            record_id,
        )

    async def release(self, record_id: str) -> None:
        await self.db.run(
            "forget an idempotency key",
            self.db.execute,
            "DELETE FROM idempotency_keys WHERE record = ?",
            (record_id,),
        )


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

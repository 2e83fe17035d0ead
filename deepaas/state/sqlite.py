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
    IdempotencyKeys,
    Records,
)
from deepaas.state.rows import (
    OWNER,
    limit_reached,
    record_from_row,
    record_names,
    record_values,
)
from deepaas.state.sqlite_tables import SQLiteEvents, SQLiteOutputs, SQLiteWebhooks

FILENAME = "trainings.sqlite3"
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

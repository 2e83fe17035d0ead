"""The SQLite database's schema, as one list of migrations.

``MIGRATIONS[n - 1]`` takes a database from version ``n - 1`` to ``n``
(SQLite's ``user_version``); a new file runs them all. Each is SQL or a
function of the connection, and they run in one transaction, so a file is
at one version or the next, never between. A version is never changed once
released: a change of schema is a new migration at the end of the list.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Callable

from deepaas.state.rows import shared_tables

Migration = str | Callable[[sqlite3.Connection], None]


def _records_of_both_kinds(db: sqlite3.Connection) -> None:
    """7: trainings and jobs become records of one table; dates are written
    in one form; idempotency keys get their own table."""
    db.execute(RECORDS)
    db.execute(RECORDS_BY_MODEL)
    db.execute(IDEMPOTENCY_KEYS)
    trainings = db.execute(
        "SELECT model, uuid, date, args, status, output, finish_date, message, "
        "owner, started_by FROM trainings"
    ).fetchall()
    db.executemany(
        "INSERT INTO records (kind, model, id, date, args, status, finish_date, "
        "message, result, error_status, owner, started_by) "
        "VALUES ('training', ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        [
            (model, uuid, _date(date), args, status, _date(finished), message,
             output if status == "done" else None, owner, started_by)
            for (model, uuid, date, args, status, output, finished, message, owner,
                 started_by) in trainings
        ],
    )  # fmt: skip
    jobs = db.execute(
        "SELECT model, id, date, args, status, finish_date, message, error_status, "
        "result_type, result_size, owner, started_by, idempotency_key FROM jobs"
    ).fetchall()
    db.executemany(
        "INSERT INTO records (kind, model, id, date, args, status, finish_date, "
        "message, result, error_status, owner, started_by) "
        "VALUES ('job', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (model, job_id, _date(date), args, status, _date(finished), message,
             json.dumps({"type": rtype, "size": rsize}) if rtype else None,
             error_status, owner, started_by)
            for (model, job_id, date, args, status, finished, message, error_status,
                 rtype, rsize, owner, started_by, _) in jobs
        ],
    )  # fmt: skip
    db.executemany(
        "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?)",
        [
            (model, started_by or "", key, job_id)
            for (model, job_id, *_, started_by, key) in jobs
            if key is not None
        ],
    )
    db.execute("DROP TABLE trainings")
    db.execute("DROP TABLE jobs")


def _date(text: str | None) -> str | None:
    """A date as earlier versions wrote it (``str()`` or ``isoformat()``),
    in the one form kept now; text that is no date is kept as it is (its
    record reads as unreadable, as before)."""
    if not text:
        return text
    try:
        date = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    return date.isoformat(timespec="microseconds")


RECORDS = """
CREATE TABLE records (
    kind             TEXT NOT NULL,
    model            TEXT NOT NULL,
    id               TEXT NOT NULL,
    date             TEXT NOT NULL,
    args             TEXT NOT NULL,
    status           TEXT NOT NULL,
    finish_date      TEXT,
    message          TEXT,
    result           TEXT,
    error_status     INTEGER,
    owner            TEXT,
    started_by       TEXT,
    progress         REAL,
    progress_message TEXT,
    PRIMARY KEY (kind, id)
)
"""
RECORDS_BY_MODEL = "CREATE INDEX records_by_model ON records (kind, model, date, id)"
IDEMPOTENCY_KEYS = """
CREATE TABLE idempotency_keys (
    model      TEXT NOT NULL,
    started_by TEXT NOT NULL,
    key        TEXT NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (model, started_by, key)
)
"""

MIGRATIONS: list[Migration] = [
    # 1: trainings
    """
    CREATE TABLE trainings (
        model TEXT NOT NULL, uuid TEXT NOT NULL, date TEXT NOT NULL,
        args TEXT NOT NULL, status TEXT NOT NULL, output TEXT, finish_date TEXT,
        message TEXT, owner TEXT, PRIMARY KEY (model, uuid)
    )
    """,
    # 2: who started a training
    "ALTER TABLE trainings ADD COLUMN started_by TEXT",
    # 3: asynchronous predictions
    """
    CREATE TABLE jobs (
        model TEXT NOT NULL, id TEXT NOT NULL, date TEXT NOT NULL,
        args TEXT NOT NULL, status TEXT NOT NULL, finish_date TEXT, message TEXT,
        error_status INTEGER, result_type TEXT, result_size INTEGER, owner TEXT,
        started_by TEXT, idempotency_key TEXT, PRIMARY KEY (model, id)
    );
    CREATE UNIQUE INDEX jobs_idempotency
    ON jobs (model, COALESCE(started_by, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL
    """,
    # 4: events
    """
    CREATE TABLE events (
        kind TEXT NOT NULL, record TEXT NOT NULL, seq INTEGER NOT NULL,
        name TEXT NOT NULL, data TEXT NOT NULL, final INTEGER NOT NULL,
        PRIMARY KEY (kind, record, seq)
    )
    """,
    # 5: webhooks and their deliveries
    """
    CREATE TABLE webhooks (
        kind TEXT NOT NULL, record TEXT NOT NULL, url TEXT NOT NULL,
        events TEXT NOT NULL, PRIMARY KEY (kind, record)
    );
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY, url TEXT NOT NULL, type TEXT NOT NULL,
        body TEXT NOT NULL, attempts INTEGER NOT NULL, due REAL NOT NULL,
        kind TEXT NOT NULL, record TEXT NOT NULL
    )
    """,
    # 6: webhooks name their model (those of 5 could not be resumed: dropped)
    """
    DROP TABLE webhooks;
    CREATE TABLE webhooks (
        kind TEXT NOT NULL, record TEXT NOT NULL, model TEXT NOT NULL,
        url TEXT NOT NULL, events TEXT NOT NULL, PRIMARY KEY (kind, record)
    )
    """,
    # 7: one table of records
    _records_of_both_kinds,
    # 8: the bytes of results and logs, for servers sharing a database
    """
    CREATE TABLE outputs (
        kind TEXT NOT NULL, record TEXT NOT NULL, at INTEGER NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (kind, record, at)
    )
    """,
]
VERSION = len(MIGRATIONS)

# The columns each table has at VERSION, in order: checked at every start.
COLUMNS = shared_tables


def migrate(db: sqlite3.Connection) -> int:
    """Bring ``db`` (in autocommit mode) to ``VERSION``, in one
    transaction; the version it was at. Raises ``sqlite3.DatabaseError``
    for a file this version cannot use."""
    problem = db.execute("PRAGMA quick_check").fetchone()[0]
    if problem != "ok":
        raise sqlite3.DatabaseError(f"integrity check failed: {problem}")
    db.execute("BEGIN IMMEDIATE")  # proves the file is writable
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise sqlite3.DatabaseError(
                f"it was written by a newer deepaas (schema {version})"
            )
        for migration in MIGRATIONS[version:]:
            if callable(migration):
                migration(db)
            else:
                for statement in migration.split(";"):
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {VERSION}")
        for table, expected in COLUMNS.items():
            columns = tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
            if columns != expected:
                raise sqlite3.DatabaseError(
                    f"its {table} table has other columns "
                    f"({', '.join(columns) or 'none'}) than deepaas writes"
                )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return version

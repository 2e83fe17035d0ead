"""The schema of the PostgreSQL backend: one versioned list of migrations,
run at start in one transaction under an advisory lock, so that replicas
starting together neither race nor run a migration twice.

The tables hold what the SQLite file holds, in the same columns (dates as
ISO 8601 text, JSON as text), so that a record reads the same from either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepaas.state.rows import shared_tables

if TYPE_CHECKING:
    import asyncpg

# Any number, the same in every replica: the key of the lock held while
# the schema is checked and migrated.
MIGRATION_LOCK = 0x6465_6570_6161_73  # "deepaas"

MIGRATIONS = [
    # 1: the records of trainings and jobs, their events, webhooks,
    # deliveries and idempotency keys
    """
    CREATE TABLE records (
        kind TEXT NOT NULL, model TEXT NOT NULL, id TEXT NOT NULL,
        date TEXT NOT NULL, args TEXT NOT NULL, status TEXT NOT NULL,
        finish_date TEXT, message TEXT, result TEXT, error_status INTEGER,
        owner TEXT, started_by TEXT, progress DOUBLE PRECISION,
        progress_message TEXT,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX records_by_model ON records (kind, model, date, id);
    CREATE INDEX records_running ON records (kind, status);
    CREATE TABLE idempotency_keys (
        model TEXT NOT NULL, started_by TEXT NOT NULL, key TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (model, started_by, key)
    );
    CREATE INDEX idempotency_keys_by_record ON idempotency_keys (record);
    CREATE TABLE events (
        kind TEXT NOT NULL, record TEXT NOT NULL, seq INTEGER NOT NULL,
        name TEXT NOT NULL, data TEXT NOT NULL, final BOOLEAN NOT NULL,
        PRIMARY KEY (kind, record, seq)
    );
    CREATE TABLE webhooks (
        kind TEXT NOT NULL, record TEXT NOT NULL, model TEXT NOT NULL,
        url TEXT NOT NULL, events TEXT NOT NULL,
        PRIMARY KEY (kind, record)
    );
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY, url TEXT NOT NULL, type TEXT NOT NULL,
        body TEXT NOT NULL, attempts INTEGER NOT NULL,
        due DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, record TEXT NOT NULL
    );
    CREATE INDEX deliveries_by_due ON deliveries (due);
    """,
    # 2: the servers sharing the database, each with a lease it renews
    """
    CREATE TABLE replicas (id TEXT PRIMARY KEY, expires TIMESTAMPTZ NOT NULL)
    """,
    # 3: the bytes of job results and training logs, in chunks by offset
    """
    CREATE TABLE outputs (
        kind TEXT NOT NULL, record TEXT NOT NULL, at BIGINT NOT NULL,
        data BYTEA NOT NULL, PRIMARY KEY (kind, record, at)
    )
    """,
]
VERSION = len(MIGRATIONS)

# The columns each table has at VERSION, in order: checked at every start.
COLUMNS = {**shared_tables, "replicas": ("id", "expires")}


class SchemaError(Exception):
    """The database holds a schema this version cannot use."""


async def migrate(connection: asyncpg.Connection) -> int:
    """Bring the database to ``VERSION`` in one transaction, holding the
    migration lock; the version it was at. Raises ``SchemaError`` for a
    database this version cannot use."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS deepaas_schema (version INTEGER NOT NULL)"
        )
        version = await connection.fetchval("SELECT MAX(version) FROM deepaas_schema")
        version = version or 0
        if version > VERSION:
            raise SchemaError(f"it was written by a newer deepaas (schema {version})")
        for migration in MIGRATIONS[version:]:
            await connection.execute(migration)
        if version < VERSION:
            await connection.execute("DELETE FROM deepaas_schema")
            await connection.execute("INSERT INTO deepaas_schema VALUES ($1)", VERSION)
        for table, expected in COLUMNS.items():
            columns = tuple(
                row["column_name"]
                for row in await connection.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = $1 "
                    "ORDER BY ordinal_position",
                    table,
                )
            )
            if columns != expected:
                raise SchemaError(
                    f"its {table} table has other columns "
                    f"({', '.join(columns) or 'none'}) than deepaas writes"
                )
    return version

"""The SQLite backend: its file, its schema migrated in place from every
earlier version with the data kept, clear errors for a file it cannot use,
and queries that never run on the event loop."""

from __future__ import annotations

import datetime
import os
import socket
import sqlite3
import threading

import pytest

from deepaas.exceptions import StoreError
from deepaas.state import sqlite_schema
from deepaas.state.records import DONE, ERROR, INTERRUPTED, JOB, TRAINING, Record
from deepaas.state.sqlite import FILENAME, SQLiteDatabase

# A process of this host that has ended: this pid, another start time
GONE = f"{socket.gethostname()}:{os.getpid()}:0"


def run_migrations(db: sqlite3.Connection, migrations) -> None:
    for migration in migrations:
        if callable(migration):
            migration(db)
        else:
            for statement in migration.split(";"):
                db.execute(statement)


def written_by_version(path, version: int) -> None:
    """A database file as a server of schema ``version`` left it, with a
    record of each kind it knew (one of them written with the other date
    form of earlier versions), events and webhooks."""
    db = sqlite3.connect(path, isolation_level=None)
    # the rows are written in the tables of version 6 at most, then migrated
    run_migrations(db, sqlite_schema.MIGRATIONS[: min(version, 6)])
    if version >= 1:
        starter = ", 'key:alice'" if version >= 2 else ""
        db.execute(
            "INSERT INTO trainings VALUES ('m', 't1', '2026-01-02 03:04:05.250000', "
            "'{\"epochs\": 2}', 'done', '{\"loss\": 0.5}', "
            f"'2026-01-02 03:05:05.250000', NULL, '{GONE}'{starter})"
        )
        db.execute(
            "INSERT INTO trainings VALUES ('m', 't2', '2026-01-02T04:00:00', '{}', "
            f"'running', 'null', NULL, NULL, '{GONE}'{starter and ', NULL'})"
        )
    if version >= 3:
        db.execute(
            "INSERT INTO jobs VALUES ('m', 'j1', '2026-01-03T00:00:00.000001', "
            "'{\"x\": 1}', 'done', '2026-01-03T00:00:01', NULL, NULL, "
            f"'application/json', 12, '{GONE}', 'key:bob', 'k-1')"
        )
        db.execute(
            "INSERT INTO jobs VALUES ('m', 'j2', '2026-01-03T00:00:02', '{}', "
            f"'error', '2026-01-03T00:00:03', 'bad', 422, NULL, NULL, '{GONE}', "
            "NULL, NULL)"
        )
    if version >= 4:
        db.execute("INSERT INTO events VALUES ('job', 'j1', 1, 'status', '{}', 0)")
        db.execute("INSERT INTO events VALUES ('job', 'j1', 2, 'result', '{}', 1)")
    if version == 5:
        db.execute(
            "INSERT INTO webhooks VALUES ('job', 'j9', 'http://h.example/', "
            "'completed')"
        )
    if version >= 6:
        db.execute(
            "INSERT INTO webhooks VALUES ('job', 'j9', 'm', 'http://h.example/', "
            "'start,completed')"
        )
    if version >= 5:
        db.execute(
            "INSERT INTO deliveries VALUES ('msg_1', 'http://h.example/', "
            "'prediction.completed', '{}', 2, 5.0, 'job', 'j9')"
        )
    run_migrations(db, sqlite_schema.MIGRATIONS[6:version])
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


@pytest.mark.parametrize("version", range(sqlite_schema.VERSION))
async def test_a_database_of_every_earlier_version_is_migrated_in_place(
    tmp_path, version
):
    written_by_version(tmp_path / FILENAME, version)
    database = SQLiteDatabase(str(tmp_path))
    try:
        assert database.migrated_from == version
        records = database.records
        if version >= 1:
            done = await records.get(TRAINING, "m", "t1")
            assert done.status == DONE and done.result == {"loss": 0.5}
            assert done.args == {"epochs": 2}
            assert done.date == datetime.datetime(2026, 1, 2, 3, 4, 5, 250000)
            assert done.duration() == datetime.timedelta(minutes=1)
            assert done.started_by == ("key:alice" if version >= 2 else None)
            assert (await records.get(TRAINING, "m", "t2")).result is None
            # the running one, of a server long gone, ends at the next start
            cut = await records.interrupt(
                TRAINING, ERROR, "cut", database.owner_is_gone
            )
            assert [r.id for r in cut] == ["t2"]
        if version >= 3:
            job = await records.get(JOB, "m", "j1")
            assert job.result == {"type": "application/json", "size": 12}
            assert job.started_by == "key:bob"
            failed = await records.get(JOB, "m", "j2")
            assert (failed.status, failed.error_status, failed.result) == (
                ERROR,
                422,
                None,
            )
            assert await database.keys.claim("m", "key:bob", "k-1", "new") == "j1"
            # dates of both forms are compared as dates
            cutoff = datetime.datetime(2026, 1, 3, 0, 0, 2)
            assert await records.finished_before(JOB, cutoff) == [("m", "j1")]
        if version >= 4:
            assert [e.seq for e in await database.events.after("job", "j1", 0)] == [
                1,
                2,
            ]
        hooks = await database.webhooks.hooks()
        if version >= 6:
            assert [(h.record, h.model, h.events) for h in hooks] == [
                ("j9", "m", ("start", "completed"))
            ]
        else:
            assert hooks == []  # those of 5 named no model: dropped
        if version >= 5:
            assert [d.id for d in await database.webhooks.due(10.0, 5)] == ["msg_1"]
        # and it takes new records of both kinds
        await records.add(Record(kind=JOB, model="m", args={}, status=INTERRUPTED))
    finally:
        await database.close()
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "trainings" not in tables and "jobs" not in tables
    db.close()


async def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path):
    written_by_version(tmp_path / FILENAME, 6)
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("CREATE TABLE records (something TEXT)")  # in the way
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        SQLiteDatabase(str(tmp_path))
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 6
    assert db.execute("SELECT COUNT(*) FROM trainings").fetchone()[0] == 2
    db.close()


def test_a_database_of_a_newer_version_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute(f"PRAGMA user_version = {sqlite_schema.VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer deepaas"):
        SQLiteDatabase(str(tmp_path))


def test_a_database_with_another_schema_is_a_clear_error(tmp_path):
    db = sqlite3.connect(tmp_path / FILENAME)
    run_migrations(db, sqlite_schema.MIGRATIONS[:-1])
    db.execute("DROP TABLE events")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute(f"PRAGMA user_version = {sqlite_schema.VERSION - 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError) as info:
        SQLiteDatabase(str(tmp_path))
    assert "other columns (id, name)" in info.value.message
    assert "--state-dir" in info.value.message


def test_corrupt_database_is_a_clear_error(tmp_path):
    (tmp_path / FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        SQLiteDatabase(str(tmp_path))
    assert FILENAME in info.value.message
    assert "--state-dir" in info.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError):
            SQLiteDatabase(str(tmp_path / "state"))
    finally:
        tmp_path.chmod(0o700)


def test_state_dir_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file, not a directory")
    with pytest.raises(StoreError) as info:
        SQLiteDatabase(str(blocker))
    assert "state directory" in info.value.message


async def test_the_file_is_in_wal_mode_and_queried_off_the_event_loop(tmp_path):
    database = SQLiteDatabase(str(tmp_path))
    try:
        threads = []

        def mode() -> str:
            threads.append(threading.current_thread())
            return database.execute("PRAGMA journal_mode").fetchone()[0]

        assert await database.run("read", mode) == "wal"
        assert threads[0] is not threading.current_thread()
        assert threads[0].name.startswith("deepaas-sqlite")
    finally:
        await database.close()


async def test_one_unreadable_row_fails_alone(tmp_path):
    database = SQLiteDatabase(str(tmp_path))
    try:
        good = Record(kind=TRAINING, model="m", args={})
        bad = Record(kind=TRAINING, model="m", args={})
        await database.records.add(good)
        await database.records.add(bad)
        await database.run(
            "damage",
            database.execute,
            "UPDATE records SET args = 'not json', date = 'yesterday' WHERE id = ?",
            (bad.id,),
        )
        listed = {r.id: r for r in await database.records.find(TRAINING, "m")}
        assert listed[good.id].status == good.status
        damaged = await database.records.get(TRAINING, "m", bad.id)
        assert damaged.status == ERROR and "cannot be read" in damaged.message
        assert listed[bad.id].status == ERROR
    finally:
        await database.close()


async def test_a_failing_query_is_a_store_error_saying_what_failed(tmp_path):
    database = SQLiteDatabase(str(tmp_path))
    record = Record(kind=JOB, model="m", args={})
    try:
        await database.records.add(record)
        with pytest.raises(StoreError, match=f"Cannot save job {record.id}"):
            await database.records.add(record)  # the same id twice
    finally:
        await database.close()

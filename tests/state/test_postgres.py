"""What the PostgreSQL backend does beyond the repositories every backend
has: a schema that servers starting together create once, claims and
interruptions that two servers racing make once, and clear errors; and
how ``--database`` chooses a backend."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from deepaas import exceptions
from deepaas.state import Record, open_database
from deepaas.state import postgres_schema as schema
from deepaas.state.records import INTERRUPTED, JOB, RUNNING
from deepaas.state.sqlite import SQLiteDatabase
from tests import helpers
from tests.pgcluster import free_port

postgres = pytest.mark.postgres


async def opened(url: str):
    from deepaas.state.postgres import PostgresDatabase

    database = PostgresDatabase(url)
    await database.open()
    return database


@postgres
async def test_servers_starting_together_create_the_schema_once(postgres_cluster):
    url = await postgres_cluster.new_database()
    replicas = await asyncio.gather(*(opened(url) for _ in range(4)))
    try:
        assert sorted(r.migrated_from for r in replicas) == [0] + [schema.VERSION] * 3
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval(
                "SELECT array_agg(version) FROM deepaas_schema"
            ) == [schema.VERSION]
        finally:
            await connection.close()
    finally:
        await asyncio.gather(*(r.close() for r in replicas))


@postgres
async def test_a_database_of_a_newer_deepaas_is_refused(postgres_cluster):
    url = await postgres_cluster.new_database()
    await (await opened(url)).close()  # the schema made
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("UPDATE deepaas_schema SET version = version + 1")
    finally:
        await connection.close()
    with pytest.raises(exceptions.StoreError, match="newer deepaas"):
        await opened(url)


@postgres
async def test_a_table_of_other_columns_is_refused(postgres_cluster):
    url = await postgres_cluster.new_database()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE deepaas_schema (version INTEGER)")
        await connection.execute(
            f"INSERT INTO deepaas_schema VALUES ({schema.VERSION})"
        )
        await connection.execute("CREATE TABLE records (id TEXT)")
    finally:
        await connection.close()
    with pytest.raises(exceptions.StoreError, match="records table has other columns"):
        await opened(url)


async def test_an_unreachable_database_is_named_without_its_password():
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/state"
    with pytest.raises(exceptions.StoreError) as caught:
        await opened(url)
    assert "someone:***@127.0.0.1" in caught.value.message
    assert "s3cret" not in caught.value.message


@postgres
async def test_an_idempotency_key_raced_for_by_two_servers_goes_to_one(
    postgres_cluster,
):
    url = await postgres_cluster.new_database()
    first, second = await opened(url), await opened(url)
    try:
        for attempt in range(20):
            key = f"k{attempt}"
            claims = await asyncio.gather(
                first.keys.claim("m", "alice", key, f"a{attempt}"),
                second.keys.claim("m", "alice", key, f"b{attempt}"),
            )
            assert sorted(claims, key=str) in (
                [None, f"a{attempt}"],
                [None, f"b{attempt}"],
            ), claims
    finally:
        await first.close()
        await second.close()


@postgres
async def test_a_record_two_servers_interrupt_at_once_is_ended_once(postgres_cluster):
    url = await postgres_cluster.new_database()
    first, second = await opened(url), await opened(url)
    try:
        records = [
            Record(kind=JOB, model="m", args={}, owner="gone") for _ in range(50)
        ]
        for record in records:
            await first.records.add(record)
        ended = await asyncio.gather(
            *(
                db.records.interrupt(JOB, INTERRUPTED, "cut", lambda owner: True)
                for db in (first, second)
            )
        )
        ids = [r.id for batch in ended for r in batch]
        assert sorted(ids) == sorted(r.id for r in records)  # each once
        assert (await second.records.counts(JOB)) == {("m", INTERRUPTED): 50}
        assert RUNNING not in {s for _, s in await first.records.counts(JOB)}
    finally:
        await first.close()
        await second.close()


def test_the_database_option_chooses_the_backend(tmp_path):
    default = open_database(str(tmp_path / "state"))
    assert isinstance(default, SQLiteDatabase)
    assert default.path == str(tmp_path / "state" / "trainings.sqlite3")
    default.close_now()
    elsewhere = tmp_path / "elsewhere" / "records.db"
    chosen = open_database(str(tmp_path / "state"), f"sqlite://{elsewhere}")
    assert isinstance(chosen, SQLiteDatabase) and elsewhere.is_file()
    chosen.close_now()
    shared = open_database("", "postgresql://deepaas@db.example.org/state")
    assert shared.shared and shared.where == "postgresql://deepaas@db.example.org/state"
    for wrong in ("sqlite://relative.db", "mysql://db.example.org/state"):
        with pytest.raises(exceptions.ConfigurationError, match="--database"):
            open_database(str(tmp_path / "state"), wrong)


@postgres
async def test_a_server_whose_lease_lapses_is_gone_and_cannot_undo_it(
    postgres_cluster,
):
    from deepaas.state.postgres import PostgresDatabase

    url = await postgres_cluster.new_database()
    stalled, survivor = PostgresDatabase(url, lease=1), PostgresDatabase(url, lease=1)
    await stalled.open()
    await survivor.open()
    try:
        record = Record(kind=JOB, model="m", args={}, owner=stalled.owner)
        await stalled.records.add(record)
        assert not survivor.owner_is_gone(stalled.owner)
        assert survivor.owner_is_gone("a server that never was")
        stalled._renewing.cancel()  # it stops renewing its lease, as if frozen

        async def gone() -> bool:
            await survivor.renew()
            return survivor.owner_is_gone(stalled.owner)

        assert await helpers.eventually(gone, timeout=10)
        ended = await survivor.records.interrupt(
            JOB, INTERRUPTED, "cut", survivor.owner_is_gone
        )
        assert [r.id for r in ended] == [record.id]
        # it wakes up and saves how its record ended: the interruption stays
        record.status = "done"
        assert not await stalled.records.update(record)
        kept = await survivor.records.get(JOB, "m", record.id)
        assert kept.status == INTERRUPTED
        await stalled.renew()  # and it holds a lease again, for its new work
        await survivor.renew()
        assert not survivor.owner_is_gone(stalled.owner)
    finally:
        await stalled.close()
        await survivor.close()


@postgres
async def test_limits_hold_for_servers_starting_records_together(postgres_cluster):
    url = await postgres_cluster.new_database()
    first, second = await opened(url), await opened(url)
    try:
        records = [
            Record(kind=JOB, model="m", args={}, started_by=f"u{n % 2}")
            for n in range(40)
        ]
        refused = await asyncio.gather(
            *(
                (first, second)[n % 3 == 0].records.add_if_room(record, 10, 0)
                for n, record in enumerate(records)
            )
        )
        assert refused.count(None) == 10 and set(refused) == {None, "all"}
        counts = await second.records.counts(JOB)
        assert counts == {("m", RUNNING): 10}
        more = [Record(kind=JOB, model="m", args={}, started_by="u9") for _ in range(9)]
        refused = await asyncio.gather(
            *(
                (first, second)[n % 2].records.add_if_room(record, 100, 4)
                for n, record in enumerate(more)
            )
        )
        assert refused.count(None) == 4 and set(refused) == {None, "of user"}
    finally:
        await first.close()
        await second.close()

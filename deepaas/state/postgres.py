"""The PostgreSQL backend: every repository in a PostgreSQL database that
several servers (replicas behind a load balancer) may share.

Queries go through a pool of asyncpg connections, on the event loop itself
(asyncpg is asynchronous: nothing waits on a thread). The schema is created
and migrated when the database is opened (``postgres_schema``). Install
with ``pip install 'deepaas[postgres]'``; nothing else imports asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from deepaas import exceptions
from deepaas.state import postgres_schema, processes
from deepaas.state.postgres_tables import (
    EVENTS_CHANNEL,
    PostgresEvents,
    PostgresOutputs,
    PostgresWebhooks,
)
from deepaas.state.records import RUNNING, Record, date_text, now
from deepaas.state.repositories import (
    CancelAsked,
    Database,
    EventsKept,
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

T = TypeVar("T")
LOG = logging.getLogger(__name__)

# Seconds a server's lease lasts: one gone is noticed within this
DEFAULT_LEASE = 15.0

# The first key of the advisory locks under which records start within the
# limits (the second: the kind's)
QUOTA_LOCK = 0x6471

# What servers sharing the database tell each other (LISTEN/NOTIFY):
# "owner kind record first last" of the events a server kept, and "owner
# kind record" of a record its owner is asked to cancel.
CANCEL_CHANNEL = "deepaas_cancel"
LISTEN_CHECK = 5.0  # seconds between checks that the listening connection lives
LISTEN_RETRY = 1.0  # seconds before connecting again to listen
LISTEN_START = 10.0  # seconds open() waits to be listening
LISTENER_NAME = "deepaas listening"  # its application_name, in pg_stat_activity

# Connections a server keeps open at most
POOL_SIZE = 10
RECORD_COLUMNS = ", ".join(record_names)
FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def redacted(url: str) -> str:
    """``url`` without its password, to name it in messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


class PostgresDatabase(Database):
    """The state in the PostgreSQL database at ``url``
    (``postgresql://user:password@host:port/database?sslmode=...``; the
    password may come from ``PGPASSWORD`` or a password file instead).

    Each server holds a lease of ``lease`` seconds in the ``replicas`` table,
    renewed every third of it: a server whose lease has lapsed is gone, and
    its running records may be ended by the others (``owner_is_gone``)."""

    shared = True

    def __init__(self, url: str, lease: float = DEFAULT_LEASE) -> None:
        self.url = url
        self.lease = lease
        self._live: frozenset[str] = frozenset()  # servers whose lease holds
        self._renewing: asyncio.Task[None] | None = None
        self._registered = False
        self.where = redacted(url)
        # This server among those sharing the database: its process, and a
        # token of this opening (a process may open it again after a lapse).
        self.owner = f"{processes.this_process()}/{uuid.uuid4().hex[:12]}"
        self.migrated_from: int | None = None
        self._pool: asyncpg.Pool | None = None
        self._kept: EventsKept | None = None
        self._cancel: CancelAsked | None = None
        self._caught_up: Callable[[], None] = lambda: None
        self._listening: asyncio.Task[None] | None = None
        self.records = PostgresRecords(self)
        self.keys = PostgresIdempotencyKeys(self)
        self.events = PostgresEvents(self)
        self.webhooks = PostgresWebhooks(self)
        self.outputs = PostgresOutputs(self)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=POOL_SIZE
            )
            async with self._pool.acquire() as connection:
                self.migrated_from = await postgres_schema.migrate(connection)
            await self.renew()
        except (*FAILURES, postgres_schema.SchemaError) as exc:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise exceptions.StoreError(
                f"Cannot use the state database {self.where}: {exc}. Check that "
                "PostgreSQL answers there (--database) and that its user may "
                "create tables in that database."
            ) from exc
        loop = asyncio.get_running_loop()
        self._renewing = loop.create_task(self._keep_lease())
        if self._kept is not None or self._cancel is not None:
            heard = asyncio.Event()
            self._listening = loop.create_task(self._keep_listening(heard))
            # Heard from the start, so that no event kept after open() is
            # missed; a listening connection refused goes on being tried.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), LISTEN_START)

    def listen(
        self, kept: EventsKept, cancel: CancelAsked, caught_up: Callable[[], None]
    ) -> None:
        self._kept, self._cancel, self._caught_up = kept, cancel, caught_up

    async def ask_to_cancel(self, owner: str, kind: str, record: str) -> None:
        await self.run(
            f"ask for {kind} {record} to be cancelled",
            lambda: self.pool.execute(
                "SELECT pg_notify($1, $2)", CANCEL_CHANNEL, f"{owner} {kind} {record}"
            ),
        )

    async def _keep_listening(self, heard: asyncio.Event) -> None:
        """Hold a connection of its own that listens to the other servers,
        connecting again when it is lost (then ``caught_up``)."""
        first = True
        while True:
            try:
                connection = await asyncpg.connect(
                    self.url, server_settings={"application_name": LISTENER_NAME}
                )
            except FAILURES as exc:
                LOG.error(
                    "Cannot listen to the other servers in %s: %s", self.where, exc
                )
                await asyncio.sleep(LISTEN_RETRY)
                continue
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _, lost=lost: lost.set())
            try:
                await connection.add_listener(EVENTS_CHANNEL, self._heard_events)
                await connection.add_listener(CANCEL_CHANNEL, self._heard_cancel)
                if not first:
                    LOG.info("Listening to the other servers in %s again", self.where)
                    self._caught_up()
                first = False
                heard.set()
                while not lost.is_set():
                    # A connection that died without a word is found out too.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_CHECK)
                    if not lost.is_set():
                        await asyncio.wait_for(
                            connection.fetchval("SELECT 1"), LISTEN_CHECK
                        )
            except (*FAILURES, TimeoutError) as exc:
                LOG.error("Lost the connection listening in %s: %s", self.where, exc)
            finally:
                connection.terminate()
            await asyncio.sleep(LISTEN_RETRY)

    def _heard_events(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        owner, kind, record, first, last = payload.split(" ")
        if owner != self.owner and self._kept is not None:
            self._kept(kind, record, int(first), int(last))

    def _heard_cancel(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        owner, kind, record = payload.split(" ")
        if owner == self.owner and self._cancel is not None:
            self._cancel(kind, record)

    async def renew(self) -> None:
        """Renew this server's lease, and learn whose leases hold."""
        renewed = await self.pool.execute(
            "UPDATE replicas SET expires = now() + make_interval(secs => $2) "
            "WHERE id = $1",
            self.owner,
            self.lease,
        )
        if renewed == "UPDATE 0":
            if self._registered:
                LOG.error(
                    "This server's lease in %s lapsed: its running work may have "
                    "been ended by another server",
                    self.where,
                )
            await self.pool.execute(
                "INSERT INTO replicas VALUES ($1, now() + make_interval(secs => $2)) "
                "ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires",
                self.owner,
                self.lease,
            )
            self._registered = True
        rows = await self.pool.fetch("SELECT id FROM replicas WHERE expires > now()")
        self._live = frozenset(row["id"] for row in rows)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep((self.lease or DEFAULT_LEASE) / 3)
            try:
                await self.renew()
            except (*FAILURES, exceptions.StoreError) as exc:
                LOG.error("Cannot renew this server's lease in %s: %s", self.where, exc)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise exceptions.StoreError(f"The state database {self.where} is closed")
        return self._pool

    async def run(self, what: str, query: Callable[[], Awaitable[T]]) -> T:
        """``await query()``; a failure is a ``StoreError`` saying ``what``
        was being done."""
        try:
            return await query()
        except FAILURES as exc:
            raise exceptions.StoreError(f"Cannot {what}: {exc}") from exc

    def owner_is_gone(self, owner: str | None) -> bool:
        """Whether the server that ran a record is gone: its lease lapsed
        (as of the last renewal), or it never had one."""
        return owner != self.owner and owner not in self._live

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
            self._listening = None
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
            self._renewing = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(*FAILURES):
                # Gone for good: its records were ended as it stopped.
                await pool.execute("DELETE FROM replicas WHERE id = $1", self.owner)
            await pool.close()


class PostgresRecords(Records):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add(self, record: Record) -> None:
        names = ", ".join(f"${n}" for n in range(1, len(record_names) + 1))
        await self.db.run(
            f"save {record.kind} {record.id}",
            lambda: self.db.pool.execute(
                f"INSERT INTO records VALUES ({names})",
                *record_values(record).values(),
            ),
        )

    async def add_if_room(
        self, record: Record, max_running: int, max_of_user: int
    ) -> str | None:
        names = ", ".join(f"${n}" for n in range(1, len(record_names) + 1))

        async def add_if_room() -> str | None:
            async with self.db.pool.acquire() as connection:
                async with connection.transaction():
                    # Servers starting records of a kind take turns: each
                    # counts what the one before it added.
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                        QUOTA_LOCK,
                        record.kind,
                    )
                    counted = await connection.fetchrow(
                        "SELECT COUNT(*) AS running, COUNT(*) FILTER "
                        "(WHERE started_by = $3) AS of_user FROM records "
                        "WHERE kind = $1 AND status = $2",
                        record.kind,
                        RUNNING,
                        record.started_by,
                    )
                    refused = limit_reached(
                        counted["running"], counted["of_user"], max_running, max_of_user
                    )
                    if refused is None:
                        await connection.execute(
                            f"INSERT INTO records VALUES ({names})",
                            *record_values(record).values(),
                        )
                    return refused

        return await self.db.run(f"save {record.kind} {record.id}", add_if_room)

    async def update(self, record: Record) -> bool:
        values = record_values(record)
        done = await self.db.run(
            f"save {record.kind} {record.id}",
            lambda: self.db.pool.execute(
                "UPDATE records SET status = $1, finish_date = $2, message = $3, "
                "result = $4, error_status = $5, progress = $6, "
                "progress_message = $7 WHERE kind = $8 AND id = $9 "
                f"AND status = '{RUNNING}'",
                values["status"],
                values["finish_date"],
                values["message"],
                values["result"],
                values["error_status"],
                values["progress"],
                values["progress_message"],
                record.kind,
                record.id,
            ),
        )
        return done != "UPDATE 0"

    async def get(self, kind: str, model: str, record_id: str) -> Record | None:
        row = await self.db.run(
            f"read {kind} {record_id}",
            lambda: self.db.pool.fetchrow(
                f"SELECT {RECORD_COLUMNS} FROM records "
                "WHERE kind = $1 AND model = $2 AND id = $3",
                kind,
                model,
                record_id,
            ),
        )
        return record_from_row(row) if row is not None else None

    async def find(
        self,
        kind: str,
        model: str,
        started_by: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND model = $2"
        params: list[Any] = [kind, model]
        if started_by is not None:
            params.append(started_by)
            sql += f" AND started_by = ${len(params)}"
        if after is not None:
            params.append(after)
            sql += (
                " AND (date, id) > (SELECT date, id FROM records "
                f"WHERE kind = $1 AND model = $2 AND id = ${len(params)})"
            )
        params.append(limit)
        sql += f" ORDER BY date, id LIMIT ${len(params)}"
        rows = await self.db.run(
            f"list the {kind}s", lambda: self.db.pool.fetch(sql, *params)
        )
        return [record_from_row(row) for row in rows]

    async def remove(self, kind: str, model: str, record_id: str) -> None:
        await self.db.run(
            f"remove {kind} {record_id}",
            lambda: self.db.pool.execute(
                "DELETE FROM records WHERE kind = $1 AND model = $2 AND id = $3",
                kind,
                model,
                record_id,
            ),
        )

    async def finished_before(
        self, kind: str, cutoff: datetime.datetime
    ) -> list[tuple[str, str]]:
        rows = await self.db.run(
            f"find old {kind}s",
            lambda: self.db.pool.fetch(
                "SELECT model, id FROM records WHERE kind = $1 AND status != $2 "
                "AND finish_date IS NOT NULL AND finish_date < $3",
                kind,
                RUNNING,
                date_text(cutoff),
            ),
        )
        return [(row["model"], row["id"]) for row in rows]

    async def interrupt(
        self,
        kind: str,
        status: str,
        message: str,
        is_gone: Callable[[str | None], bool],
    ) -> list[Record]:
        async def interrupt() -> list[Record]:
            ended = now()
            async with self.db.pool.acquire() as connection:
                async with connection.transaction():
                    # Locked, so that two servers never end the same record.
                    rows = await connection.fetch(
                        f"SELECT {RECORD_COLUMNS} FROM records "
                        "WHERE kind = $1 AND status = $2 FOR UPDATE SKIP LOCKED",
                        kind,
                        RUNNING,
                    )
                    stale = [
                        record_from_row(row) for row in rows if is_gone(row[OWNER])
                    ]
                    await connection.executemany(
                        "UPDATE records SET status = $1, message = $2, "
                        "finish_date = $3 WHERE kind = $4 AND id = $5",
                        [
                            (status, message, date_text(ended), kind, record.id)
                            for record in stale
                        ],
                    )
            for record in stale:
                record.status, record.message, record.finish_date = (
                    status,
                    message,
                    ended,
                )
            return stale

        return await self.db.run(f"record interrupted {kind}s", interrupt)

    async def counts(self, kind: str) -> dict[tuple[str, str], int]:
        rows = await self.db.run(
            f"count the {kind}s",
            lambda: self.db.pool.fetch(
                "SELECT model, status, COUNT(*) AS n FROM records WHERE kind = $1 "
                "GROUP BY model, status",
                kind,
            ),
        )
        return {(row["model"], row["status"]): row["n"] for row in rows}


class PostgresIdempotencyKeys(IdempotencyKeys):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def claim(
        self, model: str, started_by: str | None, key: str, record_id: str
    ) -> str | None:
        async def claim() -> str | None:
            # Of servers racing on one key, one inserts it; the others wait
            # for it to commit, insert nothing, and read (in a statement of
            # their own, which sees the commit) the record it names.
            taken = await self.db.pool.fetchval(
                "INSERT INTO idempotency_keys VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING record",
                model,
                started_by or "",
                key,
                record_id,
            )
            if taken is not None:
                return None
            holder = await self.db.pool.fetchval(
                "SELECT record FROM idempotency_keys "
                "WHERE model = $1 AND started_by = $2 AND key = $3",
                model,
                started_by or "",
                key,
            )
            return str(holder) if holder is not None else None

        return await self.db.run("keep an idempotency key", claim)

    async def release(self, record_id: str) -> None:
        await self.db.run(
            "forget an idempotency key",
            lambda: self.db.pool.execute(
                "DELETE FROM idempotency_keys WHERE record = $1", record_id
            ),
        )

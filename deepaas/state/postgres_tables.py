"""The PostgreSQL backend's events, webhooks and outputs (``postgres``
holds the database, its records and idempotency keys)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from deepaas.state.repositories import (
    Delivery,
    Event,
    Events,
    Outputs,
    StoredHook,
    Webhooks,
)

T = TypeVar("T")


class PostgresDatabase(Protocol):
    """What the tables use of the database (``postgres.PostgresDatabase``)."""

    owner: str

    @property
    def pool(self) -> Any: ...  # an asyncpg.Pool

    async def run(self, what: str, query: Callable[[], Awaitable[T]]) -> T: ...


# What a server tells the others when it keeps events (LISTEN/NOTIFY):
# "owner kind record first last"
EVENTS_CHANNEL = "deepaas_events"


class PostgresEvents(Events):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add(self, kind: str, record: str, event: Event) -> None:
        await self.add_all([(kind, record, event)])

    async def add_all(self, events: list[tuple[str, str, Event]]) -> None:
        if not events:
            return
        # One statement, whatever the number of events
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for kind, record, event in events:
            for column, value in zip(
                columns,
                (kind, record, event.seq, event.name, event.data, event.final),
                strict=True,
            ):
                column.append(value)
        # The other servers are told of them as they are committed.
        await self.db.run(
            "save events",
            lambda: self.db.pool.execute(
                "WITH kept AS (INSERT INTO events SELECT * FROM unnest($1::text[], "
                "$2::text[], $3::integer[], $4::text[], $5::text[], $6::boolean[]) "
                "RETURNING kind, record, seq) "
                "SELECT pg_notify($7, concat_ws(' ', $8::text, kind, record, "
                "MIN(seq), MAX(seq))) FROM kept GROUP BY kind, record",
                *columns,
                EVENTS_CHANNEL,
                self.db.owner,
            ),
        )

    async def after(
        self, kind: str, record: str, seq: int, limit: int | None = None
    ) -> list[Event]:
        rows = await self.db.run(
            "read events",
            lambda: self.db.pool.fetch(
                "SELECT seq, name, data, final FROM events WHERE kind = $1 AND "
                "record = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                kind,
                record,
                seq,
                limit,
            ),
        )
        return [
            Event(row["seq"], row["name"], row["data"], row["final"]) for row in rows
        ]

    async def last_seq(self, kind: str, record: str) -> int:
        last = await self.db.run(
            "read events",
            lambda: self.db.pool.fetchval(
                "SELECT MAX(seq) FROM events WHERE kind = $1 AND record = $2",
                kind,
                record,
            ),
        )
        return int(last or 0)

    async def remove(self, kind: str, record: str) -> None:
        await self.db.run(
            "remove events",
            lambda: self.db.pool.execute(
                "DELETE FROM events WHERE kind = $1 AND record = $2", kind, record
            ),
        )

    async def prune(self, kind: str, record: str, up_to: int) -> None:
        await self.db.run(
            "prune events",
            lambda: self.db.pool.execute(
                "DELETE FROM events WHERE kind = $1 AND record = $2 AND seq <= $3",
                kind,
                record,
                up_to,
            ),
        )

    async def prune_to_bytes(self, kind: str, record: str, keep: int) -> None:
        # The newest event beyond ``keep`` bytes, counting from the newest,
        # and every one before it go.
        await self.db.run(
            "prune events",
            lambda: self.db.pool.execute(
                "DELETE FROM events WHERE kind = $1 AND record = $2 AND seq <= ("
                "SELECT seq FROM (SELECT seq, SUM(octet_length(data)) OVER "
                "(ORDER BY seq DESC) AS held FROM events WHERE kind = $1 "
                "AND record = $2) AS newest WHERE held > $3 "
                "ORDER BY seq DESC LIMIT 1)",
                kind,
                record,
                keep,
            ),
        )


UPSERT_DELIVERY = (
    "INSERT INTO deliveries VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, type = EXCLUDED.type, "
    "body = EXCLUDED.body, attempts = EXCLUDED.attempts, due = EXCLUDED.due, "
    "kind = EXCLUDED.kind, record = EXCLUDED.record"
)


class PostgresWebhooks(Webhooks):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add_hook(self, hook: StoredHook) -> None:
        await self.db.run(
            "save a webhook",
            lambda: self.db.pool.execute(
                "INSERT INTO webhooks VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (kind, record) DO UPDATE SET model = EXCLUDED.model, "
                "url = EXCLUDED.url, events = EXCLUDED.events",
                hook.kind,
                hook.record,
                hook.model,
                hook.url,
                ",".join(hook.events),
            ),
        )

    async def hooks(self) -> list[StoredHook]:
        rows = await self.db.run(
            "read the webhooks",
            lambda: self.db.pool.fetch(
                "SELECT kind, record, model, url, events FROM webhooks"
            ),
        )
        return [
            StoredHook(
                row["kind"],
                row["record"],
                row["model"],
                row["url"],
                tuple(row["events"].split(",")),
            )
            for row in rows
        ]

    async def remove_hook(self, kind: str, record: str) -> None:
        await self.db.run(
            "save a webhook",
            lambda: self.db.pool.execute(
                "DELETE FROM webhooks WHERE kind = $1 AND record = $2", kind, record
            ),
        )

    async def fire(self, kind: str, record: str, delivery: Delivery | None) -> bool:
        async def fire() -> bool:
            async with self.db.pool.acquire() as connection:
                async with connection.transaction():
                    # Of servers firing at once, one deletes the row; the
                    # others wait for it to commit, and delete none.
                    gone = await connection.execute(
                        "DELETE FROM webhooks WHERE kind = $1 AND record = $2",
                        kind,
                        record,
                    )
                    if gone == "DELETE 0":
                        return False
                    if delivery is not None:
                        await connection.execute(
                            UPSERT_DELIVERY, *dataclasses.astuple(delivery)
                        )
                    return True

        return await self.db.run("save a webhook", fire)

    async def add_delivery(self, delivery: Delivery) -> None:
        await self.db.run(
            "save a webhook",
            lambda: self.db.pool.execute(
                UPSERT_DELIVERY, *dataclasses.astuple(delivery)
            ),
        )

    async def add_progress(self, delivery: Delivery) -> None:
        async def add_progress() -> None:
            async with self.db.pool.acquire() as connection:
                async with connection.transaction():
                    pending = await connection.fetchval(
                        "SELECT id FROM deliveries WHERE kind = $1 AND record = $2 "
                        "AND type LIKE '%.progress' AND attempts = 0 FOR UPDATE",
                        delivery.kind,
                        delivery.record,
                    )
                    replacing = delivery
                    if pending is not None:
                        replacing = dataclasses.replace(delivery, id=pending)
                    await connection.execute(
                        UPSERT_DELIVERY, *dataclasses.astuple(replacing)
                    )

        await self.db.run("save a webhook", add_progress)

    async def due(self, now: float, limit: int) -> list[Delivery]:
        rows = await self.db.run(
            "read the webhooks",
            lambda: self.db.pool.fetch(
                "SELECT id, url, type, body, attempts, due, kind, record "
                "FROM deliveries WHERE due <= $1 ORDER BY due LIMIT $2",
                now,
                limit,
            ),
        )
        return [Delivery(*row) for row in rows]

    async def claim(self, now: float, limit: int, hold: float) -> list[Delivery]:
        # Locked rows are another server's claim being made: skipped.
        rows = await self.db.run(
            "read the webhooks",
            lambda: self.db.pool.fetch(
                "WITH claimed AS (SELECT id, due FROM deliveries WHERE due <= $1 "
                "ORDER BY due LIMIT $2 FOR UPDATE SKIP LOCKED) "
                "UPDATE deliveries SET due = $1 + $3 FROM claimed "
                "WHERE deliveries.id = claimed.id RETURNING deliveries.id, url, "
                "type, body, attempts, claimed.due, kind, record",
                now,
                limit,
                hold,
            ),
        )
        return sorted((Delivery(*row) for row in rows), key=lambda d: d.due)

    async def next_due(self) -> float | None:
        due = await self.db.run(
            "read the webhooks",
            lambda: self.db.pool.fetchval("SELECT MIN(due) FROM deliveries"),
        )
        return float(due) if due is not None else None

    async def remove_delivery(self, delivery_id: str) -> None:
        await self.db.run(
            "save a webhook",
            lambda: self.db.pool.execute(
                "DELETE FROM deliveries WHERE id = $1", delivery_id
            ),
        )

    async def count(self) -> int:
        count = await self.db.run(
            "read the webhooks",
            lambda: self.db.pool.fetchval("SELECT COUNT(*) FROM deliveries"),
        )
        return int(count)


class PostgresOutputs(Outputs):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add(self, kind: str, record: str, at: int, data: bytes) -> None:
        await self.db.run(
            "save output",
            lambda: self.db.pool.execute(
                "INSERT INTO outputs VALUES ($1, $2, $3, $4) ON CONFLICT "
                "(kind, record, at) DO UPDATE SET data = EXCLUDED.data",
                kind,
                record,
                at,
                data,
            ),
        )

    async def _read(self, sql: str, *params: Any) -> list[tuple[int, bytes]]:
        rows = await self.db.run(
            "read output", lambda: self.db.pool.fetch(sql, *params)
        )
        return [(row["at"], bytes(row["data"])) for row in rows]

    async def read(
        self, kind: str, record: str, start: int, count: int
    ) -> list[tuple[int, bytes]]:
        return await self._read(
            "SELECT at, data FROM outputs WHERE kind = $1 AND record = $2 "
            "AND at >= $3 ORDER BY at LIMIT $4",
            kind,
            record,
            start,
            count,
        )

    async def last(self, kind: str, record: str, size: int) -> list[tuple[int, bytes]]:
        return await self._read(
            "SELECT at, data FROM outputs WHERE kind = $1 AND record = $2 AND at >= "
            "COALESCE((SELECT at FROM (SELECT at, SUM(octet_length(data)) OVER "
            "(ORDER BY at DESC) AS held FROM outputs WHERE kind = $1 AND "
            "record = $2) AS newest WHERE held >= $3 ORDER BY at DESC LIMIT 1), 0) "
            "ORDER BY at",
            kind,
            record,
            size,
        )

    async def trim(self, kind: str, record: str, keep: int) -> None:
        await self.db.run(
            "trim output",
            lambda: self.db.pool.execute(
                "DELETE FROM outputs WHERE kind = $1 AND record = $2 AND at <= ("
                "SELECT at FROM (SELECT at, SUM(octet_length(data)) OVER "
                "(ORDER BY at DESC) AS held, ROW_NUMBER() OVER (ORDER BY at DESC) "
                "AS n FROM outputs WHERE kind = $1 AND record = $2) AS newest "
                "WHERE held > $3 AND n > 1 ORDER BY at DESC LIMIT 1)",
                kind,
                record,
                keep,
            ),
        )

    async def remove(self, kind: str, record: str) -> None:
        await self.db.run(
            "remove output",
            lambda: self.db.pool.execute(
                "DELETE FROM outputs WHERE kind = $1 AND record = $2", kind, record
            ),
        )

"""What the state layer offers the rest of the server: a ``Database`` with
one repository per table, behind small asynchronous interfaces. Every
backend implements these (``deepaas.state.sqlite`` the embedded default);
nothing above this package builds a query.

A repository method that fails raises ``exceptions.StoreError``.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
from collections.abc import Callable

from deepaas.state.records import Record


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of a record's stream: its number within the record, name,
    data (text; JSON for all but log lines) and whether it is the last."""

    seq: int
    name: str
    data: str
    final: bool = False


# Told of events another server kept: kind, record, and the numbers of the
# first and last of them
EventsKept = Callable[[str, str, int, int], None]
# Told that another server asks this one to cancel a record: kind, record
CancelAsked = Callable[[str, str], None]


@dataclasses.dataclass
class Delivery:
    """One webhook call to make (or to make again)."""

    id: str
    url: str
    type: str
    body: str
    attempts: int
    due: float  # time.time() from which it may be tried
    kind: str
    record: str


@dataclasses.dataclass(frozen=True)
class StoredHook:
    """A webhook a record asked for, as kept."""

    kind: str
    record: str
    model: str
    url: str
    events: tuple[str, ...]


# The limits Records.add_if_room tells were reached
ALL = "all"
OF_USER = "of user"


class Records(abc.ABC):
    """The records of trainings and jobs."""

    @abc.abstractmethod
    async def add(self, record: Record) -> None:
        """Keep a new record."""

    @abc.abstractmethod
    async def add_if_room(
        self, record: Record, max_running: int, max_of_user: int
    ) -> str | None:
        """Keep a new record unless ``max_running`` records of its kind are
        running already, or ``max_of_user`` of its ``started_by`` (0: no
        limit): checked and kept in one step, whatever other servers start
        meanwhile. None when kept; else the limit reached, ``ALL`` or
        ``OF_USER``."""

    @abc.abstractmethod
    async def update(self, record: Record) -> bool:
        """Save how a kept record stands now (status, dates, message, result,
        progress), unless it has ended already (another server may have
        ended it as interrupted): whether it was saved."""

    @abc.abstractmethod
    async def get(self, kind: str, model: str, record_id: str) -> Record | None:
        """The record, or None if there is none."""

    @abc.abstractmethod
    async def find(
        self,
        kind: str,
        model: str,
        started_by: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """A model's records of ``kind`` (of ``started_by`` only, when
        given), oldest first (by date, then id): at most ``limit``, from the
        one after record ``after``."""

    @abc.abstractmethod
    async def remove(self, kind: str, model: str, record_id: str) -> None:
        """Forget a record (no error if there is none)."""

    @abc.abstractmethod
    async def finished_before(
        self, kind: str, cutoff: datetime.datetime
    ) -> list[tuple[str, str]]:
        """(model, id) of each record of ``kind`` that ended before ``cutoff``."""

    @abc.abstractmethod
    async def interrupt(
        self,
        kind: str,
        status: str,
        message: str,
        is_gone: Callable[[str | None], bool],
    ) -> list[Record]:
        """End with ``status`` and ``message`` every running record of
        ``kind`` whose owner ``is_gone``; those records, as they are now."""

    @abc.abstractmethod
    async def counts(self, kind: str) -> dict[tuple[str, str], int]:
        """How many records of ``kind`` there are, by (model, status)."""


class IdempotencyKeys(abc.ABC):
    """Which record an ``Idempotency-Key`` of a user started."""

    @abc.abstractmethod
    async def claim(
        self, model: str, started_by: str | None, key: str, record_id: str
    ) -> str | None:
        """Take ``key`` for ``record_id``; the id of the record that already
        holds it instead, if one does (then nothing changes)."""

    @abc.abstractmethod
    async def release(self, record_id: str) -> None:
        """Forget the key a record holds, if any."""


class Events(abc.ABC):
    """The kept events of every record."""

    @abc.abstractmethod
    async def add(self, kind: str, record: str, event: Event) -> None: ...

    @abc.abstractmethod
    async def add_all(self, events: list[tuple[str, str, Event]]) -> None:
        """Keep several events, each with its (kind, record), at once."""

    @abc.abstractmethod
    async def after(
        self, kind: str, record: str, seq: int, limit: int | None = None
    ) -> list[Event]:
        """A record's events after number ``seq``, oldest first (the first
        ``limit`` of them, when given)."""

    @abc.abstractmethod
    async def last_seq(self, kind: str, record: str) -> int:
        """The number of a record's last event (0 if none)."""

    @abc.abstractmethod
    async def remove(self, kind: str, record: str) -> None: ...

    @abc.abstractmethod
    async def prune(self, kind: str, record: str, up_to: int) -> None:
        """Forget a record's events numbered ``up_to`` and below."""

    @abc.abstractmethod
    async def prune_to_bytes(self, kind: str, record: str, keep: int) -> None:
        """Forget a record's oldest events until the rest hold at most
        ``keep`` bytes of data."""


class Webhooks(abc.ABC):
    """The webhooks records asked for, and the deliveries not made yet."""

    @abc.abstractmethod
    async def add_hook(self, hook: StoredHook) -> None: ...

    @abc.abstractmethod
    async def hooks(self) -> list[StoredHook]: ...

    @abc.abstractmethod
    async def remove_hook(self, kind: str, record: str) -> None: ...

    @abc.abstractmethod
    async def fire(self, kind: str, record: str, delivery: Delivery | None) -> bool:
        """Forget a record's webhook and keep ``delivery`` (its last, if
        any) in its place, in one step, if the webhook is kept still:
        whether it was. Of servers ending the same record, one fires it."""

    @abc.abstractmethod
    async def add_delivery(self, delivery: Delivery) -> None:
        """Keep a delivery (in place of the one with its id, if any)."""

    @abc.abstractmethod
    async def add_progress(self, delivery: Delivery) -> None:
        """Keep a progress delivery, in place of a progress delivery of its
        record not tried yet (a receiver gets the latest, not every one)."""

    @abc.abstractmethod
    async def due(self, now: float, limit: int) -> list[Delivery]:
        """The deliveries due by ``now``, earliest first."""

    @abc.abstractmethod
    async def claim(self, now: float, limit: int, hold: float) -> list[Delivery]:
        """The deliveries due by ``now``, earliest first (at most ``limit``),
        each made due again only ``hold`` seconds later: another server
        sharing the database leaves them alone meanwhile, and one this
        server never made (it stopped) is tried again after that."""

    @abc.abstractmethod
    async def next_due(self) -> float | None: ...

    @abc.abstractmethod
    async def remove_delivery(self, delivery_id: str) -> None: ...

    @abc.abstractmethod
    async def count(self) -> int: ...


class Outputs(abc.ABC):
    """The bytes records leave (a job's result, a training's log) kept in
    the database, where every server sharing it reads them: in chunks, each
    at its offset in the whole."""

    @abc.abstractmethod
    async def add(self, kind: str, record: str, at: int, data: bytes) -> None:
        """Keep the chunk ``data`` of a record's output, at offset ``at``."""

    @abc.abstractmethod
    async def read(
        self, kind: str, record: str, start: int, count: int
    ) -> list[tuple[int, bytes]]:
        """(offset, bytes) of a record's first ``count`` chunks from offset
        ``start`` on, in order."""

    @abc.abstractmethod
    async def last(self, kind: str, record: str, size: int) -> list[tuple[int, bytes]]:
        """(offset, bytes) of a record's last chunks, in order: as many as
        hold ``size`` bytes (and one more, in which they begin)."""

    @abc.abstractmethod
    async def trim(self, kind: str, record: str, keep: int) -> None:
        """Forget a record's oldest chunks until the rest hold at most
        ``keep`` bytes (its newest chunk is kept, however large)."""

    @abc.abstractmethod
    async def remove(self, kind: str, record: str) -> None: ...


class Database(abc.ABC):
    """The server's state: its repositories, and who this process is to
    them (``owner``, written on the records it runs)."""

    records: Records
    keys: IdempotencyKeys
    events: Events
    webhooks: Webhooks
    outputs: Outputs
    owner: str
    where: str  # what to name it in messages
    # Whether other servers change it too: then what this server wrote may
    # have changed since, and none of it is answered from memory.
    shared: bool = False
    # With other servers: seconds within which a server that is gone (its
    # lease lapsed) is noticed, and its running records may be ended.
    lease: float | None = None

    async def open(self) -> None:  # noqa: B027 - most open at once
        """Connect, and create or migrate the schema (before any other use)."""

    def listen(  # noqa: B027 - alone on a database, there is nothing to hear
        self, kept: EventsKept, cancel: CancelAsked, caught_up: Callable[[], None]
    ) -> None:
        """From ``open()`` on, be told what other servers sharing the
        database do: the events they keep (``kept``, as they are), and the
        records of this server they are asked to cancel (``cancel``).
        ``caught_up`` is told after a break in the telling (a lost
        connection), once it is heard again: what was missed is kept."""

    async def ask_to_cancel(  # noqa: B027 - alone, every record runs here
        self, owner: str, kind: str, record: str
    ) -> None:
        """Tell the server ``owner`` (sharing the database) to cancel a
        record it runs."""

    @abc.abstractmethod
    def owner_is_gone(self, owner: str | None) -> bool:
        """Whether the process that ran a record no longer runs."""

    @abc.abstractmethod
    async def close(self) -> None: ...


__all__ = [
    "ALL",
    "OF_USER",
    "CancelAsked",
    "Database",
    "Delivery",
    "EventsKept",
    "Event",
    "Events",
    "IdempotencyKeys",
    "Outputs",
    "Records",
    "StoredHook",
    "Webhooks",
]

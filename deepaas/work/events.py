"""What trainings and jobs go through, as numbered events for their streams.

The runners publish each status change, progress report, batch of new log
lines and the final record of a training or job here. Every event gets the
next number of its record and is kept in the state database, so that a
client reconnecting with ``Last-Event-ID`` gets what it missed, even after a
restart; and it is handed to the live subscribers of its record through
in-memory queues, so that any number of them costs the worker nothing.
Events are written in the order they are published, without the publisher
waiting (``InOrder``); a reader of kept events waits for those written,
unless the last events of the record are still in memory (``Tail``): those
of the records this server has published lately are, so that a client
following a record it has just started reads no database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from deepaas import exceptions
from deepaas.state.repositories import Event, Events
from deepaas.work.ordered import InOrder

LOG = logging.getLogger(__name__)

SUBSCRIBER_BACKLOG = 1000  # events a subscriber may lag behind before it is cut
# The most events kept per record: a chatty training's log does not fill the
# database (a client further behind resumes from the oldest kept).
EVENTS_KEPT = 10_000
PRUNE_EVERY = 1_000
# And the most bytes of them kept per record (a training writing long lines
# would otherwise keep gigabytes), checked every PRUNE_BYTES published.
EVENT_BYTES_KEPT = 32 << 20
PRUNE_BYTES = 1 << 20
# The last events of the records published lately, kept in memory too: at
# most this many events and bytes of a record, bytes of all, and records.
TAIL_EVENTS = 256
TAIL_BYTES = 256 << 10
TAILS_BYTES = 8 << 20
TAILS = 1024
# Events of another server's record read at a time for subscribers here
EVENTS_READ = 500
LAST = 1 << 62  # more than any record's events


class Lagging(Exception):
    """A subscriber fell too far behind; it may reconnect and catch up."""


class Subscription:
    """Live events of one record, as they are published."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)

    def put(self, event: Event) -> bool:
        """Hand over ``event``; False when the subscriber lags too far."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def cut(self) -> None:
        """Tell the subscriber it has been dropped for lagging."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def next(self) -> Event:
        event = await self.queue.get()
        if event is None:
            raise Lagging()
        return event

    def pending(self) -> list[Event]:
        """The events already handed over and not taken yet."""
        events = []
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if event is not None:
                events.append(event)
        return events


class Tail:
    """The last events of one record, in order, with no gap: every event
    published for it from number ``first`` on."""

    def __init__(self) -> None:
        self.events: collections.deque[Event] = collections.deque()
        self.first = 1  # the number of the oldest event held (or the next)
        self.size = 0  # bytes of the events' data

    def add(self, event: Event) -> int:
        """Hold ``event`` (the next of the record), dropping the oldest beyond
        the limits; the change in bytes held."""
        before = self.size
        self.events.append(event)
        self.size += len(event.data)
        while self.events and (
            len(self.events) > TAIL_EVENTS or self.size > TAIL_BYTES
        ):
            dropped = self.events.popleft()
            self.size -= len(dropped.data)
            self.first = dropped.seq + 1
        return self.size - before

    def after(self, seq: int, limit: int | None) -> list[Event] | None:
        """The events after number ``seq``; None when some are no longer
        held."""
        if seq + 1 < self.first:
            return None
        found = [event for event in self.events if event.seq > seq]
        return found if limit is None else found[:limit]


class EventJournal:
    """Numbers, keeps and hands out the events of every training and job."""

    def __init__(self, store: Events) -> None:
        self.store = store
        self._last: dict[tuple[str, str], int] = {}
        self._subscribers: dict[tuple[str, str], set[Subscription]] = {}
        self._unpruned: dict[tuple[str, str], int] = {}  # bytes since a prune
        self._writes = InOrder()
        self._unkept: list[tuple[str, str, Event, bool]] = []  # to write next
        # the last events of the records published lately, least lately first
        self._tails: collections.OrderedDict[tuple[str, str], Tail] = (
            collections.OrderedDict()
        )
        self._tails_size = 0
        # the records of other servers whose events are read for subscribers
        # here: [number of the last handed out, of the last kept]
        self._feeds: dict[tuple[str, str], list[int]] = {}
        self._feeding: dict[tuple[str, str], asyncio.Task[None]] = {}
        # told of every event as it is published (webhooks)
        self.listeners: list[Callable[[str, str, Event], None]] = []

    def publish(
        self,
        kind: str,
        record: str,
        name: str,
        data: dict[str, Any] | str,
        *,
        final: bool = False,
    ) -> Event:
        """Number and hand out an event of a record this server runs (its
        first is number 1), and have it kept."""
        key = (kind, record)
        text = data if isinstance(data, str) else json.dumps(data)
        event = Event(self._last.get(key, 0) + 1, name, text, final)
        if final:
            self._last.pop(key, None)
        else:
            self._last[key] = event.seq
        unpruned = self._unpruned.get(key, 0) + len(text.encode())
        self._unpruned[key] = unpruned
        prune_bytes = unpruned >= PRUNE_BYTES
        if prune_bytes:
            self._unpruned[key] = 0
        if final:
            self._unpruned.pop(key, None)
        self._hold(key, event)
        # Kept with the events published until the write before is made:
        # one write for a burst of them.
        self._unkept.append((kind, record, event, prune_bytes))
        if len(self._unkept) == 1:
            self._writes.add(self._keep(), "Events")
        for listener in self.listeners:
            try:
                listener(kind, record, event)
            except Exception:  # noqa: BLE001 - a listener must not stop the rest
                LOG.exception("An event listener failed")
        self._hand_out(key, event)
        return event

    async def number_after_kept(self, kind: str, record: str) -> None:
        """Number the next events of a record another server ran (and
        ended, or stopped) after those it kept."""
        await self._writes.flushed()
        kept = await self.store.last_seq(kind, record)
        self._last[(kind, record)] = max(self._last.get((kind, record), 0), kept)

    def _hand_out(self, key: tuple[str, str], event: Event) -> None:
        """Give ``event`` to the live subscribers of its record."""
        for subscription in list(self._subscribers.get(key, ())):
            if not subscription.put(event):
                subscription.cut()
                self._subscribers[key].discard(subscription)

    def heard(self, kind: str, record: str, first: int, last: int) -> None:
        """Another server sharing the database kept events ``first`` to
        ``last`` of a record it runs: they are read and handed to this
        server's subscribers of the record, if it has any."""
        key = (kind, record)
        if key not in self._subscribers:
            return
        feed = self._feeds.setdefault(key, [first - 1, last])
        feed[1] = max(feed[1], last)
        if key not in self._feeding:
            self._feeding[key] = asyncio.get_running_loop().create_task(
                self._feed(key), name=f"events-of-{record}"
            )

    def caught_up(self) -> None:
        """Told again of the other servers' events after a break: what each
        subscriber's record kept meanwhile is read."""
        for kind, record in list(self._subscribers):
            self._feeds.setdefault((kind, record), [-1, 0])
            self.heard(kind, record, 0, LAST)

    async def _feed(self, key: tuple[str, str]) -> None:
        """Read the events of a record of another server, up to the last
        one told of, and hand them out."""
        try:
            while key in self._subscribers:
                feed = self._feeds[key]
                if feed[0] < 0:  # from the last kept (a gap is read by its reader)
                    feed[0] = max(0, await self.store.last_seq(*key) - 1)
                if feed[0] >= feed[1]:
                    break
                events = await self.store.after(*key, feed[0], EVENTS_READ)
                if not events:
                    break
                for event in events:
                    self._hand_out(key, event)
                feed[0] = events[-1].seq
        except exceptions.StoreError as exc:
            LOG.error("Events of %s %s cannot be read: %s", key[0], key[1], exc.message)
        finally:
            del self._feeding[key]
            if key not in self._subscribers:
                self._feeds.pop(key, None)

    def _hold(self, key: tuple[str, str], event: Event) -> None:
        """Keep ``event`` in memory too, when its record's events are: those
        of records whose first event was published here."""
        tail = self._tails.get(key)
        if tail is not None and event.seq != tail.first + len(tail.events):
            self._drop_tail(key)  # not the next of those held: hold none
            tail = None
        if tail is None:
            if event.seq != 1:
                return
            tail = self._tails[key] = Tail()
        else:
            self._tails.move_to_end(key)
        self._tails_size += tail.add(event)
        while self._tails and (
            len(self._tails) > TAILS or self._tails_size > TAILS_BYTES
        ):
            _, dropped = self._tails.popitem(last=False)
            self._tails_size -= dropped.size

    def _drop_tail(self, key: tuple[str, str]) -> None:
        tail = self._tails.pop(key, None)
        if tail is not None:
            self._tails_size -= tail.size

    async def _keep(self) -> None:
        unkept, self._unkept = self._unkept, []
        await self.store.add_all([(kind, record, e) for kind, record, e, _ in unkept])
        for kind, record, event, prune_bytes in unkept:
            if event.seq % PRUNE_EVERY == 0:
                await self.store.prune(kind, record, event.seq - EVENTS_KEPT)
            if prune_bytes:
                await self.store.prune_to_bytes(kind, record, EVENT_BYTES_KEPT)

    @contextlib.contextmanager
    def subscribe(self, kind: str, record: str) -> Iterator[Subscription]:
        """Live events of a record while the block runs."""
        subscription = Subscription()
        key = (kind, record)
        self._subscribers.setdefault(key, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[key]
                    if key not in self._feeding:
                        self._feeds.pop(key, None)

    async def after(
        self, kind: str, record: str, seq: int, limit: int | None = None
    ) -> list[Event]:
        """The kept events of a record after number ``seq`` (the first
        ``limit`` of them, when given): from memory when they are all there,
        else once those published are written."""
        tail = self._tails.get((kind, record))
        if tail is not None:
            held = tail.after(seq, limit)
            if held is not None:
                return held
        await self._writes.flushed()
        return await self.store.after(kind, record, seq, limit)

    async def forget(self, kind: str, record: str) -> None:
        """Remove a record's events (with the record)."""
        self._last.pop((kind, record), None)
        self._unpruned.pop((kind, record), None)
        self._drop_tail((kind, record))
        await self._writes.flushed()
        await self.store.remove(kind, record)

    async def flushed(self) -> None:
        """Return once every event published so far is kept (or failed)."""
        await self._writes.flushed()

    @property
    def held(self) -> int:
        """Bytes of events held in memory (at most ``TAILS_BYTES``)."""
        return self._tails_size

    def subscribers(self, kind: str, record: str) -> int:
        return len(self._subscribers.get((kind, record), ()))

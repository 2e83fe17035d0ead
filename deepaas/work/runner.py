"""One runner for every kind of background work.

A training and an asynchronous prediction are the same thing seen twice: a
record (``deepaas.state.Record``) kept in the state database, a task that
runs the model's call in the background, a stream of events, webhooks, a
quota, a retention period, and what a restart leaves behind. ``Runner``
does all of that once; a ``Kind`` says what differs (its files, how its
records look over HTTP, what an interruption is called, whether a DELETE
forgets a running record or keeps it as cancelled).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import itertools
import json
import logging
from collections.abc import (
    Callable,
)
from typing import Any, Generic, TypeVar

from deepaas import exceptions
from deepaas.model.v2.encoding import jsonable
from deepaas.state.records import (
    CANCELLED,
    DONE,
    ERROR,
    RUNNING,
    Record,
    new_id,
    now,
)
from deepaas.state.repositories import ALL, OF_USER, Database
from deepaas.tracing import Tracing, lifetime
from deepaas.work.events import EventJournal
from deepaas.work.kind import Kind, Work, once, written

LOG = logging.getLogger(__name__)

SAVE_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0)  # then every 30 s
# The records that ended last here, answered from memory (an ended record
# changes no more; it is only removed, which goes through its runner).
ENDED_KEPT = 128
# Seconds a server sharing the database waits for another to cancel a
# record it runs, before recording it as cancelled itself
CANCEL_WAIT = 10.0
# Seconds a key's holder may take to be written before the key is taken
# as left over (by a record never written, or removed)
KEY_HOLDER_WAIT = 2.0

K = TypeVar("K", bound=Kind)


class Runner(Generic[K]):
    """Runs the records of one ``Kind`` in the background and keeps them."""

    def __init__(
        self,
        kind: K,
        database: Database,
        events: EventJournal | None = None,
        base: str = "",
        *,
        max_running: int = 0,
        max_per_user: int = 0,
        max_args_bytes: int = 0,
        tracing: Tracing | None = None,
    ) -> None:
        """The limits (0 for none): records running at once, all of them
        and of one user, and bytes of a record's arguments as kept; with
        ``tracing``, each record's life is a span."""
        self.tracing = tracing
        self.kind = kind
        self.database = database
        self.records = database.records
        self.events = events
        self.base = base
        self.max_running = max_running
        self.max_per_user = max_per_user
        self.max_args_bytes = max_args_bytes
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, Record] = {}
        # Ended records whose final state the database refused (a full
        # disk): answered from here, and written again until it takes them.
        self._unsaved: dict[str, Record] = {}
        self._ended: collections.OrderedDict[str, Record] = collections.OrderedDict()
        self._saving: asyncio.Task[None] | None = None
        self.store_error: str | None = None  # why the last write failed
        self._stopping = False

    async def recover(self) -> int:
        """At start: end the records a previous server left running (its
        process is gone) as interrupted; how many."""
        stale = await self.records.interrupt(
            self.kind.name,
            self.kind.interrupted_status,
            self.kind.interrupted_by_restart,
            self.database.owner_is_gone,
        )
        for record in stale:
            self.kind.interrupted(record)
            if self.database.shared:
                # Another server may follow it: its stream ends.
                await self._publish_end_elsewhere(record)
        if stale:
            LOG.warning(
                "%d %s(s) were running on a server that stopped; recorded "
                "as interrupted.",
                len(stale),
                self.kind.noun,
            )
        return len(stale)

    async def start(
        self,
        model: str,
        args: dict[str, Any],
        work: Work,
        *,
        started_by: str | None = None,
        key: str | None = None,
        cleanup: Callable[[], None] = lambda: None,
    ) -> tuple[Record, bool]:
        """Record new work of ``started_by`` and run ``work`` in the
        background; ``cleanup`` once it has ended, however it ended (at once
        when it cannot start). With an ``Idempotency-Key`` that user has
        used: the record it started, and False (nothing runs)."""
        cleanup = once(cleanup)
        try:
            record = Record(
                kind=self.kind.name,
                model=model,
                args=jsonable(args),
                id=new_id(),
                owner=self.database.owner,
                started_by=started_by,
            )
            if key is not None:
                existing = await self._claim(record, key)
                if existing is not None:
                    cleanup()
                    return existing, False
            try:
                self.check_room(started_by)
                self._check_size(record.args)
                await self._begin(record, work, cleanup)
            except BaseException:
                if key is not None:
                    await self.database.keys.release(record.id)
                raise
        except BaseException:
            cleanup()
            raise
        return record, True

    async def _begin(
        self, record: Record, work: Work, cleanup: Callable[[], None]
    ) -> None:
        """Write the new record and run its work: the work begins while the
        record is written (a worker's wake-up overlaps the database's) and
        is ended, and saved, only once the record is. Raises why the record
        could not be written (the work is then stopped, and nothing kept)."""
        loop = asyncio.get_running_loop()
        adding: asyncio.Future[None]
        if self.database.shared and (
            self.max_running or (self.max_per_user and record.started_by)
        ):
            # The limits hold for every server together: checked where the
            # record is written, before its work begins.
            refused = await self.records.add_if_room(
                record,
                self.max_running,
                self.max_per_user if record.started_by is not None else 0,
            )
            if refused is not None:
                raise self.kind.too_many(
                    self.max_running if refused == ALL else self.max_per_user,
                    of_user=refused == OF_USER,
                )
            adding = loop.create_future()
            adding.set_result(None)
        else:
            adding = loop.create_task(self.records.add(record))
        self._live[record.id] = record
        self._publish(record, "status", {"status": RUNNING})
        task = loop.create_task(
            self._run(record, work, cleanup, adding),
            name=f"{self.kind.name}-{record.id}",
        )
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._forget_task(record.id))
        try:
            await asyncio.shield(adding)
        except BaseException:
            task.cancel()  # it ends the record if it was written after all
            await asyncio.gather(task, return_exceptions=True)
            if self.events is not None and not await written(adding):
                await self.events.forget(self.kind.name, record.id)
            raise

    async def _claim(self, record: Record, key: str) -> Record | None:
        """The record that holds ``key`` already (its arguments must be
        the same: ``IdempotencyKeyReused``), or None when it is ours now."""
        keys = self.database.keys
        for _ in range(2):
            holder = await keys.claim(record.model, record.started_by, key, record.id)
            if holder is None:
                return None
            existing = await self._holding(record.model, holder)
            if existing is not None:
                if existing.args != record.args:
                    raise exceptions.IdempotencyKeyReused(key)
                return existing
            await keys.release(holder)  # its record is gone: the key is free
        raise exceptions.IdempotencyKeyReused(key)

    async def _holding(self, model: str, holder: str) -> Record | None:
        """The record ``holder`` that holds a key; None once it is clear
        there is none (a record claims its key before it is written: one
        being written, here or by another server, is waited for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEY_HOLDER_WAIT
        delay = 0.005
        while True:
            existing = self._live.get(holder) or await self.records.get(
                self.kind.name, model, holder
            )
            if existing is not None or loop.time() >= deadline:
                return existing
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def check_room(self, started_by: str | None = None) -> None:
        """Raise the kind's ``too_many`` when no other record (of
        ``started_by``) may start."""
        if self.max_running and len(self._tasks) >= self.max_running:
            raise self.kind.too_many(self.max_running, of_user=False)
        if self.max_per_user and started_by is not None:
            running = sum(1 for r in self._live.values() if r.started_by == started_by)
            if running >= self.max_per_user:
                raise self.kind.too_many(self.max_per_user, of_user=True)

    def _check_size(self, recorded: dict[str, Any]) -> None:
        if not self.max_args_bytes:
            return
        size = len(json.dumps(recorded).encode())
        if size > self.max_args_bytes:
            raise exceptions.JobArgumentsTooLarge(size, self.max_args_bytes)

    def _forget_task(self, record_id: str) -> None:
        self._tasks.pop(record_id, None)
        record = self._live.pop(record_id, None)
        if record is not None and not record.running and not self.database.shared:
            self._ended[record_id] = record
            if len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)

    async def _run(
        self,
        record: Record,
        work: Work,
        cleanup: Callable[[], None],
        adding: asyncio.Future[None],
    ) -> None:
        attributes = {"deepaas.model": record.model, "deepaas.record.id": record.id}
        with lifetime(self.tracing, self.kind.name, attributes) as span:
            await self._run_work(record, work, cleanup, adding)
            if span is not None:
                span.set_attribute("deepaas.status", record.status)

    async def _run_work(
        self,
        record: Record,
        work: Work,
        cleanup: Callable[[], None],
        adding: asyncio.Future[None],
    ) -> None:
        try:
            try:
                async with self.kind.running(record, self.events):
                    result = await work(
                        record,
                        lambda fraction, message: self._progress(
                            record, fraction, message
                        ),
                    )
            except asyncio.CancelledError:
                if await written(adding):
                    if self._stopping:
                        message = self.kind.interrupted_by_shutdown
                        await self._finish(
                            record, self.kind.interrupted_status, message
                        )
                    else:
                        await self._finish(record, CANCELLED)
                raise
            except exceptions.DeepaasError as exc:
                if await written(adding):
                    await self._finish(
                        record, ERROR, exc.message, error_status=exc.status
                    )
            except Exception as exc:  # never leave a record "running"
                LOG.exception("%s %s failed unexpectedly", self.kind.noun, record.id)
                if await written(adding):
                    message = f"{type(exc).__name__}: {exc}"
                    await self._finish(record, ERROR, message, error_status=500)
            else:
                if await written(adding):
                    await self._finish(record, DONE, result=result)
        finally:
            cleanup()

    def _publish(
        self, record: Record, name: str, data: dict[str, Any] | str, **how: bool
    ) -> None:
        if self.events is not None:
            self.events.publish(self.kind.name, record.id, name, data, **how)

    def _progress(
        self, record: Record, fraction: float | None, message: str | None
    ) -> None:
        record.report(fraction, message)
        self._publish(
            record,
            "progress",
            {"progress": record.progress, "message": record.progress_message},
        )

    async def _finish(
        self,
        record: Record,
        status: str,
        message: str | None = None,
        *,
        result: Any = None,
        error_status: int | None = None,
    ) -> None:
        record.status = status
        record.message = message or None
        record.result = result
        record.error_status = error_status
        record.finish_date = now()
        what = f"{self.kind.noun.capitalize()} {record.id} of {record.model!r}"
        if status == ERROR:
            LOG.error("%s failed: %s", what, message)
        else:
            LOG.info("%s %s", what, status)
        # Alone on its database, this server's word on how a record ended is
        # the last: it is told at once and saved meanwhile (answered from
        # memory until it is). Sharing it, another server may have ended the
        # record first: what the database holds is told, once saved.
        if not self.database.shared:
            self._publish_end(record)
        try:
            saved = await asyncio.shield(self.records.update(record))
        except exceptions.StoreError as exc:
            self._keep_unsaved(record, exc.message)
        else:
            if not saved:
                await self._ended_elsewhere(record)
        if self.database.shared:
            self._publish_end(record)

    async def _publish_end_elsewhere(self, record: Record) -> None:
        """Publish the end of a record another server ran."""
        if self.events is not None:
            await self.events.number_after_kept(self.kind.name, record.id)
            self._publish_end(record)

    def _publish_end(self, record: Record) -> None:
        self._publish(record, "status", {"status": record.status})
        self._publish(record, "result", self.kind.view(record, self.base), final=True)

    async def _ended_elsewhere(self, record: Record) -> None:
        """The database holds ``record`` as ended already: another server
        ended it (this one's lease lapsed while it ran). It stays as kept."""
        kept = await self.records.get(record.kind, record.model, record.id)
        if kept is None:
            return
        LOG.warning(
            "%s %s of %r was ended as %s by another server while it ran here; "
            "it stays so",
            self.kind.noun,
            record.id,
            record.model,
            kept.status,
        )
        for field in ("status", "message", "result", "error_status", "finish_date"):
            setattr(record, field, getattr(kept, field))

    def _keep_unsaved(self, record: Record, why: str) -> None:
        """Answer ``record`` from memory and keep trying to save it."""
        LOG.error(
            "Cannot record how %s %s ended (%s); keeping it in memory and retrying: %s",
            self.kind.noun,
            record.id,
            record.status,
            why,
        )
        self.store_error = why
        self._unsaved[record.id] = record
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save_unsaved())

    async def _save_unsaved(self) -> None:
        """Write the unsaved records again, with back-off, until all are."""
        delays = itertools.chain(SAVE_RETRY_DELAYS, itertools.repeat(30.0))
        while self._unsaved and not self._stopping:
            await asyncio.sleep(next(delays))
            await self._try_saving()

    async def _try_saving(self) -> None:
        for record_id, record in list(self._unsaved.items()):
            try:
                await self.records.update(record)
            except exceptions.StoreError as exc:
                self.store_error = exc.message
                return
            del self._unsaved[record_id]
            LOG.info("%s %s is recorded after all", self.kind.noun, record_id)
        self.store_error = None

    @property
    def unsaved(self) -> int:
        """How many ended records the database has not taken yet."""
        return len(self._unsaved)

    def _current(self, record: Record) -> Record:
        """A record as it is now: a running one as it runs here."""
        return self._live.get(record.id) or self._unsaved.get(record.id) or record

    async def get(
        self, model: str, record_id: str, started_by: str | None = None
    ) -> Record:
        """The record (if ``started_by``'s, when given); the kind's
        ``not_found`` otherwise (for another user's too: its existence is
        not theirs to know)."""
        record = (
            self._live.get(record_id)
            or self._unsaved.get(record_id)
            or self._ended.get(record_id)
        )
        if record is None or record.model != model:
            record = await self.records.get(self.kind.name, model, record_id)
        if record is None or (
            started_by is not None and record.started_by != started_by
        ):
            raise self.kind.not_found(model, record_id)
        return record

    async def list(
        self,
        model: str,
        started_by: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """A model's records (``started_by``'s only, when given), oldest
        first, running ones as they are now: at most ``limit``, from the one
        after record ``after`` (``not_found`` if there is no such record)."""
        if after is not None:
            await self.get(model, after, started_by)
        found = await self.records.find(
            self.kind.name, model, started_by, after=after, limit=limit
        )
        return [self._current(record) for record in found]

    async def cancel(
        self, model: str, record_id: str, started_by: str | None = None
    ) -> Record:
        """Stop a running record (its worker is replaced): forget it, or
        keep it as cancelled, as its kind says; forget an ended one. Its
        last state."""
        record = await self.get(model, record_id, started_by)
        task = self._tasks.get(record_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not self.kind.forget_cancelled:
                return record
        elif record.running and self.database.shared:
            record = await self._cancel_elsewhere(record)
            if record.status == CANCELLED and not self.kind.forget_cancelled:
                return record
        await self.remove(model, record_id)
        return record

    def cancel_here(self, record_id: str) -> None:
        """Another server was asked to cancel a record running here."""
        task = self._tasks.get(record_id)
        if task is not None:
            LOG.info(
                "%s %s cancelled through another server", self.kind.noun, record_id
            )
            task.cancel()

    async def _cancel_elsewhere(self, record: Record) -> Record:
        """Have the server running ``record`` cancel it (sharing the
        database); the record once it has ended. A server that does not end
        it within ``CANCEL_WAIT`` (gone, its lease not lapsed yet) has it
        ended as cancelled here."""
        loop = asyncio.get_running_loop()
        if not self.database.owner_is_gone(record.owner):
            await self.database.ask_to_cancel(
                record.owner or "", self.kind.name, record.id
            )
            deadline = loop.time() + CANCEL_WAIT
            delay = 0.005
            while loop.time() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
                kept = await self.records.get(self.kind.name, record.model, record.id)
                if kept is None or not kept.running:
                    return kept or record
            LOG.warning(
                "%s %s of %r was not cancelled by the server running it (%s) "
                "within %gs; recorded as cancelled",
                self.kind.noun,
                record.id,
                record.model,
                record.owner,
                CANCEL_WAIT,
            )
        record.status, record.finish_date = CANCELLED, now()
        if await self.records.update(record):
            await self._publish_end_elsewhere(record)
            return record
        kept = await self.records.get(self.kind.name, record.model, record.id)
        return kept or record

    async def remove(self, model: str, record_id: str) -> None:
        """Forget an ended record, its events, key, output and files."""
        self._unsaved.pop(record_id, None)
        self._ended.pop(record_id, None)
        await self.records.remove(self.kind.name, model, record_id)
        await self.database.keys.release(record_id)
        if self.events is not None:
            await self.events.forget(self.kind.name, record_id)
        if self.database.shared:
            await self.database.outputs.remove(self.kind.name, record_id)
        self.kind.remove_files(record_id)

    async def purge(self, retention: float) -> int:
        """Forget the records that ended more than ``retention`` seconds
        ago; how many."""
        cutoff = now() - datetime.timedelta(seconds=retention)
        purged = 0
        for model, record_id in await self.records.finished_before(
            self.kind.name, cutoff
        ):
            if record_id in self._live or record_id in self._unsaved:
                continue
            await self.remove(model, record_id)
            purged += 1
        return purged

    async def keep_for(self, retention: float) -> None:
        """Purge old records now, then every tenth of ``retention`` (at most
        hourly), until cancelled."""
        interval = min(max(retention / 10, 0.5), 3600.0)
        while True:
            try:
                purged = await self.purge(retention)
            except exceptions.StoreError as exc:
                LOG.error(
                    "Old %ss could not be removed: %s", self.kind.noun, exc.message
                )
            else:
                if purged:
                    LOG.info(
                        "Removed %d %s(s) past %s",
                        purged,
                        self.kind.noun,
                        self.kind.retention_option,
                    )
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Interrupt every running record (at shutdown), recording why."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._saving is not None:
            self._saving.cancel()
        await self._try_saving()  # a last chance
        for record in self._unsaved.values():
            LOG.critical(
                "%s %s of %r ended (%s) but could not be recorded: %s",
                self.kind.noun,
                record.id,
                record.model,
                record.status,
                self.kind.view(record, self.base),
            )

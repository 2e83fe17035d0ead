"""Webhooks: a training or an asynchronous prediction calls the client back.

A request may name a ``Webhook-URL`` (on a host ``--webhook-allow`` lets
through) and the ``Webhook-Events`` it wants (``start``, ``progress``,
``completed``; by default ``completed``). Each such event of its record
becomes a delivery: a JSON POST ``{"type", "timestamp", "data"}`` signed with
``--webhook-secret`` as the Standard Webhooks specification says (the
``standardwebhooks`` library signs). Deliveries are kept in the state
database until made, tried again with a doubling wait up to
``--webhook-attempts`` times, and keep their ``webhook-id`` across attempts
so that a receiver can tell a retry from a new event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import fnmatch
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from standardwebhooks.webhooks import Webhook

from deepaas import exceptions

if TYPE_CHECKING:
    from deepaas.events import Event
    from deepaas.store import SQLiteWebhookStore

LOG = logging.getLogger(__name__)

EVENTS = ("start", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
TYPE_PREFIX = {"training": "training", "job": "prediction"}
# (kind, model, record) -> (ended, its JSON object), or None if it is gone
Lookup = Callable[[str, str, str], "tuple[bool, dict[str, Any]] | None"]
SEND_TIMEOUT = 10.0  # seconds a receiver has to answer
MAX_WAIT = 600.0  # the longest wait between two attempts
AT_ONCE = 16  # deliveries made concurrently
MAX_URL = 2048


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
class Hook:
    """What a request asked to be told, and where."""

    url: str
    events: tuple[str, ...]


def hook_from(request_headers: Any, allowed: Sequence[str]) -> Hook | None:
    """The webhook a request asks for (None if none); ``InvalidWebhook``
    when its URL or events cannot be used."""
    url = request_headers.get("Webhook-URL")
    if url is None:
        if "Webhook-Events" in request_headers:
            raise exceptions.InvalidWebhook("Webhook-Events needs a Webhook-URL.")
        return None
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise exceptions.InvalidWebhook(
            f"Webhook-URL must be an http or https URL, not {url[:200]!r}."
        )
    if len(url) > MAX_URL:
        raise exceptions.InvalidWebhook(f"Webhook-URL is longer than {MAX_URL}.")
    if not host_allowed(parts, allowed):
        raise exceptions.InvalidWebhook(
            f"Webhooks to {parts.netloc} are not allowed on this server"
            + (
                " (--webhook-allow names none)."
                if not allowed
                else f" (--webhook-allow: {', '.join(allowed)})."
            )
        )
    names = request_headers.get("Webhook-Events")
    events = (
        tuple(n.strip().lower() for n in names.split(",") if n.strip())
        if names is not None
        else DEFAULT_EVENTS
    )
    unknown = sorted(set(events) - set(EVENTS))
    if unknown or not events:
        raise exceptions.InvalidWebhook(
            f"Webhook-Events takes {', '.join(EVENTS)}, not "
            f"{', '.join(unknown) or 'nothing'}."
        )
    return Hook(url, events)


def host_allowed(parts: urllib.parse.SplitResult, allowed: Sequence[str]) -> bool:
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    names = (host, f"{host}:{port}")
    return any(
        fnmatch.fnmatchcase(name, pattern.strip().lower())
        for pattern in allowed
        if pattern.strip()
        for name in names
    )


class WebhookSender:
    """Turns the events of watched records into deliveries, and makes them."""

    def __init__(
        self, store: SQLiteWebhookStore, *, secret: str = "", attempts: int = 8
    ) -> None:
        self.store = store
        self.attempts = attempts
        try:
            self._signer = Webhook(secret) if secret else None
        except Exception as exc:  # noqa: BLE001 - the library's own errors
            raise exceptions.ConfigurationError(
                f"--webhook-secret is not a Standard Webhooks key (whsec_ and "
                f"base64): {exc}"
            ) from None
        self._hooks: dict[tuple[str, str], Hook] = {}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0

    def watch(
        self,
        kind: str,
        record: str,
        model: str,
        hook: Hook,
        snapshot: dict[str, Any],
    ) -> None:
        """Deliver the events ``hook`` asks for of a record (which has just
        started: ``snapshot`` is what its start delivery carries)."""
        self.store.add_hook(kind, record, model, hook.url, hook.events)
        self._hooks[(kind, record)] = hook
        if "start" in hook.events:
            self._enqueue(kind, record, hook, "start", snapshot)

    def resume(self, lookup: Lookup) -> int:
        """At start: the webhooks kept by an earlier run. A record that has
        ended meanwhile (cut by a crash: interrupted) gets its completed
        delivery now; one still running is watched again; one gone is
        forgotten. How many completed deliveries were made due."""
        due = 0
        for kind, record, model, url, events in self.store.hooks():
            hook = Hook(url, tuple(events))
            found = lookup(kind, model, record)
            if found is not None and not found[0]:
                self._hooks[(kind, record)] = hook
                continue
            if found is not None and "completed" in hook.events:
                self._enqueue(kind, record, hook, "completed", found[1])
                due += 1
            self.store.remove_hook(kind, record)
        return due

    def on_event(self, kind: str, record: str, event: Event) -> None:
        """An event was published (``EventJournal`` listener)."""
        hook = self._hooks.get((kind, record))
        if hook is None:
            return
        if event.name == "progress" and "progress" in hook.events:
            self._enqueue(
                kind, record, hook, "progress", {"id": record, **json.loads(event.data)}
            )
        elif event.final:
            del self._hooks[(kind, record)]
            if "completed" in hook.events:
                self._enqueue(kind, record, hook, "completed", json.loads(event.data))
            try:
                self.store.remove_hook(kind, record)
            except exceptions.StoreError as exc:
                LOG.error("%s", exc.message)

    def _enqueue(
        self, kind: str, record: str, hook: Hook, what: str, data: dict[str, Any]
    ) -> None:
        now = time.time()
        type_ = f"{TYPE_PREFIX.get(kind, kind)}.{what}"
        body = json.dumps(
            {
                "type": type_,
                "timestamp": datetime.datetime.fromtimestamp(
                    now, datetime.UTC
                ).isoformat(),
                "data": data,
            }
        )
        try:
            # Progress not sent yet is replaced by newer progress, not queued
            # behind it: a receiver gets the news, not the whole history.
            waiting = self.store.pending_progress(kind, record)
            if what == "progress" and waiting is not None:
                waiting.body = body
                self.store.add_delivery(waiting)
            else:
                delivery_id = f"msg_{uuid.uuid4().hex}"
                self.store.add_delivery(
                    Delivery(delivery_id, hook.url, type_, body, 0, now, kind, record)
                )
        except exceptions.StoreError as exc:
            LOG.error("Webhook %s to %s not kept: %s", type_, hook.url, exc.message)
            return
        self._wake.set()

    async def run(self) -> None:
        """Make due deliveries until cancelled."""
        try:
            while True:
                due = self.store.due(time.time(), AT_ONCE)
                if due:
                    await asyncio.gather(*(self._deliver(d) for d in due))
                    continue
                next_due = self.store.next_due()
                wait = 60.0 if next_due is None else max(0.0, next_due - time.time())
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), min(wait, 60.0))
                except TimeoutError:
                    pass
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    def headers(self, delivery: Delivery) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt."""
        now = datetime.datetime.now(datetime.UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(
                delivery.id, now, delivery.body
            )
        return headers

    async def _deliver(self, delivery: Delivery) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT)
            )
        why = ""
        try:
            async with self._session.post(
                delivery.url,
                data=delivery.body.encode(),
                headers=self.headers(delivery),
                allow_redirects=False,  # no way round --webhook-allow
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    self.store.remove_delivery(delivery.id)
                    self.delivered += 1
                    return
                why = f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        delivery.attempts += 1
        if delivery.attempts >= self.attempts:
            LOG.error(
                "Webhook %s %s to %s given up after %d attempts (%s)",
                delivery.type,
                delivery.id,
                delivery.url,
                delivery.attempts,
                why,
            )
            self.store.remove_delivery(delivery.id)
            self.failed += 1
            return
        wait = min(2.0 ** (delivery.attempts - 1), MAX_WAIT)
        LOG.warning(
            "Webhook %s %s to %s failed (%s); attempt %d in %gs",
            delivery.type,
            delivery.id,
            delivery.url,
            why,
            delivery.attempts + 1,
            wait,
        )
        delivery.due = time.time() + wait
        self.store.add_delivery(delivery)

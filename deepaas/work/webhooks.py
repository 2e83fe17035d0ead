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
import collections
import dataclasses
import datetime
import ipaddress
import json
import logging
import socket
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook

from deepaas import exceptions, hostnames
from deepaas.state.repositories import Delivery, Event, StoredHook, Webhooks
from deepaas.tracing import NO_SPAN, TRACEPARENT, Tracing, sampled
from deepaas.work.ordered import InOrder

LOG = logging.getLogger(__name__)

EVENTS = ("start", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
TYPE_PREFIX = {"training": "training", "job": "prediction"}
# (kind, model, record) -> (ended, its JSON object), or None if it is gone
Lookup = Callable[[str, str, str], Awaitable["tuple[bool, dict[str, Any]] | None"]]
SEND_TIMEOUT = 10.0  # seconds a receiver has to answer
MAX_WAIT = 600.0  # the longest wait between two attempts
AT_ONCE = 16  # deliveries made concurrently
MAX_URL = 2048
# How long a server sharing the database holds a delivery it is making:
# one it never finished (it stopped) is made by another after this.
CLAIM_SECONDS = 3 * SEND_TIMEOUT
MAX_TRACES = 10_000  # deliveries whose trace is remembered


@dataclasses.dataclass(frozen=True)
class Hook:
    """What a request asked to be told, and where."""

    url: str
    events: tuple[str, ...]


class Target:
    """One ``--webhook-allow`` entry: host names matched label by label
    (``hooks.example.org``, ``*.example.org``), an address, or a network
    (``10.0.0.0/24``), each with an optional port (``:8080``, or ``:*`` for
    any; without one, 80 and 443 only)."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        any_port = self.text.endswith(":*")
        host, port = hostnames.split_host_port(
            self.text[:-2] if any_port else self.text
        )
        if not host or port == -1 or (any_port and port is not None):
            raise ValueError(f"not a webhook target: {text!r}")
        self.ports: tuple[int, ...] | None = (
            None if any_port else (port,) if port is not None else DEFAULT_PORTS
        )
        self.network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self.name: hostnames.HostPattern | None = None
        try:
            self.network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            self.name = hostnames.HostPattern(host)

    def allows(self, host: str, port: int) -> bool:
        """Whether a URL's ``host`` (lower case) and ``port`` are this one's."""
        if self.ports is not None and port not in self.ports:
            return False
        if self.network is not None:
            address = _address(host)
            return address is not None and address in self.network
        assert self.name is not None
        return self.name.matches(host)

    def names(self, address: IPAddress) -> bool:
        """Whether this entry names ``address``: it, or a network holding it."""
        return self.network is not None and address in self.network


class WebhookPolicy:
    """Where webhooks may go (``--webhook-allow``): checked on a URL when a
    request names it, on every delivery (a stored one may be older than
    the options), and on the addresses its name resolves to when the
    delivery connects, so that a name of an allowed host that resolves to
    a loopback, private, link-local or multicast address (and a name
    changed to do so after the check) is refused unless an entry names
    that address or its network."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.texts = [text.strip() for text in allowed if text.strip()]
        try:
            self.targets = [Target(text) for text in self.texts]
        except ValueError as exc:
            raise exceptions.ConfigurationError(f"--webhook-allow: {exc}") from None

    def why_refused(self, url: str) -> str | None:
        """Why webhooks to ``url`` are refused; None when they may go."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"Webhook-URL must be an http or https URL, not {url[:200]!r}."
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return f"Webhook-URL names no valid port: {url[:200]!r}."
        host = parts.hostname.lower().rstrip(".")
        if not any(target.allows(host, port) for target in self.targets):
            return f"Webhooks to {parts.netloc} are not allowed on this server" + (
                " (--webhook-allow names none)."
                if not self.texts
                else f" (--webhook-allow: {', '.join(self.texts)})."
            )
        address = _address(host)
        if address is not None and not self.may_connect(address):
            return (
                f"Webhooks to {address} ({_kind(address)} address) need an entry "
                "of --webhook-allow naming it or its network."
            )
        return None

    def may_connect(self, address: IPAddress) -> bool:
        """Whether a delivery may connect to ``address``: a public one, or
        one an entry names."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address.is_global and not address.is_multicast:
            return True
        return any(target.names(address) for target in self.targets)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = (80, 443)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _kind(address: IPAddress) -> str:
    for kind in ("unspecified", "loopback", "link-local", "multicast", "private"):
        if getattr(address, f"is_{kind.replace('-', '_')}"):
            return f"a {kind}"
    return "a non-public"


class CheckedResolver(AbstractResolver):
    """Looks names up as aiohttp does, keeping only the addresses a
    ``WebhookPolicy`` lets a delivery connect to: a webhook's host is
    checked where it is connected to, at every delivery."""

    def __init__(self, policy: WebhookPolicy) -> None:
        self.policy = policy
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        kept = [
            result
            for result in found
            if (address := _address(result["host"].split("%")[0])) is not None
            and self.policy.may_connect(address)
        ]
        if not kept:
            refused = ", ".join(sorted({r["host"] for r in found}))
            raise OSError(
                f"{host} resolves to {refused}, which --webhook-allow does not name "
                "(loopback, private, link-local and multicast addresses need an "
                "entry naming them or their network)"
            )
        return kept

    async def close(self) -> None:
        await self._resolver.close()


def hook_from(request_headers: Any, policy: WebhookPolicy) -> Hook | None:
    """The webhook a request asks for (None if none); ``InvalidWebhook``
    when its URL or events cannot be used."""
    url = request_headers.get("Webhook-URL")
    if url is None:
        if "Webhook-Events" in request_headers:
            raise exceptions.InvalidWebhook("Webhook-Events needs a Webhook-URL.")
        return None
    url = url.strip()
    if len(url) > MAX_URL:
        raise exceptions.InvalidWebhook(f"Webhook-URL is longer than {MAX_URL}.")
    if not (url.isascii() and url.isprintable()):
        raise exceptions.InvalidWebhook(
            "Webhook-URL must be printable ASCII (percent-encode the rest)."
        )
    refusal = policy.why_refused(url)
    if refusal is not None:
        raise exceptions.InvalidWebhook(refusal)
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


class WebhookSender:
    """Turns the events of watched records into deliveries, and makes them."""

    def __init__(
        self,
        store: Webhooks,
        *,
        secret: str = "",
        attempts: int = 8,
        policy: WebhookPolicy | None = None,
        shared: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        """``shared``: other servers make the deliveries of ``store`` too
        (each is claimed for ``CLAIM_SECONDS`` by the server making it).
        ``tracing``: the server's, when it traces deliveries."""
        self.tracing = tracing
        # the traceparent of each delivery made here, by id
        self._traces: collections.OrderedDict[str, str | None] = (
            collections.OrderedDict()
        )
        self.store = store
        self.attempts = attempts
        self.hold = CLAIM_SECONDS if shared else 0.0
        self.policy = policy if policy is not None else WebhookPolicy(())
        try:
            self._signer = Webhook(secret) if secret else None
        except Exception as exc:  # noqa: BLE001 - the library's own errors
            raise exceptions.ConfigurationError(
                f"--webhook-secret is not a Standard Webhooks key (whsec_ and "
                f"base64): {exc}"
            ) from None
        self._hooks: dict[tuple[str, str], Hook] = {}
        self._wake = asyncio.Event()
        self._writes = InOrder()
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
        started: ``snapshot`` is what its start delivery carries). Told at
        once, before any event of the record can be missed; kept in the
        database in the background (``flushed``)."""
        self._hooks[(kind, record)] = hook
        self._writes.add(
            self.store.add_hook(StoredHook(kind, record, model, hook.url, hook.events)),
            f"Webhook of {kind} {record}",
        )
        if "start" in hook.events:
            self._enqueue(kind, record, hook, "start", snapshot)

    async def resume(self, lookup: Lookup, *, watch: bool = True) -> int:
        """The webhooks kept in the database: at start, those of an earlier
        run; with other servers, those of a server that is gone too. A
        record that has ended (cut by a crash: interrupted) gets its
        completed delivery now, unless another server gave it already; one
        still running is watched again (with ``watch``: it runs here); one
        gone is forgotten. How many completed deliveries were made due."""
        due = 0
        for stored in await self.store.hooks():
            kind, record = stored.kind, stored.record
            refusal = self.policy.why_refused(stored.url)
            if refusal is not None:  # the options changed since
                LOG.warning("Webhook of %s %s dropped: %s", kind, record, refusal)
                await self.store.remove_hook(kind, record)
                continue
            hook = Hook(stored.url, stored.events)
            found = await lookup(kind, stored.model, record)
            if found is not None and not found[0]:
                if watch:
                    self._hooks[(kind, record)] = hook
                continue
            delivery = None
            if found is not None and "completed" in hook.events:
                delivery = self._delivery(kind, record, hook, "completed", found[1])
            await self._writes.flushed()
            if await self.store.fire(kind, record, delivery) and delivery is not None:
                due += 1
        if due:
            self._wake.set()
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
            delivery = None
            if "completed" in hook.events:
                data = json.loads(event.data)
                delivery = self._delivery(kind, record, hook, "completed", data)
            self._writes.add(
                self._keep(self.store.fire(kind, record, delivery)),
                f"End of webhook of {record}",
            )

    def _delivery(
        self, kind: str, record: str, hook: Hook, what: str, data: dict[str, Any]
    ) -> Delivery:
        """A new delivery telling ``what`` happened to a record, due now."""
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
        delivery = Delivery(
            f"msg_{uuid.uuid4().hex}", hook.url, type_, body, 0, now, kind, record
        )
        if self.tracing is not None:  # made in the record's task: its span's
            self._traces[delivery.id] = self.tracing.traceparent()
            while len(self._traces) > MAX_TRACES:
                self._traces.popitem(last=False)
        return delivery

    def _enqueue(
        self, kind: str, record: str, hook: Hook, what: str, data: dict[str, Any]
    ) -> None:
        delivery = self._delivery(kind, record, hook, what, data)
        # Progress not sent yet is replaced by newer progress, not queued
        # behind it: a receiver gets the news, not the whole history.
        keep = (
            self.store.add_progress if what == "progress" else self.store.add_delivery
        )
        self._writes.add(
            self._keep(keep(delivery)), f"Webhook {delivery.type} to {hook.url}"
        )

    async def _keep(self, write: Awaitable[object]) -> None:
        await write
        self._wake.set()

    async def flushed(self) -> None:
        """Return once every delivery asked for so far is kept."""
        await self._writes.flushed()

    async def run(self) -> None:
        """Make due deliveries until cancelled."""
        try:
            while True:
                try:
                    due = await self.store.claim(time.time(), AT_ONCE, self.hold)
                    next_due = None if due else await self.store.next_due()
                except exceptions.StoreError as exc:
                    LOG.error("Webhooks cannot be read: %s", exc.message)
                    due, next_due = [], time.time() + 5
                if due:
                    await asyncio.gather(*(self._deliver(d) for d in due))
                    continue
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
        refusal = self.policy.why_refused(delivery.url)
        if refusal is not None:  # kept by a run with other options
            LOG.error("Webhook %s %s dropped: %s", delivery.type, delivery.id, refusal)
            await self._forget(delivery)
            self.failed += 1
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT),
                # Every new connection looks the name up again, and keeps
                # only the addresses the policy allows.
                connector=aiohttp.TCPConnector(
                    resolver=CheckedResolver(self.policy), use_dns_cache=False
                ),
            )
        why = await self._attempt(delivery, self._session)
        if not why:
            await self._forget(delivery)
            self.delivered += 1
            return
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
            await self._forget(delivery)
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
        try:
            await self.store.add_delivery(delivery)
        except exceptions.StoreError as exc:
            LOG.error("Webhook %s %s not kept: %s", delivery.type, delivery.id, exc)

    async def _attempt(self, delivery: Delivery, session: aiohttp.ClientSession) -> str:
        """Send ``delivery`` once: why it was not taken, or ``""``. With
        tracing on, the attempt is a span of the trace of the record's
        life (when this server ran it), and its ``traceparent`` goes along."""
        headers = self.headers(delivery)
        tracing = self.tracing
        parent = self._traces.get(delivery.id)
        if parent is not None and not sampled(parent):
            tracing = None  # the record's trace was left out by the sampler
        traced = (
            NO_SPAN
            if tracing is None
            else tracing.span(
                f"webhook {delivery.type}",
                parent=parent,
                kind="client",
                attributes={
                    "http.request.method": "POST",
                    "server.address": yarl.URL(delivery.url).host or "",
                    "deepaas.webhook.id": delivery.id,
                },
            )
        )
        with traced as current:
            if tracing is not None:
                headers[TRACEPARENT] = tracing.traceparent(current) or ""
            try:
                async with session.post(
                    delivery.url,
                    data=delivery.body.encode(),
                    headers=headers,
                    allow_redirects=False,  # no way round --webhook-allow
                ) as response:
                    await response.read()
                    if current is not None:
                        current.set_attribute(
                            "http.response.status_code", response.status
                        )
                    if 200 <= response.status < 300:
                        return ""
                    return f"answered {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"

    async def _forget(self, delivery: Delivery) -> None:
        self._traces.pop(delivery.id, None)
        try:
            await self.store.remove_delivery(delivery.id)
        except exceptions.StoreError as exc:
            LOG.error("Webhook %s %s not removed: %s", delivery.type, delivery.id, exc)

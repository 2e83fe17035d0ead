"""Requests for a name this server does not answer to are refused.

A web page served from ``rebind.example`` can make its name resolve to
127.0.0.1 after the page has loaded (DNS rebinding); the browser then
sends the page's requests to a server on this machine, as same-origin
requests of ``rebind.example``, which no cross-site check refuses. What
gives them away is their ``Host`` header, which a page cannot set: the
page's own name. A server listening on a loopback address therefore
answers only requests whose ``Host`` is a loopback name or address, or a
name of ``--allowed-hosts``; one listening elsewhere checks names only
when ``--allowed-hosts`` is set. The check is added when the app is built,
and only when one of those holds (``deepaas.api.pipeline``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from aiohttp import hdrs, web

from deepaas import exceptions, hostnames
from deepaas.api.errors import error_response

Check = Callable[[web.Request], web.StreamResponse | None]


def listens_on_loopback(listen_ip: str) -> bool:
    """Whether ``listen_ip`` (``--listen-ip``) is a loopback address or name."""
    try:
        return ipaddress.ip_address(listen_ip).is_loopback
    except ValueError:
        return hostnames.is_loopback_host(listen_ip.lower())


def host_check(listen_ip: str, allowed: list[str]) -> Check | None:
    """The check refusing requests for names this server does not answer
    to; None when no name is to be checked."""
    try:
        patterns = hostnames.parse_patterns(allowed, "--allowed-hosts")
    except ValueError as exc:
        raise exceptions.ConfigurationError(str(exc)) from None
    if not patterns and not listens_on_loopback(listen_ip):
        return None
    known: set[str] = set()  # Host values seen to pass, for the common case

    def check(request: web.Request) -> web.StreamResponse | None:
        value = request.headers.get(hdrs.HOST)
        if value is None or value in known:
            return None
        host, port = hostnames.split_host_port(value)
        if not (
            hostnames.is_loopback_host(host)
            or any(p.matches(host, port) for p in patterns)
        ):
            return error_response(
                421,
                f"This server does not answer to the name {host!r}: a page "
                "whose name leads here (DNS rebinding) may not use it. To "
                "serve this name, add it to --allowed-hosts.",
            )
        if len(known) < KNOWN_HOSTS_KEPT:
            known.add(value)
        return None

    return check


KNOWN_HOSTS_KEPT = 64

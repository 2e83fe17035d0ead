"""Cross-site protection: a web page on another site cannot change anything.

A browser sends a plain form POST to any address a page names, with no
preflight, so without a check any page a user visits could start trainings
on a server that user can reach. Every request that changes state (POST,
PUT, PATCH, DELETE) from a browser is therefore checked against where it
comes from:

- ``Sec-Fetch-Site`` (sent by every current browser): ``same-origin`` and
  ``none`` (the user's own action) pass, ``same-site`` and ``cross-site``
  are refused;
- without it, an ``Origin`` header must name this server (its ``Host``, or
  the ``X-Forwarded-Host`` a reverse proxy sets, which a page cannot set
  without a preflight); ``Origin: null`` (a sandboxed or local page) is
  refused;
- an origin listed with ``--cors-origin`` always passes, and gets the CORS
  headers (through aiohttp-cors, which also answers its preflights).

Clients that are not browsers send neither header and are not affected.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable

import aiohttp_cors
from aiohttp import web

from deepaas.api.errors import error_response

Check = Callable[[web.Request], web.StreamResponse | None]
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PASSING_FETCH_SITES = frozenset({"same-origin", "none"})


def cross_site_check(allowed_origins: Iterable[str]) -> Check:
    """The check refusing state-changing requests from pages of other
    sites, except those of ``allowed_origins``."""
    allowed = frozenset(origin.rstrip("/") for origin in allowed_origins)

    def check(request: web.Request) -> web.StreamResponse | None:
        if request.method in STATE_CHANGING:
            refusal = why_refused(request, allowed)
            if refusal is not None:
                return error_response(403, refusal)
        return None

    return check


def why_refused(request: web.Request, allowed: frozenset[str]) -> str | None:
    """Why a state-changing request is refused; None when it may pass."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") in allowed:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site.lower() in PASSING_FETCH_SITES:
            return None
        return refusal(request, origin or f"a {fetch_site} page")
    if origin is None:
        return None  # not a browser, or one that sends nothing cross-site
    if origin == "null" or not same_host(origin, request):
        return refusal(request, origin)
    return None


def same_host(origin: str, request: web.Request) -> bool:
    """Whether ``origin`` names this server, as the client reached it."""
    host = urllib.parse.urlsplit(origin).netloc.lower()
    seen = {request.headers.get("Host", "").lower()}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        seen.add(forwarded.split(",")[0].strip().lower())
    return bool(host) and host in seen


def refusal(request: web.Request, source: str) -> str:
    return (
        f"{request.method} refused: it comes from {source}, not from a page of "
        "this server nor of an origin allowed with --cors-origin (a web page "
        "on another site may not change anything here)."
    )


def setup_cors(app: web.Application, origins: Iterable[str]) -> None:
    """CORS headers and preflight answers for ``origins``, on every route."""
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=True,
        allow_headers="*",
        expose_headers="*",
        allow_methods="*",
        max_age=600,
    )
    cors = aiohttp_cors.setup(
        app, defaults={origin.rstrip("/"): options for origin in origins}
    )
    routes = list(app.router.routes())
    # A resource with a route for every method (the unknown model's) answers
    # its own OPTIONS: no preflight can be added to it.
    catch_all = {id(route.resource) for route in routes if route.method == "*"}
    for route in routes:
        if route.method != "OPTIONS" and id(route.resource) not in catch_all:
            cors.add(route)

"""Who sent a request, and what a route needs of them: the accesses routes
are registered with (``routing.add_route``), the roles that grant them, and
the ``Principal`` that authentication makes of a request's credentials
(``deepaas.api.auth``)."""

from __future__ import annotations

import dataclasses
import functools

from aiohttp import web

# What a route needs
PUBLIC = "public"  # nothing, ever (the probes, CORS preflights)
DOCS = "docs"  # the spec and the UI: open with --public-docs
METRICS = "metrics"  # /metrics: open with --public-metrics, else admin
READ = "read"  # versions and models: any role
PREDICT = "predict"
TRAIN = "train"
ADMIN = "admin"

ROLES = ("predict", "train", "admin")
GRANTS: dict[str, frozenset[str]] = {
    "predict": frozenset({DOCS, READ, PREDICT}),
    "train": frozenset({DOCS, READ, TRAIN}),
    "admin": frozenset({DOCS, READ, PREDICT, TRAIN, ADMIN, METRICS}),
}
NEEDED_ROLES = {
    DOCS: "any role",
    READ: "any role",
    PREDICT: "the predict role",
    TRAIN: "the train role",
    ADMIN: "the admin role",
    METRICS: "the admin role",
}


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who sent a request: ``name`` owns what they start."""

    name: str
    roles: frozenset[str]

    def may(self, access: str) -> bool:
        return access in self.accesses

    @functools.cached_property
    def accesses(self) -> frozenset[str]:
        """What the roles grant, together (asked of every request)."""
        return frozenset().union(*(GRANTS[role] for role in self.roles))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("deepaas_principal")


def owner_filter(request: web.Request) -> str | None:
    """Whose trainings a request may see: None for everyone's (no
    authentication, or an admin), else its sender's."""
    principal = request.get(PRINCIPAL)
    if principal is None or principal.is_admin:
        return None
    return principal.name


def owner_of(request: web.Request) -> str | None:
    """The name of the request's sender; None without authentication."""
    principal = request.get(PRINCIPAL)
    return principal.name if principal is not None else None

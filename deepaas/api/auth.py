"""Who may do what: authentication by API key or OIDC token, and roles.

Authentication is off unless ``--api-keys-file`` or ``--oidc-issuer`` is
given. Once on, every request needs credentials but those to the probes
(always open), the spec and the UI (open with ``--public-docs``) and
``/metrics`` (open with ``--public-metrics``). Credentials travel only in
headers (``Authorization: Bearer ...`` or ``X-API-Key``), which a browser
never adds by itself to a request from another site's page: that is what
keeps such pages from acting here.

Each route is registered with the access it needs (``routing.add_route``);
a role grants a set of accesses:

- ``predict``: read the versions, models and spec, and predict;
- ``train``: the same reading, and start, list, read and cancel trainings,
  its own only;
- ``admin``: everything, every user's trainings, ``/metrics`` and
  ``/v2/debug/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Sequence

from aiohttp import hdrs, web

from deepaas import exceptions
from deepaas.api import keys
from deepaas.api.errors import error_response
from deepaas.api.oidc import OIDC
from deepaas.api.principals import (
    ADMIN,
    DOCS,
    METRICS,
    NEEDED_ROLES,
    PREDICT,
    PRINCIPAL,
    PUBLIC,
    READ,
    ROLES,
    TRAIN,
    Principal,
    owner_filter,
    owner_of,
)
from deepaas.settings import SecuritySettings, Settings

LOG = logging.getLogger(__name__)

REALM = "deepaas"
MIN_KEY_LENGTH = 16


# API keys


def hash_key(key: str) -> str:
    """How a key is written in the keys file without the key itself."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class APIKey:
    digest: bytes  # SHA-256 of the key
    principal: Principal


def parse_keys(text: str, source: str) -> list[APIKey]:
    """The keys of a keys file's ``text``; raises ``ConfigurationError``
    naming the line of the first mistake (never the key on it)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise exceptions.ConfigurationError(
                f"{where}: expected KEY ROLES [NAME], with ROLES among "
                f"{', '.join(ROLES)}"
            )
        entries.append(
            APIKey(
                _digest(parts[0], where),
                Principal(
                    _key_name(parts, parts[0]), _roles(parts[1].split(","), where)
                ),
            )
        )
    return entries


def _digest(key: str, where: str) -> bytes:
    if key.startswith("sha256:"):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", key[7:]):
            raise exceptions.ConfigurationError(
                f"{where}: sha256: must be followed by the 64 hex digits of the "
                "key's SHA-256"
            )
        return bytes.fromhex(key[7:])
    if len(key) < MIN_KEY_LENGTH:
        raise exceptions.ConfigurationError(
            f"{where}: a key must have at least {MIN_KEY_LENGTH} characters "
            "(deepaas-api-key makes good ones)"
        )
    return hashlib.sha256(key.encode()).digest()


def _key_name(parts: Sequence[str], key: str) -> str:
    if len(parts) > 2 and parts[2].strip():
        return f"key:{parts[2].strip()}"
    digest = key[7:] if key.startswith("sha256:") else hash_key(key)[7:]
    return f"key:{digest[:8].lower()}"


def _roles(names: Iterable[str], where: str) -> frozenset[str]:
    roles = frozenset(n.strip() for n in names if n.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown or not roles:
        raise exceptions.ConfigurationError(
            f"{where}: unknown role(s) {', '.join(unknown) or '(none)'}; roles "
            f"are {', '.join(ROLES)}"
        )
    return roles


class APIKeys:
    """The keys of ``--api-keys-file``, read again by ``reload()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._keys = self._read()
        self.reload_failures = 0  # reloads that kept the previous keys
        self.reload_error: str | None = None  # why the last one did, if it did

    def _read(self) -> list[APIKey]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise exceptions.ConfigurationError(
                f"Cannot read the API keys file (--api-keys-file): {exc}"
            ) from None
        return parse_keys(text, self.path)

    def __len__(self) -> int:
        return len(self._keys)

    def reload(self) -> bool:
        """Read the file again; on a mistake keep the keys in use. Whether
        the new keys are in use."""
        try:
            self._keys = self._read()
        except exceptions.ConfigurationError as exc:
            LOG.error("API keys not reloaded, the previous ones stay: %s", exc)
            self.reload_failures += 1
            self.reload_error = exc.message
            return False
        self.reload_error = None
        LOG.info("API keys reloaded: %d key(s) from %s", len(self._keys), self.path)
        return True

    def find(self, key: str) -> Principal | None:
        """Whose key this is; every kept key is compared, in constant time."""
        # A header's bytes that are not UTF-8 reach us as surrogates.
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for entry in self._keys:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found


# Requests


class Authenticator:
    """Tells who sent a request, from its API key or OIDC token."""

    def __init__(
        self,
        api_keys: APIKeys | None,
        oidc: OIDC | None,
        *,
        public_docs: bool = False,
        public_metrics: bool = False,
    ) -> None:
        assert api_keys is not None or oidc is not None
        self.api_keys = api_keys
        self.oidc = oidc
        self.open_accesses = {PUBLIC}
        if public_docs:
            self.open_accesses.add(DOCS)
        if public_metrics:
            self.open_accesses.add(METRICS)

    @classmethod
    def from_settings(cls, security: SecuritySettings) -> Authenticator | None:
        """The authenticator the options ask for; None when auth is off."""
        api_keys = APIKeys(security.api_keys_file) if security.api_keys_file else None
        oidc = OIDC.from_settings(security) if security.oidc_issuer else None
        if api_keys is None and oidc is None:
            return None
        return cls(
            api_keys,
            oidc,
            public_docs=security.public_docs,
            public_metrics=security.public_metrics,
        )

    def schemes(self) -> list[str]:
        """The ways to authenticate, in words (for the banner)."""
        ways = []
        if self.api_keys is not None:
            ways.append(f"API keys ({len(self.api_keys)} in {self.api_keys.path})")
        if self.oidc is not None:
            ways.append(f"OIDC tokens of {self.oidc.issuer}")
        return ways

    async def refusal(self, request: web.Request) -> web.Response | None:
        """The answer refusing ``request`` (401, 403); None when it may go
        on, with its sender recorded as ``request[PRINCIPAL]``."""
        if hdrs.EXPECT in request.headers and PRINCIPAL in request:
            return None  # checked already (before a 100 Continue)
        # A path without a route (404, 405) needs credentials like any other.
        access = request.app[keys.ROUTE_ACCESS].get(request.match_info.route, READ)
        if access in self.open_accesses:
            return None
        # The usual case first, without a coroutine: a known API key.
        principal = self._known_key(request)
        if principal is None:
            try:
                principal = await self.principal(request)
            except exceptions.Unauthenticated as exc:
                return unauthorized(exc)
        if principal is None:
            return unauthorized(
                exceptions.Unauthenticated(
                    "Authentication required: send an API key or token as "
                    "'Authorization: Bearer <credentials>'."
                )
            )
        if not principal.may(access):
            roles = ", ".join(sorted(principal.roles)) or "none"
            return error_response(
                403,
                f"{request.method} {request.path} needs {NEEDED_ROLES[access]}; "
                f"the credentials sent have role(s): {roles}.",
            )
        request[PRINCIPAL] = principal
        return None

    def _known_key(self, request: web.Request) -> Principal | None:
        """The sender of a request carrying a known API key, as ``principal``
        finds it; None for anything else (no key, a token, a bad header),
        which ``principal`` then looks at."""
        if self.api_keys is None:
            return None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return self.api_keys.find(credentials.strip())
        api_key = request.headers.get("X-API-Key")
        return self.api_keys.find(api_key.strip()) if api_key is not None else None

    async def principal(self, request: web.Request) -> Principal | None:
        """Who sent ``request``; None when it carries no credentials. Raises
        ``Unauthenticated`` for credentials not accepted."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            credentials = credentials.strip()
            if scheme.lower() != "bearer" or not credentials:
                raise exceptions.Unauthenticated(
                    "Send credentials as 'Authorization: Bearer <key or token>'.",
                    invalid=True,
                )
            return await self._bearer(credentials)
        api_key = request.headers.get("X-API-Key")
        if api_key is not None:
            principal = self.api_keys.find(api_key.strip()) if self.api_keys else None
            if principal is None:
                raise exceptions.Unauthenticated("Invalid API key.", invalid=True)
            return principal
        return None

    async def _bearer(self, credentials: str) -> Principal:
        if self.api_keys is not None:
            principal = self.api_keys.find(credentials)
            if principal is not None:
                return principal
        if (
            self.oidc is not None
            and credentials.isascii()  # a token is base64url, nothing else
            and credentials.count(".") == 2
        ):
            return await self.oidc.principal(credentials)
        what = "API key" if self.oidc is None else "API key or token"
        raise exceptions.Unauthenticated(f"Invalid {what}.", invalid=True)

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()


# None: authentication is off
AUTHENTICATOR: web.AppKey[Authenticator | None] = web.AppKey("deepaas_auth")


def challenge(exc: exceptions.Unauthenticated) -> str:
    """The WWW-Authenticate header of a 401 (RFC 6750)."""
    if not exc.invalid:
        return f'Bearer realm="{REALM}"'
    description = exc.message.replace("\\", "").replace('"', "'")
    return (
        f'Bearer realm="{REALM}", error="invalid_token", '
        f'error_description="{description}"'
    )


def unauthorized(exc: exceptions.Unauthenticated) -> web.Response:
    response = error_response(401, exc.message)
    response.headers["WWW-Authenticate"] = challenge(exc)
    return response


def classify_routes(app: web.Application, base: str) -> None:
    """Give the access they need to the routes not added by ``routing``: the
    probes, the spec, the UI, /metrics and CORS preflights. Any other route
    without one is a mistake of ours."""
    table = app[keys.ROUTE_ACCESS]
    fixed = {
        f"{base}/healthz": PUBLIC,
        f"{base}/readyz": PUBLIC,
        f"{base}/metrics": METRICS,
        f"{base}/swagger.json": DOCS,
        f"{base}/openapi.json": DOCS,
        f"{base}/api": DOCS,
        f"{base}/api/": DOCS,
        f"{base}/ui": DOCS,
        f"{base}/ui/": DOCS,
    }
    for route in app.router.routes():
        if route in table:
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "OPTIONS":
            table[route] = PUBLIC  # a preflight carries no credentials
        elif canonical in fixed:
            table[route] = fixed[canonical]
        elif canonical.startswith(f"{base}/static/swagger"):
            table[route] = DOCS
        else:
            raise AssertionError(f"no access declared for {route.method} {canonical}")


def describe_access(settings: Settings) -> list[str]:
    """The paths open without credentials, for the banner."""
    server, security = settings.server, settings.security
    base = server.base
    public = [f"{base}/healthz", f"{base}/readyz"]
    if server.inference_protocol:
        public += [f"{base}/v2/health/live", f"{base}/v2/health/ready"]
    if security.public_docs and server.doc_endpoint:
        public += [f"{base}/swagger.json", f"{base}/openapi.json", f"{base}/api"]
    elif security.public_docs:
        public += [f"{base}/swagger.json", f"{base}/openapi.json"]
    if security.public_metrics and server.metrics_endpoint:
        public.append(f"{base}/metrics")
    return public


# What a route needs and who has it live in deepaas.api.principals, OIDC in
# deepaas.api.oidc; the API names them through this module.
__all__ = [
    "ADMIN",
    "DOCS",
    "METRICS",
    "OIDC",
    "PREDICT",
    "PRINCIPAL",
    "PUBLIC",
    "READ",
    "TRAIN",
    "APIKeys",
    "Authenticator",
    "Principal",
    "classify_routes",
    "hash_key",
    "owner_filter",
    "owner_of",
]

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

import asyncio
import collections
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import hdrs, web
from oslo_config import cfg

from deepaas import exceptions
from deepaas.api import keys
from deepaas.api.errors import error_response

if TYPE_CHECKING:
    import jwt

LOG = logging.getLogger(__name__)

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

REALM = "deepaas"
MIN_KEY_LENGTH = 16
# Token signatures accepted: public-key ones only, so that no key published
# in a JWKS can be used as an HMAC secret.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES384", "ES512", "EdDSA"}
)
JWKS_MAX_AGE = 3600.0  # seconds the issuer's keys are used before a refresh
JWKS_MIN_INTERVAL = 2.0  # fewest seconds between fetches for unknown keys
JWKS_MAX_BYTES = 1 << 20
CLOCK_LEEWAY = 30  # seconds of clock difference tolerated on exp, nbf, iat
VERIFIED_TOKENS_KEPT = 1024


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


# OIDC


def claim_values(claims: dict[str, Any], path: str) -> set[str]:
    """The strings of a claim at a dotted ``path``: a list's items, or a
    string's space-separated words (as in ``scope``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return set()
        value = value.get(part)
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def parse_role_map(pairs: Iterable[str]) -> dict[str, frozenset[str]]:
    """``--oidc-role ROLE=VALUE`` options as role -> claim values."""
    mapping: dict[str, set[str]] = {}
    for pair in pairs:
        role, sep, value = pair.partition("=")
        role = role.strip()
        if not sep or not value.strip() or role not in ROLES:
            raise exceptions.ConfigurationError(
                f"--oidc-role takes ROLE=VALUE with ROLE among {', '.join(ROLES)}, "
                f"not {pair!r}"
            )
        mapping.setdefault(role, set()).add(value.strip())
    return {role: frozenset(values) for role, values in mapping.items()}


class OIDC:
    """Checks access tokens of one issuer against the issuer's keys."""

    def __init__(
        self,
        issuer: str,
        *,
        audience: str = "",
        jwks: str = "",
        roles_claim: str = "groups",
        role_map: dict[str, frozenset[str]] | None = None,
        user_claim: str = "sub",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.roles_claim = roles_claim
        self.role_map = role_map or {}
        self.user_claim = user_claim
        self._keys: jwt.PyJWKSet | None = None
        self._fetched: float | None = None  # time.monotonic() of the last fetch
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        # token -> (principal, expiry as a time.time()), least recently used first
        self._verified: collections.OrderedDict[str, tuple[Principal, float]] = (
            collections.OrderedDict()
        )

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> OIDC:
        """The checker ``--oidc-*`` describe; strict: a token must name this
        server's audience, and roles come from ``--oidc-role`` alone."""
        if not conf.oidc_audience.strip():
            raise exceptions.ConfigurationError(
                "--oidc-issuer needs --oidc-audience: the audience (aud) of the "
                "tokens issued for this server (otherwise a token the issuer made "
                "for any other service would be accepted here); '*' accepts any."
            )
        role_map = parse_role_map(conf.oidc_role)
        if not role_map:
            raise exceptions.ConfigurationError(
                "--oidc-issuer needs at least one --oidc-role ROLE=VALUE: roles "
                f"come only from those mappings of the {conf.oidc_roles_claim!r} "
                "claim, and without one no token would have a role."
            )
        audience = conf.oidc_audience.strip()
        if audience == "*":
            audience = ""
            LOG.warning(
                "--oidc-audience '*': tokens of %s for any audience are accepted",
                conf.oidc_issuer,
            )
        return cls(
            conf.oidc_issuer,
            audience=audience,
            jwks=conf.oidc_jwks,
            roles_claim=conf.oidc_roles_claim,
            role_map=role_map,
            user_claim=conf.oidc_user_claim,
        )

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def principal(self, token: str) -> Principal:
        """Who the token says its bearer is; raises ``Unauthenticated``.

        A token once verified is taken again without checking its signature
        until it expires (clients send the same token for many calls)."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, expires = await self._verify(token)
        self._verified[token] = (principal, expires)
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The token's principal and until when it holds."""
        import jwt  # only servers that check tokens pay for it (and cryptography)

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid(f"not a readable token ({exc})") from None
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise _invalid(
                f"tokens signed with {algorithm!r} are not accepted; accepted: "
                f"{', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
            )
        key = await self._signing_key(header.get("kid"))
        if key.algorithm_name != algorithm:
            raise _invalid(
                f"the token says {algorithm} but its key is for {key.algorithm_name}"
            )
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience or None,
                leeway=CLOCK_LEEWAY,
                options={
                    "require": ["exp", "iss"],
                    "verify_aud": bool(self.audience),
                },
            )
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc) or type(exc).__name__) from None
        user = claims.get(self.user_claim)
        if not isinstance(user, str | int) or user == "":
            raise _invalid(f"the token has no {self.user_claim!r} claim")
        principal = Principal(f"oidc:{user}", self.roles(claims))
        return principal, float(claims["exp"]) + CLOCK_LEEWAY

    def roles(self, claims: dict[str, Any]) -> frozenset[str]:
        """The roles ``--oidc-role`` gives for the values of the roles claim."""
        values = claim_values(claims, self.roles_claim)
        return frozenset(
            role for role, wanted in self.role_map.items() if values & wanted
        )

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        key = self._find(kid)
        if key is None or self._age() > JWKS_MAX_AGE:
            async with self._lock:
                key = self._find(kid)  # fetched meanwhile?
                # Unknown keys are fetched for at most every few seconds: a
                # stream of made-up key ids cannot make us hammer the issuer.
                if (key is None and self._age() >= JWKS_MIN_INTERVAL) or (
                    self._age() > JWKS_MAX_AGE
                ):
                    await self._fetch()
                    key = self._find(kid)
        if key is None:
            if self._keys is None:
                raise exceptions.Unauthenticated(
                    "The issuer's keys cannot be fetched now; try again later.",
                    invalid=True,
                )
            raise _invalid(f"no key {kid!r} among the issuer's keys")
        return key

    def _age(self) -> float:
        """Seconds since the keys were last fetched (or tried)."""
        if self._fetched is None:
            return float("inf")
        return time.monotonic() - self._fetched

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if self._keys is None:
            return None
        usable = [
            k for k in self._keys.keys if k.algorithm_name in ASYMMETRIC_ALGORITHMS
        ]
        if kid is None:
            return usable[0] if len(usable) == 1 else None
        return next((k for k in usable if k.key_id == kid), None)

    async def refresh(self) -> None:
        """Fetch the issuer's keys; on failure keep those held (and log)."""
        async with self._lock:
            await self._fetch()

    async def _fetch(self) -> None:
        import jwt

        self._fetched = time.monotonic()
        try:
            self._keys = jwt.PyJWKSet.from_dict(await self._read_jwks())
        except (OSError, ValueError, aiohttp.ClientError, jwt.PyJWTError) as exc:
            LOG.error("Cannot fetch the OIDC issuer's keys: %s", exc)
        except TimeoutError:
            LOG.error("Cannot fetch the OIDC issuer's keys: timed out")
        else:
            LOG.info("OIDC keys of %s: %d key(s)", self.issuer, len(self._keys.keys))

    async def _read_jwks(self) -> dict[str, Any]:
        source = self.jwks
        if not source:
            discovery = await self._get_json(self.discovery_url)
            if discovery.get("issuer", self.issuer).rstrip("/") != self.issuer.rstrip(
                "/"
            ):
                raise ValueError(
                    f"the discovery document names issuer {discovery.get('issuer')!r}"
                )
            source = discovery.get("jwks_uri", "")
            if not isinstance(source, str) or not source:
                raise ValueError(f"no jwks_uri in {self.discovery_url}")
        if source.startswith(("https://", "http://")):
            return await self._get_json(source)
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, _read_small, source)
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"{source} holds no JSON object")
        return value

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10)
            )
        async with self._session.get(url) as response:
            response.raise_for_status()
            body = await response.content.read(JWKS_MAX_BYTES + 1)
        if len(body) > JWKS_MAX_BYTES:
            raise ValueError(f"{url} answered more than {JWKS_MAX_BYTES} bytes")
        value = json.loads(body)
        if not isinstance(value, dict):
            raise ValueError(f"{url} answered no JSON object")
        return value


def _read_small(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read(JWKS_MAX_BYTES)


def _invalid(why: str) -> exceptions.Unauthenticated:
    return exceptions.Unauthenticated(f"Invalid token: {why}.", invalid=True)


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
    def from_config(cls, conf: cfg.ConfigOpts) -> Authenticator | None:
        """The authenticator the options ask for; None when auth is off."""
        api_keys = APIKeys(conf.api_keys_file) if conf.api_keys_file else None
        oidc = OIDC.from_config(conf) if conf.oidc_issuer else None
        if api_keys is None and oidc is None:
            return None
        return cls(
            api_keys,
            oidc,
            public_docs=conf.public_docs,
            public_metrics=conf.public_metrics,
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


def describe_access(conf: cfg.ConfigOpts, base: str) -> list[str]:
    """The paths open without credentials, for the banner."""
    public = [f"{base}/healthz", f"{base}/readyz"]
    if conf.public_docs and conf.doc_endpoint:
        public += [f"{base}/swagger.json", f"{base}/openapi.json", f"{base}/api"]
    elif conf.public_docs:
        public += [f"{base}/swagger.json", f"{base}/openapi.json"]
    if conf.public_metrics and conf.metrics_endpoint:
        public.append(f"{base}/metrics")
    return public


__all__ = [
    "APIKeys",
    "Authenticator",
    "OIDC",
    "Principal",
    "classify_routes",
    "hash_key",
    "owner_filter",
    "owner_of",
]

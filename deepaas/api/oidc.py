"""OIDC access tokens: checked against the keys of one issuer (fetched,
kept for an hour, fetched again for a key it does not know, a few seconds
apart at most), with roles from one of their claims (``--oidc-role``)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp

from deepaas import exceptions
from deepaas.api.principals import ROLES, Principal
from deepaas.settings import SecuritySettings

if TYPE_CHECKING:
    import jwt

LOG = logging.getLogger(__name__)

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
    def from_settings(cls, conf: SecuritySettings) -> OIDC:
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

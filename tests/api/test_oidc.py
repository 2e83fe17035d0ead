"""OIDC access tokens: a key pair made here, an issuer served on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from deepaas import exceptions
from deepaas.api.auth import Authenticator
from deepaas.settings import Settings
from tests import helpers

PREDICT = "/v2/models/failing/predict/"
TRAIN = "/v2/models/failing/train/"
AUDIENCE = "deepaas-test"


def new_rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key, kid: str, alg: str) -> dict:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


class Issuer:
    """An OIDC issuer on loopback: discovery document and JWKS, counting
    how often its keys are fetched."""

    def __init__(self) -> None:
        self.url = ""
        self.keys: dict[str, tuple[object, str]] = {}  # kid -> (private key, alg)
        self.fetches = 0
        self.add_key("k1", new_rsa(), "RS256")

    def add_key(self, kid: str, private_key, alg: str) -> None:
        self.keys[kid] = (private_key, alg)

    def app(self) -> web.Application:
        async def discovery(request: web.Request) -> web.Response:
            return web.json_response(
                {"issuer": self.url, "jwks_uri": self.url + "/certs"}
            )

        async def certs(request: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/certs", certs)
        return app

    def jwks(self) -> dict:
        return {
            "keys": [public_jwk(key, kid, alg) for kid, (key, alg) in self.keys.items()]
        }

    def claims(self, **overrides) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "groups": ["predict", "train"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "k1", **overrides) -> str:
        key, alg = self.keys[kid]
        return jwt.encode(
            self.claims(**overrides), key, algorithm=alg, headers={"kid": kid}
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def issuer(aiohttp_server) -> Issuer:
    issuer = Issuer()
    server = await aiohttp_server(issuer.app())
    issuer.url = str(server.make_url("")).rstrip("/")
    return issuer


# The groups of Issuer.claims() that give roles here.
ROLES = ("--oidc-role", "predict=predict", "--oidc-role", "train=train")


@pytest.fixture
def serve(make_client, issuer):
    async def make(*argv: str):
        return await make_client(
            "--model-name",
            "failing",
            "--oidc-issuer",
            issuer.url,
            "--oidc-audience",
            AUDIENCE,
            *ROLES,
            *argv,
        )

    return make


async def test_a_valid_token_predicts_and_owns_its_trainings(serve, issuer):
    client = await serve()
    token = issuer.token(sub="alice@example.org")
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200
    resp = await client.post(TRAIN + "?mode=ok", headers=bearer(token))
    assert (await resp.json())["owner"] == "oidc:alice@example.org"
    other = issuer.token(sub="bob")
    assert await (await client.get(TRAIN, headers=bearer(other))).json() == []


def unsigned(issuer: Issuer) -> str:
    def part(value: dict) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part({"alg": "none", "typ": "JWT", "kid": "k1"})
    return f"{header}.{part(issuer.claims())}."


def tampered(issuer: Issuer) -> str:
    header, _, signature = issuer.token(groups=["predict"]).split(".")
    claims = json.dumps(issuer.claims(groups=["admin"])).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def signed_by_a_stranger(issuer: Issuer) -> str:
    return jwt.encode(
        issuer.claims(), new_rsa(), algorithm="RS256", headers={"kid": "k1"}
    )


def hmac_with_the_public_key(issuer: Issuer) -> str:
    key, _ = issuer.keys["k1"]
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    algorithm = jwt.get_algorithm_by_name("HS256")
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
        for v in (header, issuer.claims())
    )
    signature = algorithm.sign(signing_input.encode(), pem)
    return (
        signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    )


BAD_TOKENS = {
    "expired": lambda i: i.token(exp=int(time.time()) - 120),
    "wrong audience": lambda i: i.token(aud="another-service"),
    "wrong issuer": lambda i: i.token(iss="https://evil.example"),
    "no expiry": lambda i: i.token(exp=None),
    "not yet valid": lambda i: i.token(nbf=int(time.time()) + 600),
    "alg none": unsigned,
    "tampered": tampered,
    "signed by another key": signed_by_a_stranger,
    "HS256 with the public key": hmac_with_the_public_key,
    "garbage": lambda i: "abc.def.ghi",
    "no user": lambda i: i.token(sub=None),
}


async def test_every_bad_token_is_401(serve, issuer):
    client = await serve()
    for kind, make in BAD_TOKENS.items():
        resp = await client.post(PREDICT, headers=bearer(make(issuer)))
        assert resp.status == 401, kind
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="deepaas", error="invalid_token"')
        assert (await resp.json())["message"].startswith("Invalid"), kind


async def test_roles_come_from_the_claim_named(serve, issuer):
    client = await serve(
        "--oidc-roles-claim",
        "realm_access.roles",
        "--oidc-role",
        "admin=urn:example:ops",
        "--oidc-role",
        "predict=member",
    )
    ops = issuer.token(groups=None, realm_access={"roles": ["urn:example:ops"]})
    member = issuer.token(groups=None, realm_access={"roles": ["member", "admin"]})
    nobody = issuer.token(groups=["admin"])  # not the claim named
    assert (await client.get("/metrics", headers=bearer(ops))).status == 200
    assert (await client.post(PREDICT, headers=bearer(member))).status == 200
    assert (await client.get("/metrics", headers=bearer(member))).status == 403
    resp = await client.post(PREDICT, headers=bearer(nobody))
    assert resp.status == 403
    assert "role(s): none" in (await resp.json())["message"]


async def test_a_new_key_of_the_issuer_is_fetched_and_made_up_ones_are_not(
    serve, issuer
):
    client = await serve()
    assert (await client.post(PREDICT, headers=bearer(issuer.token()))).status == 200
    before = issuer.fetches
    issuer.add_key("k2", ec.generate_private_key(ec.SECP256R1()), "ES256")
    token = issuer.token("k2")

    async def accepted() -> bool:
        return (await client.post(PREDICT, headers=bearer(token))).status == 200

    # No restart needed: the keys are fetched again for an unknown key id
    # (at most every JWKS_MIN_INTERVAL seconds).
    deadline = time.monotonic() + 20
    while not await accepted():
        assert time.monotonic() < deadline, "the new key was never fetched"
        await asyncio.sleep(0.1)
    after = issuer.fetches
    assert before < after <= before + 2
    # a stream of tokens naming keys nobody has costs the issuer a fetch at most
    stranger = new_rsa()
    for _ in range(20):
        forged = jwt.encode(
            issuer.claims(),
            stranger,
            algorithm="RS256",
            headers={"kid": uuid.uuid4().hex},
        )
        assert (await client.post(PREDICT, headers=bearer(forged))).status == 401
    assert issuer.fetches <= after + 1


async def test_keys_from_a_jwks_file(make_client, tmp_path):
    issuer = Issuer()
    issuer.url = "https://issuer.example"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    client = await make_client(
        "--model-name", "failing",
        "--oidc-issuer", issuer.url,
        "--oidc-jwks", str(path),
        "--oidc-audience", "*",
        *ROLES,
    )  # fmt: skip
    token = issuer.token(aud="whatever")
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200


async def test_an_unreachable_issuer_is_a_401_not_a_failure(make_client):
    client = await make_client(
        "--model-name", "failing",
        "--oidc-issuer", f"http://127.0.0.1:{helpers.free_port()}",
        "--oidc-audience", AUDIENCE,
        *ROLES,
    )  # fmt: skip
    issuer = Issuer()
    resp = await client.post(PREDICT, headers=bearer(issuer.token()))
    assert resp.status == 401
    assert "cannot be fetched now" in (await resp.json())["message"]
    assert (await client.get("/readyz")).status == 200


async def test_api_keys_and_tokens_together(serve, issuer, tmp_path):
    keys_file = tmp_path / "keys"
    key = "robot-key-0123456789abcdef"
    keys_file.write_text(f"{key} predict robot\n")
    client = await serve("--api-keys-file", str(keys_file))
    assert (await client.post(PREDICT, headers=bearer(key))).status == 200
    assert (await client.post(PREDICT, headers={"X-API-Key": key})).status == 200
    token = issuer.token()
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200
    # a token is no API key
    assert (await client.post(PREDICT, headers={"X-API-Key": token})).status == 401


async def test_a_token_taken_again_from_the_cache_still_expires(serve, issuer):
    client = await serve()
    # within the 30 s clock leeway for a few more seconds (the first use
    # fetches the issuer's keys, slow on a loaded machine)
    token = issuer.token(exp=int(time.time()) - 26)
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200
    deadline = time.monotonic() + 15
    while (await client.post(PREDICT, headers=bearer(token))).status == 200:
        assert time.monotonic() < deadline, "an expired token is still accepted"
        await asyncio.sleep(0.1)
    resp = await client.post(PREDICT, headers=bearer(token))
    assert resp.status == 401
    assert "expired" in (await resp.json())["message"]


@pytest.mark.parametrize(
    "argv,complaint",
    [
        (("--oidc-role", "predict=predict"), "--oidc-audience"),
        (("--oidc-audience", AUDIENCE), "--oidc-role"),
    ],
)
def test_oidc_without_an_audience_or_roles_does_not_start(argv, complaint):
    settings = Settings.parse(["--oidc-issuer", "https://issuer.example", *argv])
    with pytest.raises(exceptions.ConfigurationError, match=complaint):
        Authenticator.from_settings(settings.security)


async def test_any_audience_only_when_asked_and_said(make_client, issuer, caplog):
    with caplog.at_level(logging.WARNING):
        client = await make_client(
            "--model-name", "failing",
            "--oidc-issuer", issuer.url,
            "--oidc-audience", "*",
            *ROLES,
        )  # fmt: skip
    assert "any audience" in caplog.text
    token = issuer.token(aud="another-service")
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200


async def test_a_group_called_admin_gives_no_role(serve, issuer):
    client = await serve()
    token = issuer.token(groups=["admin", "predict"])
    assert (await client.post(PREDICT, headers=bearer(token))).status == 200
    assert (await client.get("/metrics", headers=bearer(token))).status == 403
    token = issuer.token(groups=["admin"])
    assert (await client.post(PREDICT, headers=bearer(token))).status == 403

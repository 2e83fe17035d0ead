"""Authentication with API keys, roles and owners, with real requests."""

from __future__ import annotations

import asyncio

import pytest
import stevedore

from deepaas import config, exceptions
from deepaas.api import auth, get_app, keys
from tests import helpers

TRAIN = "/v2/models/failing/train/"
PREDICT = "/v2/models/failing/predict/"

ALICE = "alice-key-0123456789abcdef"  # train
BOB = "bob-key-0123456789abcdef"  # train and predict
PREDICTOR = "predict-key-0123456789abc"  # predict, no name
ADMIN = "admin-key-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(
        "# key  roles  name\n"
        f"{ALICE} train alice\n"
        f"{auth.hash_key(BOB)} train,predict bob\n"
        f"{PREDICTOR} predict\n"
        "\n"
        f"{auth.hash_key(ADMIN)}   admin   the operator\n"
    )
    return path


@pytest.fixture
def serve(make_client, keys_file):
    async def make(*argv: str):
        return await make_client(
            "--model-name", "failing", "--api-keys-file", str(keys_file), *argv
        )

    return make


NEED_CREDENTIALS = [
    ("POST", PREDICT),
    ("POST", TRAIN),
    ("GET", TRAIN),
    ("DELETE", TRAIN + "0123"),
    ("GET", "/"),
    ("GET", "/v2/"),
    ("GET", "/v2/models/"),
    ("GET", "/v2/models/failing/"),
    ("GET", "/v2/models/nope/"),  # an unknown model: no hint it is unknown
    ("GET", "/no/such/path"),
    ("GET", "/swagger.json"),
    ("GET", "/openapi.json"),
    ("GET", "/api"),
    ("GET", "/metrics"),
]


async def test_no_credentials_is_401_with_a_challenge(serve):
    client = await serve()
    for method, path in NEED_CREDENTIALS:
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="deepaas"'
        assert "Authentication required" in (await resp.json())["message"]


async def test_the_probes_are_always_open(serve):
    client = await serve()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_bad_credentials_are_401_invalid_token(serve):
    client = await serve()
    for headers in (
        bearer(ALICE.upper()),
        bearer(auth.hash_key(ALICE)),  # the file's form is not a key
        {"X-API-Key": "nope-nope-nope-nope"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer"},
        {"Authorization": ALICE},  # no scheme
    ):
        resp = await client.post(PREDICT, headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith(
            'Bearer realm="deepaas", error="invalid_token", error_description="'
        )
        assert ALICE not in await resp.text()


async def test_a_key_in_the_query_string_or_a_cookie_is_no_credential(serve):
    client = await serve()
    resp = await client.post(PREDICT + f"?api_key={BOB}", cookies={"api_key": BOB})
    assert resp.status == 401


async def test_a_valid_key_predicts(serve):
    client = await serve()
    for headers in (
        bearer(BOB),
        {"X-API-Key": BOB},
        {"authorization": f"bearer  {BOB} "},
    ):
        resp = await client.post(PREDICT, headers=headers)
        assert resp.status == 200, (headers, await resp.text())


ROLE_CASES = [
    (ALICE, "POST", PREDICT, 403),  # train only
    (ALICE, "GET", "/v2/models/failing/", 200),
    (ALICE, "GET", "/swagger.json", 200),
    (PREDICTOR, "POST", TRAIN + "?mode=ok", 403),
    (PREDICTOR, "GET", TRAIN, 403),
    (PREDICTOR, "POST", PREDICT, 200),
    (PREDICTOR, "GET", "/v2/models/", 200),
    (BOB, "GET", "/v2/debug/", 403),
    (BOB, "GET", "/metrics", 403),
    (ADMIN, "GET", "/v2/debug/", 200),
    (ADMIN, "GET", "/metrics", 200),
    (ADMIN, "POST", PREDICT, 200),
    (ADMIN, "GET", "/no/such/path", 404),
]


async def test_each_role_does_what_it_grants(serve):
    client = await serve("--debug-endpoint")
    for key, method, path, status in ROLE_CASES:
        resp = await client.request(method, path, headers=bearer(key))
        assert resp.status == status, (key, method, path, await resp.text())
        if status == 403:
            message = (await resp.json())["message"]
            assert "needs the" in message and "role" in message


async def test_public_docs_and_metrics_when_asked(serve):
    client = await serve("--public-docs", "--public-metrics")
    for path in ("/swagger.json", "/openapi.json", "/api", "/metrics"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/v2/models/")).status == 401


async def test_a_train_user_sees_and_cancels_only_their_own(serve):
    client = await serve()
    mine = await client.post(TRAIN + "?mode=sleep&seconds=30", headers=bearer(ALICE))
    assert mine.status == 200
    mine = await mine.json()
    assert mine["owner"] == "key:alice"
    theirs = await (
        await client.post(TRAIN + "?mode=sleep&seconds=30", headers=bearer(BOB))
    ).json()
    assert theirs["owner"] == "key:bob"

    listed = await (await client.get(TRAIN, headers=bearer(ALICE))).json()
    assert [t["uuid"] for t in listed] == [mine["uuid"]]
    # another user's training is as unknown as one that never was
    for method, path in (
        ("GET", TRAIN + theirs["uuid"]),
        ("GET", TRAIN + theirs["uuid"] + "/log"),
        ("DELETE", TRAIN + theirs["uuid"]),
    ):
        resp = await client.request(method, path, headers=bearer(ALICE))
        assert resp.status == 404, (method, path)
    resp = await client.get(TRAIN + theirs["uuid"], headers=bearer(BOB))
    assert (await resp.json())["status"] == "running"  # not cancelled

    everyone = await (await client.get(TRAIN, headers=bearer(ADMIN))).json()
    assert {t["uuid"] for t in everyone} == {mine["uuid"], theirs["uuid"]}
    resp = await client.delete(TRAIN + theirs["uuid"], headers=bearer(ADMIN))
    assert resp.status == 200
    resp = await client.delete(TRAIN + mine["uuid"], headers=bearer(ALICE))
    assert resp.status == 200


async def test_two_keys_of_one_name_share_their_trainings(make_client, tmp_path):
    path = tmp_path / "keys"
    old, new = "old-key-0123456789abcdef", "new-key-0123456789abcdef"
    path.write_text(f"{old} train carol\n{new} train carol\n")
    client = await make_client("--model-name", "failing", "--api-keys-file", str(path))
    started = await (await client.post(TRAIN + "?mode=ok", headers=bearer(old))).json()
    resp = await client.get(TRAIN + started["uuid"], headers=bearer(new))
    assert resp.status == 200


async def test_max_trainings_per_user(serve):
    client = await serve("--max-trainings-per-user", "1")
    first = await client.post(TRAIN + "?mode=sleep&seconds=30", headers=bearer(ALICE))
    assert first.status == 200
    resp = await client.post(TRAIN + "?mode=ok", headers=bearer(ALICE))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "30"
    assert "--max-trainings-per-user" in (await resp.json())["message"]
    listed = await (await client.get(TRAIN, headers=bearer(ALICE))).json()
    assert len(listed) == 1  # nothing else was started
    # another user is not held back by alice's
    resp = await client.post(TRAIN + "?mode=sleep&seconds=30", headers=bearer(BOB))
    assert resp.status == 200
    for key, training in ((ALICE, await first.json()), (BOB, await resp.json())):
        await client.delete(TRAIN + training["uuid"], headers=bearer(key))
    resp = await client.post(TRAIN + "?mode=ok", headers=bearer(ALICE))
    assert resp.status == 200  # room again


async def test_owners_are_kept_across_a_restart(serve, keys_file):
    client = await serve()
    started = await (
        await client.post(TRAIN + "?mode=ok", headers=bearer(ALICE))
    ).json()
    await client.close()
    client = await serve()
    resp = await client.get(TRAIN + started["uuid"], headers=bearer(ALICE))
    assert (await resp.json())["owner"] == "key:alice"
    assert (await client.get(TRAIN, headers=bearer(BOB))).status == 200
    assert await (await client.get(TRAIN, headers=bearer(BOB))).json() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Origin": "https://evil.example", "Cookie": f"api_key={BOB}"},
    ],
)
async def test_a_page_of_another_site_gets_401_and_starts_nothing(serve, headers):
    """What a plain form POST from another site's page sends: no credentials
    (a browser adds none of these headers by itself)."""
    client = await serve()
    resp = await client.post(TRAIN + "?mode=ok", headers=headers, data={"a": "b"})
    assert resp.status == 401
    assert await (await client.get(TRAIN, headers=bearer(ADMIN))).json() == []


async def test_a_cors_preflight_needs_no_credentials(serve):
    client = await serve("--cors-origin", "https://app.example")
    resp = await client.options(
        PREDICT,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp = await client.post(
        PREDICT, headers={"Origin": "https://app.example", **bearer(BOB)}
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("short train\n", "line 1: a key must have at least 16 characters"),
        (f"# c\n{ALICE} trainer\n", "line 2: unknown role(s) trainer"),
        (f"{ALICE}\n", "line 1: expected KEY ROLES [NAME]"),
        ("sha256:abc predict\n", "line 1: sha256: must be followed by the 64"),
        (f"{ALICE} ,\n", "line 1: unknown role(s) (none)"),
    ],
)
def test_a_bad_keys_file_stops_start_up_naming_the_line(
    tmp_path, testmodels_installed, text, expected
):
    path = tmp_path / "keys"
    path.write_text(text)
    conf = config.build_config(
        ["--model-name", "failing", "--api-keys-file", str(path)]
    )
    with pytest.raises(exceptions.ConfigurationError) as info:
        get_app(conf)
    assert expected in info.value.message
    assert ALICE not in info.value.message


def test_a_missing_keys_file_stops_start_up(tmp_path, testmodels_installed):
    conf = config.build_config(
        ["--model-name", "failing", "--api-keys-file", str(tmp_path / "none")]
    )
    with pytest.raises(exceptions.ConfigurationError, match="--api-keys-file"):
        get_app(conf)


async def test_reload_takes_new_keys_and_keeps_the_old_on_a_mistake(serve, keys_file):
    client = await serve()
    new = "brand-new-key-0123456789"
    assert (await client.post(PREDICT, headers=bearer(new))).status == 401
    keys_file.write_text(f"{new} predict dave\n")
    api_keys = client.app[auth.AUTHENTICATOR].api_keys
    assert api_keys.reload()
    assert (await client.post(PREDICT, headers=bearer(new))).status == 200
    assert (await client.post(PREDICT, headers=bearer(BOB))).status == 401
    keys_file.write_text("broken\n")
    assert not api_keys.reload()
    assert (await client.post(PREDICT, headers=bearer(new))).status == 200


async def test_a_failed_reload_is_seen_in_readyz_and_metrics(serve, keys_file):
    client = await serve("--metrics-endpoint")
    api_keys = client.app[auth.AUTHENTICATOR].api_keys
    keys_file.write_text("broken\n")
    assert not api_keys.reload()
    ready = await client.get("/readyz", headers=bearer(ADMIN))
    assert ready.status == 200
    body = await ready.json()
    assert body["status"] == "degraded"
    assert "could not be reloaded" in body["reason"] and "line 1" in body["reason"]
    anonymous = await (await client.get("/readyz")).json()
    assert anonymous["status"] == "degraded" and "line 1" not in anonymous["reason"]
    metrics = await (await client.get("/metrics", headers=bearer(ADMIN))).text()
    assert "deepaas_api_keys_reload_failures_total 1.0" in metrics
    keys_file.write_text(f"{ADMIN} admin\n")
    assert api_keys.reload()
    body = await (await client.get("/readyz", headers=bearer(ADMIN))).json()
    assert body["status"] == "ready"
    metrics = await (await client.get("/metrics", headers=bearer(ADMIN))).text()
    assert "deepaas_api_keys_reload_failures_total 1.0" in metrics


@pytest.mark.parametrize(
    "credentials",
    [None, PREDICTOR, ALICE, "not-a-key-0123456789"],
)
async def test_readyz_says_only_whether_it_is_ready_but_to_an_admin(serve, credentials):
    client = await serve()
    headers = bearer(credentials) if credentials else {}
    response = await client.get("/readyz", headers=headers)
    assert response.status == 200
    assert await response.json() == {"status": "ready"}
    admin = await (await client.get("/readyz", headers=bearer(ADMIN))).json()
    assert admin["status"] == "ready"
    pids = [p["pid"] for p in admin["models"]["failing"]["processes"]]
    assert pids and all(isinstance(pid, int) for pid in pids)


async def test_readyz_hides_why_start_up_failed_but_from_an_admin(
    make_client, keys_file, model_sites, monkeypatch
):
    monkeypatch.syspath_prepend(str(model_sites["broken"]))
    # stevedore lists a group once per process; this test adds models.
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})
    client = await make_client(
        "--model-name", "bad-warm", "--api-keys-file", str(keys_file), ready=False
    )
    startup = client.app[keys.STARTUP]
    assert await helpers.eventually(lambda: startup.failed is not None)
    anonymous = await client.get("/readyz")
    assert anonymous.status == 503
    body = await anonymous.json()
    assert body["status"] == "failed" and "weights" not in body["reason"]
    admin = await (await client.get("/readyz", headers=bearer(ADMIN))).json()
    assert "weights file missing" in admin["reason"]


def test_the_key_maker_makes_a_line_the_file_takes(capsys):
    from deepaas.cmd import apikey

    assert apikey.main(["predict,train", "erin"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].removeprefix("key:  ")
    line = out[1].removeprefix("line: ")
    assert key not in line
    (entry,) = auth.parse_keys(line, "test")
    assert entry.principal == auth.Principal(
        "key:erin", frozenset({"predict", "train"})
    )
    assert apikey.main(["root"]) == 2


async def test_the_spec_declares_how_to_authenticate_and_stays_valid(serve):
    from openapi_spec_validator import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator

    client = await serve(
        "--oidc-issuer", "https://issuer.example/realms/lab", "--public-docs",
        "--oidc-audience", "deepaas", "--oidc-role", "predict=predict",
    )  # fmt: skip
    swagger = await (await client.get("/swagger.json")).json()
    openapi = await (await client.get("/openapi.json")).json()
    OpenAPIV2SpecValidator(swagger).validate()
    OpenAPIV30SpecValidator(openapi).validate()
    assert swagger["securityDefinitions"]["bearer"]["name"] == "Authorization"
    assert swagger["securityDefinitions"]["apiKey"]["name"] == "X-API-Key"
    assert swagger["security"] == [{"bearer": []}, {"apiKey": []}]
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key or an access token of "
        "https://issuer.example/realms/lab.",
    }
    assert schemes["oidc"]["openIdConnectUrl"] == (
        "https://issuer.example/realms/lab/.well-known/openid-configuration"
    )
    assert {"oidc": []} in openapi["security"]
    predict = swagger["paths"]["/v2/models/failing/predict/"]["post"]["responses"]
    assert predict["401"]["schema"] == {"$ref": "#/definitions/Failure"}
    assert "403" in openapi["paths"]["/v2/models/failing/train/"]["post"]["responses"]


async def test_without_auth_the_spec_declares_none(make_client):
    client = await make_client("--model-name", "failing")
    swagger = await (await client.get("/swagger.json")).json()
    openapi = await (await client.get("/openapi.json")).json()
    assert "securityDefinitions" not in swagger and "security" not in swagger
    assert "securitySchemes" not in openapi["components"]
    predict = swagger["paths"]["/v2/models/failing/predict/"]["post"]["responses"]
    assert "401" not in predict


async def expect_continue_status(client, headers: str) -> bytes:
    """The first status line answering a POST with Expect: 100-continue."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            f"{headers}Content-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_expect_continue_without_credentials_is_refused_before_the_body(
    serve,
):
    client = await serve()
    assert (await expect_continue_status(client, "")).startswith(b"HTTP/1.1 401")
    line = await expect_continue_status(client, f"X-API-Key: {ALICE}\r\n")
    assert line.startswith(b"HTTP/1.1 403")  # alice may not predict
    line = await expect_continue_status(client, f"X-API-Key: {BOB}\r\n")
    assert line == b"HTTP/1.1 100 Continue\r\n"


def test_a_server_without_oidc_never_imports_pyjwt(testmodels_installed, tmp_path):
    """Token checking (PyJWT, cryptography) costs memory only where used."""
    import os
    import subprocess
    import sys
    import textwrap

    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{ALICE} train alice\n")
    code = textwrap.dedent(
        f"""
        import sys
        from deepaas import config
        from deepaas.api import get_app

        get_app(config.build_config(
            ["--model-name", "minimal", "--state-dir", {str(tmp_path)!r},
             "--api-keys-file", {str(keys_file)!r}]
        ))
        print("jwt" in sys.modules, "cryptography" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(testmodels_installed)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]

"""A page on another name, made to resolve to this machine (DNS rebinding),
cannot drive a server listening on loopback; answers a browser would run
are sandboxed, and no answer is sniffed."""

from __future__ import annotations

import pytest

from deepaas import config, exceptions
from deepaas.api import get_app, hosts
from tests import helpers

TRAIN = "/v2/models/module-model/train/"


def request(method: str, path: str, host: str, *extra: str, body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", *extra]
    head += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def trainings(client) -> list:
    response = await client.get(TRAIN)
    assert response.status == 200
    return await response.json()


@pytest.mark.parametrize("method,path", [("POST", TRAIN), ("GET", TRAIN)])
async def test_a_rebound_name_is_refused_on_loopback(make_client, method, path):
    client = await make_client("--model-name", "module-model")
    body = b'{"epochs": 1}'
    status, headers, answer = await helpers.send_raw(
        client.port,
        request(
            method,
            path + "?epochs=1",
            "rebind.example:5000",
            "Origin: http://rebind.example:5000",
            "Content-Type: application/json",
            body=body if method == "POST" else b"",
        ),
    )
    assert status == 421, answer
    assert b"--allowed-hosts" in answer
    assert headers["content-type"].startswith("application/json")
    assert await trainings(client) == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:5000",
        "127.1.2.3",
        "localhost:5000",
        "LOCALHOST",
        "app.localhost:5000",
        "[::1]:5000",
        "[::ffff:127.0.0.1]",
        "localhost.",
    ],
)
async def test_loopback_names_are_answered(make_client, host):
    client = await make_client("--model-name", "module-model")
    status, _, answer = await helpers.send_raw(
        client.port, request("GET", "/v2/models/", host)
    )
    assert status == 200, answer


@pytest.mark.parametrize(
    "allowed,host,status",
    [
        ("models.example.org", "models.example.org", 200),
        ("models.example.org", "MODELS.example.org:5000", 200),
        ("models.example.org", "evil.example.org", 421),
        ("*.example.org", "a.example.org", 200),
        ("*.example.org", "a.b.example.org", 421),
        ("*.example.org", "example.org", 421),
        ("models.example.org:8443", "models.example.org:8443", 200),
        ("models.example.org:8443", "models.example.org", 421),
        ("*", "anything.example", 200),
    ],
)
async def test_allowed_hosts_are_matched_label_by_label(
    make_client, allowed, host, status
):
    client = await make_client(
        "--model-name", "module-model", "--allowed-hosts", allowed
    )
    got, _, answer = await helpers.send_raw(
        client.port, request("GET", "/v2/models/", host)
    )
    assert got == status, answer


async def test_other_addresses_check_names_only_when_asked(
    aiohttp_client, testmodels_installed, state_dir
):
    argv = ["--model-name", "module-model", "--state-dir", str(state_dir)]
    conf = config.build_config([*argv, "--listen-ip", "0.0.0.0"])
    client = await aiohttp_client(get_app(conf))
    status, _, _ = await helpers.send_raw(
        client.port, request("GET", "/v2/models/", "models.example.org")
    )
    assert status == 200
    conf = config.build_config(
        [*argv, "--listen-ip", "0.0.0.0", "--allowed-hosts", "models.example.org"]
    )
    client = await aiohttp_client(get_app(conf))
    status, _, _ = await helpers.send_raw(
        client.port, request("GET", "/v2/models/", "rebind.example")
    )
    assert status == 421


def test_no_check_is_added_when_none_is_needed():
    assert hosts.host_check("0.0.0.0", []) is None
    assert hosts.host_check("10.1.2.3", []) is None
    assert hosts.host_check("127.0.0.1", []) is not None
    assert hosts.host_check("::1", []) is not None
    assert hosts.host_check("0.0.0.0", ["a.example"]) is not None


def test_a_bad_pattern_stops_start_up():
    with pytest.raises(exceptions.ConfigurationError, match="--allowed-hosts"):
        hosts.host_check("127.0.0.1", ["a.example:http"])


# Answers a browser would run


@pytest.mark.parametrize(
    "accept,sandboxed",
    [("text/html", True), ("image/svg+xml", True), ("text/plain", False)],
)
async def test_active_answers_are_sandboxed(make_client, accept, sandboxed):
    client = await make_client("--model-name", "pages")
    response = await client.post("/v2/models/pages/predict/", params={"accept": accept})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith(accept)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (response.headers.get("Content-Security-Policy") == "sandbox") is sandboxed


async def test_an_echoed_upload_served_as_html_is_sandboxed(make_client):
    client = await make_client("--model-name", "pages")
    body = (
        b'--b\r\nContent-Disposition: form-data; name="upload"; '
        b'filename="x.html"\r\nContent-Type: text/html\r\n\r\n'
        + b"<script>1</script>" * 10_000
        + b"\r\n--b--\r\n"
    )
    response = await client.post(
        "/v2/models/pages/predict/?accept=text/html",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert len(await response.read()) == 180_000


async def test_an_active_job_result_is_sandboxed(make_client):
    client = await make_client("--model-name", "pages")
    response = await client.post(
        "/v2/models/pages/predict/",
        params={"accept": "image/svg+xml"},
        headers={"Prefer": "respond-async"},
    )
    assert response.status == 202, await response.text()
    job = await helpers.wait_job(client, (await response.json())["links"]["self"])
    assert job["status"] == "done", job
    response = await client.get(job["links"]["result"])
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    assert response.headers["Content-Security-Policy"] == "sandbox"


async def test_every_answer_says_nosniff(make_client):
    client = await make_client("--model-name", "pages")
    for path in ("/", "/v2/models/", "/swagger.json", "/nowhere", "/readyz"):
        response = await client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path

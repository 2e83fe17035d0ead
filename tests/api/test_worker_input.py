"""Whatever a client sends, reading it never costs a worker: file names no
system call takes, values a model's own field fails on, JSON nested too
deeply, credentials that are not UTF-8. Each is a 4xx (or, for a name, a
clean one), the worker that read it lives on, and no file is left."""

from __future__ import annotations

import json
import os

import pytest

from deepaas.api import keys
from deepaas.api.parser import PARSER
from tests import helpers

BOUNDARY = "w0rker-input"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PREDICT = "/v2/models/wide/predict/"


def part(name: bytes, content: bytes, filename: bytes | None = None) -> bytes:
    head = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        head += b'; filename="' + filename + b'"'
    return head + b"\r\n\r\n" + content


def form(*parts: bytes) -> bytes:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


async def restarts(client) -> int:
    response = await client.get("/readyz")
    body = await response.json()
    return sum(model["restarts"] for model in body["models"].values())


def leftovers(client) -> list[str]:
    """Upload files in the memory directory (spares excepted)."""
    spool = client.app[PARSER].spool
    spares = set(spool.spares()) if spool is not None else set()
    directory = spool.directory if spool is not None else None
    if directory is None:
        return []
    return [
        name
        for name in os.listdir(directory)
        if name.startswith(spool.prefix) and os.path.join(directory, name) not in spares
    ]


@pytest.fixture
async def wide(make_client, tmp_path):
    memory = tmp_path / "memory"
    memory.mkdir()
    return await make_client(
        "--model-name", "wide", "-p", "1", "--upload-memory-dir", str(memory)
    )


# Names as a client may write them, and what the model is given.
FILE_NAMES = [
    (b"a.\x00", "a."),
    (b"a\x00b.png", "ab.png"),
    (b"../../etc/passwd", "passwd"),
    (b"..\\..\\boot.ini", "boot.ini"),
    (b"bell\x07\x1b[31m.txt", "bell[31m.txt"),
    (b"tab\there.png", "tabhere.png"),
    ("\u202etxt.exe".encode(), "txt.exe"),
    (b"..", ""),
    (b"x" * 400 + b".png", "x" * 251 + ".png"),
    ("é" * 200 + ".jpg").encode(),
]
FILE_NAMES[-1] = (FILE_NAMES[-1], "é" * 125 + ".jpg")


@pytest.mark.parametrize("raw,expected", FILE_NAMES)
async def test_a_hostile_file_name_is_made_safe_and_costs_no_worker(
    wide, raw, expected
):
    before = await restarts(wide)
    body = form(part(b"image", b"12345", raw))
    response = await wide.post(
        PREDICT, data=body, headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["predictions"]["files"] == [{"name": expected, "size": 5}]
    assert await restarts(wide) == before
    assert leftovers(wide) == []


async def test_a_hostile_file_name_read_by_the_server_is_made_safe(wide):
    """A body too large to travel to the worker is read by the server."""
    body = form(part(b"image", b"x" * (300 * 1024), b"big.\x00\x01"))
    response = await wide.post(
        PREDICT, data=body, headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["predictions"]["files"] == [{"name": "big.", "size": 300 * 1024}]
    assert leftovers(wide) == []


async def test_spares_survive_a_hostile_name(wide):
    """A spare file taken for an upload with an unusable extension stays
    counted and is not lost in the memory directory."""
    for raw in (b"one.png", b"two.\x00", b"three.png\x00", b"four.png"):
        body = form(part(b"image", b"x" * (300 * 1024), raw))
        response = await wide.post(
            PREDICT, data=body, headers={"Content-Type": CONTENT_TYPE}
        )
        assert response.status == 200, await response.text()
    spool = wide.app[PARSER].spool
    on_disk = {
        os.path.join(spool.directory, n)
        for n in os.listdir(spool.directory)
        if n.startswith(spool.prefix)
    }
    assert on_disk == set(spool.spares())


# Values a declared field fails on, and the argument the 422 names.
BAD_VALUES = [
    ("temperature", "warm"),  # the model's own field raises ValueError
    ("options", "[" * 100_000 + "]" * 100_000),  # JSON nested too deeply
    ("options", "{" * 50 + "}"),
    ("point", '{"x": 1}'),
    ("numbers", "one"),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
async def test_a_value_a_field_fails_on_is_a_422_in_a_form(wide, name, value):
    before = await restarts(wide)
    body = form(part(name.encode(), value.encode()))
    response = await wide.post(
        PREDICT, data=body, headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 422, await response.text()
    answer = await response.json()
    assert name in answer["errors"], answer
    assert await restarts(wide) == before


@pytest.mark.parametrize(
    "value",
    ["warm", 12, None, ["a"], {"x": 1}],
)
async def test_a_value_the_models_field_fails_on_is_a_422_in_json(wide, value):
    before = await restarts(wide)
    response = await wide.post(PREDICT, json={"temperature": value})
    assert response.status == 422, await response.text()
    assert "temperature" in (await response.json())["errors"]
    assert await restarts(wide) == before


async def test_a_large_json_body_the_worker_validates_is_a_422(wide):
    """A large body's arguments are loaded by the worker too."""
    before = await restarts(wide)
    body = {"label": "x" * (300 * 1024), "temperature": {"not": "text"}}
    response = await wide.post(PREDICT, json=body)
    assert response.status == 422, await response.text()
    assert "temperature" in (await response.json())["errors"]
    assert await restarts(wide) == before
    response = await wide.post(PREDICT, json={"temperature": "21C"})
    assert response.status == 200
    assert (await response.json())["predictions"]["temperature"] == 21.0


async def test_a_deeply_nested_json_body_is_a_400(wide):
    body = '{"options": ' + "[" * 200_000 + "]" * 200_000 + "}"
    response = await wide.post(
        PREDICT, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status in (400, 422), await response.text()
    assert "message" in await response.json()


async def test_the_worker_still_answers_after_every_kind_of_bad_input(wide):
    before = await restarts(wide)
    for name, value in BAD_VALUES:
        await wide.post(
            PREDICT,
            data=form(part(name.encode(), value.encode())),
            headers={"Content-Type": CONTENT_TYPE},
        )
    response = await wide.post(PREDICT, json={"numbers": [1, 2], "label": "ok"})
    assert response.status == 200
    assert (await response.json())["predictions"]["numbers"] == [1, 2]
    assert await restarts(wide) == before


# Pre-authentication errors


@pytest.fixture
async def keyed(make_client, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("k" * 32 + " predict alice\n")
    return await make_client("--model-name", "wide", "--api-keys-file", str(keys_file))


@pytest.mark.parametrize(
    "header",
    [
        ("X-API-Key", b"\xff\xfe not utf-8"),
        ("X-API-Key", "é".encode("latin-1")),
        ("Authorization", b"Bearer \xff\xfe.\xff.\xff"),
        ("Authorization", b"Bearer a.b.c"),
    ],
)
async def test_credentials_that_are_not_utf8_are_a_401(keyed, header):
    name, value = header
    status, _, body = await helpers.send_raw(
        keyed.port,
        b"GET /v2/models/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + name.encode()
        + b": "
        + value
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert status == 401, body
    message = json.loads(body)["message"]
    assert "Error" not in message and "codec" not in message


async def test_an_internal_error_names_a_request_id_not_the_exception(
    make_client,
):
    client = await make_client("--model-name", "wide")

    async def broken(request):
        raise KeyError("secret-internal-detail")

    # A route added after the app is built: the failure of our own code.
    client.app.router._frozen = False
    client.app.router.add_get("/broken", broken)
    client.app[keys.ROUTE_ACCESS][
        next(r for r in client.app.router.routes() if r.resource.canonical == "/broken")
    ] = "public"
    response = await client.get("/broken")
    assert response.status == 500
    message = (await response.json())["message"]
    assert "secret-internal-detail" not in message
    assert "KeyError" not in message
    assert response.headers["X-Request-ID"] in message


@pytest.mark.parametrize("charset", ["idna", "punycode", "undefined", "base64"])
@pytest.mark.parametrize("size", [10, 300 * 1024])  # the worker's, the server's
async def test_a_charset_that_cannot_decode_is_a_400(wide, charset, size):
    before = await restarts(wide)
    body = form(
        b'Content-Disposition: form-data; name="label"\r\n'
        + f"Content-Type: text/plain; charset={charset}\r\n\r\n".encode()
        + b"caf\xc3\xa9\xff",
        part(b"image", b"x" * size, b"a.png"),
    )
    response = await wide.post(
        PREDICT, data=body, headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 400, await response.text()
    assert "label" in (await response.json())["message"]
    assert await restarts(wide) == before


@pytest.mark.parametrize("charset", ["idna", "undefined"])
async def test_an_urlencoded_form_in_a_charset_that_cannot_decode_is_a_400(
    wide, charset
):
    response = await wide.post(
        PREDICT,
        data=b"label=caf%C3%A9%FF",
        headers={
            "Content-Type": f"application/x-www-form-urlencoded; charset={charset}"
        },
    )
    assert 400 <= response.status < 500, await response.text()
    assert "message" in await response.json()


async def test_a_webhook_url_of_raw_bytes_is_a_422(make_client):
    client = await make_client("--model-name", "wide", "--webhook-allow", "*")
    status, _, body = await helpers.send_raw(
        client.port,
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Prefer: respond-async\r\n"
        b"Webhook-URL: https://hooks.example.org/\xff\xfe\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert status == 422, body
    assert "printable ASCII" in json.loads(body)["message"]
    assert await (await client.get(PREDICT)).json() == []


async def test_a_repeated_query_argument_is_a_list_only_where_it_takes_several(wide):
    """``numbers`` is a List: each value; ``label`` is not: the first."""
    response = await wide.post(PREDICT + "?numbers=3&label=a&numbers=4&label=b")
    assert response.status == 200, await response.text()
    predictions = (await response.json())["predictions"]
    assert predictions["numbers"] == [3, 4]
    assert predictions["label"] == "a"
    response = await wide.post(PREDICT + "?numbers=5")  # one value: a list of one
    assert (await response.json())["predictions"]["numbers"] == [5]

"""Hostile request bodies: each is refused or read in linear time, and the
server keeps serving."""

from __future__ import annotations

import asyncio
import zlib

import pytest

FILES = "/v2/models/files/predict/"


async def still_serving(client) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.post("/v2/models/files/predict/")
    assert resp.status == 200, await resp.text()


def many_parts(count: int, name: str = "images", filename: str | None = "p") -> bytes:
    """A multipart body of ``count`` one-byte parts, boundary ``b``."""
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    part = f"--b\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n".encode()
    return part * count + b"--b--\r\n"


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


async def test_more_parts_than_allowed_is_413(make_client):
    client = await make_client("--model-name", "files", "--max-parts", "100")
    resp = await client.post(FILES, data=many_parts(101), headers=MULTIPART)
    assert resp.status == 413
    assert "more than 100 multipart parts" in (await resp.json())["message"]
    await still_serving(client)


@pytest.mark.slow  # large bodies
async def test_thousands_of_parts_are_read_in_linear_time(make_client):
    client = await make_client("--model-name", "files", "--max-parts", "0")
    resp = await client.post(FILES, data=many_parts(4000), headers=MULTIPART)
    assert resp.status == 200
    assert len((await resp.json())["predictions"]["images"]) == 4000
    await still_serving(client)


@pytest.mark.slow  # large bodies
async def test_empty_parts_count_toward_the_size_limit(make_client):
    client = await make_client(
        "--model-name", "files", "--max-parts", "0", "--client-max-size", "1048576"
    )
    body = many_parts(40_000, name="x", filename=None).replace(
        b"\r\n\r\nx\r\n", b"\r\n\r\n\r\n"
    )

    async def chunked():  # no Content-Length: the limit is met while reading
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    resp = await client.post(FILES, data=chunked(), headers=MULTIPART)
    assert resp.status == 413
    await still_serving(client)


async def test_a_bogus_charset_in_a_part_is_400(make_client):
    client = await make_client("--model-name", "module-model")
    body = (
        b'--b\r\nContent-Disposition: form-data; name="text"\r\n'
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nbar\r\n--b--\r\n"
    )
    resp = await client.post(
        "/v2/models/module-model/predict/", data=body, headers=MULTIPART
    )
    assert resp.status == 400
    assert "unknown charset: no-such-charset" in (await resp.json())["message"]
    assert (await client.get("/healthz")).status == 200


async def test_multipart_errors_read_cleanly(make_client):
    client = await make_client("--model-name", "module-model")
    resp = await client.post(
        "/v2/models/module-model/predict/",
        data=b"--b\r\nno headers end here",
        headers=MULTIPART,
    )
    assert resp.status == 400
    message = (await resp.json())["message"]
    assert message.startswith("The request body is not valid multipart/form-data")
    assert "400, message" not in message


PREDICT = "/v2/models/module-model/predict/"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"count": 2}', "application/json; charset=no-such", "unknown charset"),
        (
            b"count=2",
            "application/x-www-form-urlencoded; charset=no-such",
            "unknown charset",
        ),
        (b"[" * 100_000, "application/json", "nested too deeply"),
        (b'{"count": ' + b"1" * 5000 + b"}", "application/json", "not valid JSON"),
        (b'{"count": ', "application/json", "not valid JSON"),
    ],
    ids=["json-charset", "form-charset", "deep-json", "huge-integer", "broken-json"],
)
async def test_unreadable_bodies_are_400_quietly(
    make_client, caplog, body, content_type, message
):
    client = await make_client("--model-name", "module-model")
    resp = await client.post(PREDICT, data=body, headers={"Content-Type": content_type})
    assert resp.status == 400
    assert message in (await resp.json())["message"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert (await client.post(PREDICT + "?count=3")).status == 200


async def test_an_integer_beyond_the_digit_limit_in_the_query_is_422(make_client):
    client = await make_client("--model-name", "module-model")
    resp = await client.post(PREDICT + "?count=" + "9" * 5000)
    assert resp.status == 422
    assert "count" in await resp.json()


def gzip_bomb(size: int) -> bytes:
    """A gzip JSON body of ``size`` bytes once inflated, made piecewise."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(b'{"text": "')]
    block = b"x" * (1 << 20)
    for _ in range(size >> 20):
        out.append(compressor.compress(block))
    out.append(compressor.compress(b'"}'))
    out.append(compressor.flush())
    return b"".join(out)


@pytest.mark.slow  # large bodies
async def test_a_gzip_bomb_is_413_once_inflated_past_the_memory_limit(make_client):
    client = await make_client("--model-name", "module-model")  # 16 MiB default
    bomb = gzip_bomb(64 << 20)
    assert len(bomb) < 256 << 10
    resp = await client.post(
        PREDICT,
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 413
    assert "message" in await resp.json()
    assert (await client.post(PREDICT + "?count=3")).status == 200


async def test_a_json_body_past_the_memory_limit_is_413(make_client):
    client = await make_client(
        "--model-name", "module-model", "--max-memory-body", "1048576"
    )
    resp = await client.post(PREDICT, json={"text": "x" * (2 << 20)})
    assert resp.status == 413
    assert (await client.post(PREDICT, json={"count": 2})).status == 200


async def test_in_memory_fields_are_bounded_but_files_are_not(make_client):
    client = await make_client(
        "--model-name", "module-model", "--max-memory-body", "1048576"
    )
    big = b"x" * (2 << 20)
    field = (
        b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\n' + big + b"\r\n"
        b"--b--\r\n"
    )
    resp = await client.post(PREDICT, data=field, headers=MULTIPART)
    assert resp.status == 413
    upload = (
        b'--b\r\nContent-Disposition: form-data; name="data"; filename="a.bin"\r\n'
        b"\r\n" + big + b"\r\n--b--\r\n"
    )
    resp = await client.post(PREDICT, data=upload, headers=MULTIPART)
    assert resp.status == 200
    assert (await resp.json())["predictions"]["file"]["size"] == len(big)


async def test_expect_continue_over_the_limit_is_413_before_continue(make_client):
    client = await make_client(
        "--model-name", "module-model", "--client-max-size", "1000000"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 2000000000\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")
    await still_serving_module_model(client)


async def test_expect_continue_within_the_limit_continues(make_client):
    client = await make_client("--model-name", "module-model")
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        body = b'{"count": 4}'
        writer.write(
            f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 10) == (
            b"HTTP/1.1 100 Continue\r\n"
        )
        await reader.readline()
        writer.write(body)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"count": 4' in answer


async def still_serving_module_model(client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.post(PREDICT + "?count=2")).status == 200


async def test_no_answer_names_the_python_and_aiohttp_versions(make_client):
    """Not the application's answers, nor aiohttp's own error pages for
    requests that never reach it."""
    client = await make_client("--model-name", "minimal")
    for resp in (
        await client.get("/healthz"),
        await client.get("/no/such/path"),
        await client.post(
            "/v2/models/minimal/predict/",
            data=b"{",
            headers={"Content-Type": "application/json"},
        ),
    ):
        assert resp.headers["Server"] == "deepaas", resp.status
    reader, writer = await asyncio.open_connection(
        client.server.host, client.server.port
    )
    writer.write(b"NOT A REQUEST LINE\r\n\r\n")
    head = (await asyncio.wait_for(reader.read(4096), 10)).decode("latin-1")
    writer.close()
    assert head.split(" ", 2)[1] == "400"
    assert "\r\nServer: deepaas\r\n" in head
    assert "Python" not in head and "aiohttp" not in head


@pytest.mark.parametrize("debug", [(), ("--debug",)])
async def test_a_model_exception_answers_its_message_never_its_traceback(
    make_client, debug
):
    client = await make_client("--model-name", "failing", *debug)
    resp = await client.post("/v2/models/failing/predict/?mode=raise")
    assert resp.status == 500
    body = await resp.json()
    assert "the model is unhappy" in body["message"]
    text = await resp.text()
    for leak in ("Traceback", "failing.py", 'File "', "line "):
        assert leak not in text, leak
    started = await client.post("/v2/models/failing/train/?mode=raise")
    uuid = (await started.json())["uuid"]
    for _ in range(600):
        training = await (await client.get(f"/v2/models/failing/train/{uuid}")).json()
        if training["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert training["status"] == "error"
    assert "the model is unhappy" in training["message"]
    assert "Traceback" not in training["message"]
    assert "failing.py" not in training["message"]

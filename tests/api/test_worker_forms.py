"""Small prediction forms are read by the worker that runs the prediction;
every answer (arguments, files, errors, headers) is the one the server gives
when it reads the form itself, as it does with no memory directory."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deepaas.api import keys
from deepaas.api.parser import PARSER
from tests import helpers

BOUNDARY = "form-b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def field(name: str, value: str, content_type: str | None = None) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"\r\n'
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + value.encode()


def file(name: str, filename: str, content: bytes, content_type="image/png") -> bytes:
    head = (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    return head.encode() + content


def form(*parts: bytes) -> bytes:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
NESTED = (
    b'Content-Disposition: form-data; name="inner"\r\n'
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x--"
)

# (name, model, query, body, extra headers)
CASES = [
    (
        "values, a list and a file",
        "module-model",
        "",
        form(
            field("text", "bar"),
            field("count", "3"),
            field("numbers", "1.5"),
            field("numbers", "2.5"),
            file("data", "photo.png", PNG),
        ),
        {},
    ),
    (
        "invalid values",
        "module-model",
        "",
        form(field("count", "99"), field("text", "qux"), field("flag", "maybe")),
        {},
    ),
    (
        "undeclared names",
        "module-model",
        "",
        form(field("zzz", "1"), file("yyy", "y.png", PNG), field("count", "2")),
        {},
    ),
    (
        "undeclared names and an invalid value",
        "module-model",
        "?also=1",
        form(field("zzz", "1"), field("count", "0")),
        {},
    ),
    ("a file sent as a value", "module-model", "", form(field("data", "hi")), {}),
    ("an empty file field", "module-model", "", form(field("data", "")), {}),
    (
        "a value sent as a file",
        "module-model",
        "",
        form(file("count", "c.txt", b"3")),
        {},
    ),
    (
        "two files for one",
        "module-model",
        "",
        form(file("data", "a.png", PNG), file("data", "b.png", PNG)),
        {},
    ),
    (
        "the query string wins",
        "module-model",
        "?count=2&numbers=7",
        form(field("count", "5"), field("ratio", "0.25")),
        {},
    ),
    (
        "an unknown charset",
        "module-model",
        "",
        form(field("text", "bar", "text/plain; charset=no-such-charset")),
        {},
    ),
    ("a nested multipart part", "module-model", "", form(NESTED), {}),
    (
        "a body cut short",
        "module-model",
        "",
        form(field("text", "bar"))[:-12],
        {},
    ),
    (
        "the Accept header chooses the answer",
        "files",
        "",
        form(file("image", "cat.png", PNG)),
        {"Accept": "image/png"},
    ),
    (
        "accept */* in the form reaches the model",
        "files",
        "",
        form(file("image", "cat.png", PNG), field("accept", "*/*")),
        {"Accept": "image/png"},
    ),
    (
        "several files for a list",
        "files",
        "",
        form(*(file("images", f"{i}.png", PNG) for i in range(3))),
        {},
    ),
]


def comparable(value):
    """An answer's JSON without what differs from one worker to another."""
    if isinstance(value, dict):
        return {
            k: comparable(v)
            for k, v in value.items()
            if k not in ("pid", "warmed_in", "path")
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


async def answer(client, model: str, query: str, body: bytes, headers: dict):
    resp = await client.post(
        f"/v2/models/{model}/predict/{query}",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, **headers},
    )
    raw = await resp.read()
    if resp.content_type == "application/json":
        content = comparable(await resp.json())
    else:
        content = raw
    return (
        resp.status,
        resp.headers.get("Content-Type"),
        resp.headers.get("Deepaas-Ignored-Arguments"),
        content,
    )


async def pair(make_client, model: str, *options: str):
    """A server whose workers read small forms, and one that reads them
    itself (no memory directory: nothing travels inside the call)."""
    by_worker = await make_client("--model-name", model, *options)
    by_server = await make_client(
        "--model-name", model, "--upload-memory-dir", "", *options
    )
    assert by_worker.app[PARSER].spool is not None
    assert by_server.app[PARSER].spool is None
    return by_worker, by_server


@pytest.mark.parametrize(
    ("name", "model", "query", "body", "headers"), CASES, ids=[c[0] for c in CASES]
)
async def test_a_form_read_by_the_worker_is_answered_as_by_the_server(
    make_client, name, model, query, body, headers
):
    by_worker, by_server = await pair(make_client, model)
    got = await answer(by_worker, model, query, body, headers)
    expected = await answer(by_server, model, query, body, headers)
    assert got == expected
    assert got[0] in (200, 400, 422)


async def test_strict_arguments_refuse_undeclared_names_alike(make_client):
    by_worker, by_server = await pair(make_client, "module-model", "--strict-arguments")
    body = form(field("zzz", "1"), field("count", "2"))
    got = await answer(by_worker, "module-model", "?yyy=2", body, {})
    assert got == await answer(by_server, "module-model", "?yyy=2", body, {})
    assert got[0] == 422
    assert set(got[3]["errors"]) == {"zzz", "yyy"}


async def test_too_many_parts_are_refused_alike(make_client):
    by_worker, by_server = await pair(make_client, "module-model", "--max-parts", "3")
    body = form(*(field("numbers", str(n)) for n in range(5)))
    got = await answer(by_worker, "module-model", "", body, {})
    assert got == await answer(by_server, "module-model", "", body, {})
    assert got[0] == 413
    assert "--max-parts" in got[3]["message"]


async def test_many_undeclared_names_are_counted_alike(make_client):
    by_worker, by_server = await pair(make_client, "module-model", "--strict-arguments")
    body = form(*(field(f"extra{n}", "1") for n in range(30)))
    got = await answer(by_worker, "module-model", "", body, {})
    assert got == await answer(by_server, "module-model", "", body, {})
    assert "and 10 more" in got[3]["message"]


async def test_the_worker_counts_the_upload_bytes(make_client):
    client = await make_client("--model-name", "module-model")
    body = form(file("data", "photo.png", PNG), field("text", "bar"))
    status, *_ = await answer(client, "module-model", "", body, {})
    assert status == 200
    text = await (await client.get("/metrics")).text()
    uploaded = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "deepaas_upload_bytes_total"
        and sample.labels.get("route") == "/v2/models/module-model/predict"
    ]
    assert uploaded == [len(PNG)]


async def test_a_small_form_waits_for_the_worker_that_reads_it(make_client):
    """The worker reads it: with the only worker busy, even a malformed form
    waits its turn (a JSON body is read, and refused, by the server)."""
    client = await make_client("--model-name", "failing", "-p", "1")
    executor = client.app[keys.MODELS]["failing"].executor
    busy = asyncio.create_task(
        client.post("/v2/models/failing/predict/?mode=sleep&seconds=60")
    )
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    resp = await client.post(
        "/v2/models/failing/predict/",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400  # at once
    malformed = asyncio.create_task(
        client.post(
            "/v2/models/failing/predict/",
            data=form(field("mode", "ok"))[:-12],
            headers={"Content-Type": CONTENT_TYPE},
        )
    )
    assert await helpers.eventually(lambda: executor.queued() == 1)
    busy.cancel()  # its worker is replaced; the next one reads the form
    resp = await malformed
    assert resp.status == 400
    assert "not valid multipart/form-data" in (await resp.json())["message"]


async def test_a_batching_model_reads_each_form_on_its_own(make_client):
    client = await make_client(
        "--model-name", "batcher", "-p", "1", "--max-batch-size", "8",
        "--max-batch-wait-ms", "50",
    )  # fmt: skip
    good = form(field("x", "2"))
    bad = form(field("seconds", "soon"))
    cut = good[:-12]
    responses = await asyncio.gather(
        *(
            client.post(
                "/v2/models/batcher/predict/",
                data=body,
                headers={"Content-Type": CONTENT_TYPE},
            )
            for body in (good, bad, cut, good)
        )
    )
    assert [r.status for r in responses] == [200, 422, 400, 200]


async def test_forms_in_flight_at_once_each_reach_their_own_call(make_client):
    """Each small form travels in memory shared with its worker, in the
    slot its call holds; many at once, sent ahead to busy workers too, each
    reaches its own call whole."""
    client = await make_client("--model-name", "where", "-p", "2")
    sizes = [1, 1000, 65_536, 200_000, 250_000] * 6
    contents = [
        hashlib.sha256(str(n).encode()).digest() * (size // 32 + 1)
        for n, size in enumerate(sizes)
    ]
    responses = await asyncio.gather(
        *(
            client.post(
                "/v2/models/where/predict/",
                data=form(file("data", f"f{n}.bin", content[: sizes[n]])),
                headers={"Content-Type": CONTENT_TYPE},
            )
            for n, content in enumerate(contents)
        )
    )
    answers = [(await r.json())["predictions"] for r in responses]
    assert [r.status for r in responses] == [200] * len(sizes)
    assert [a["sha256"] for a in answers] == [
        hashlib.sha256(content[:size]).hexdigest()
        for content, size in zip(contents, sizes, strict=True)
    ]
    # read by the workers, in memory: not one file written by the server
    assert {a["directory"].split("/")[-1][:15] for a in answers} == {"deepaas-worker-"}
    restarts = (await (await client.get("/readyz")).json())["models"]["where"]
    assert restarts["restarts"] == 0

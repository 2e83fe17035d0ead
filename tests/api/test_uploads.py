"""Where uploaded files go: small predictions to the memory directory, the rest
to disk; the model reads the same bytes either way, and nothing is left but
the few spare memory-backed files the next uploads are written over, which go
when the server stops."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile

import aiohttp
import pytest

from deepaas.api.parser import PARSER
from deepaas.runtime.worker_uploads import SPARES_KEPT
from tests import helpers

PREDICT = "/v2/models/where/predict/"
TRAIN = "/v2/models/where/train/"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """(disk, memory): the temporary directory and a stand-in memory one."""
    disk, memory = tmp_path / "disk", tmp_path / "memory"
    disk.mkdir()
    memory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(disk))
    return disk, memory


def placed(directory: str, root) -> str | None:
    """Where an upload the model saw was put under ``root``: written by the
    server ("server"), by the worker from the call ("worker"), or not there."""
    if directory == str(root):
        return "server"
    parent, name = os.path.split(directory)
    if parent == str(root) and name.startswith("deepaas-worker-"):
        return "worker"
    return None


def files_in(*roots) -> list[str]:
    """The files under ``roots``, the workers' own directories included."""
    return [
        os.path.join(top, name)
        for root in roots
        for top, _, names in os.walk(root)
        for name in names
    ]


def leftovers(client, *roots) -> list[str]:
    """The files under ``roots`` but the server's and the workers' spares."""
    spool = client.app[PARSER].spool
    spares = set(spool.spares()) if spool is not None else set()
    return [
        path
        for path in files_in(*roots)
        if path not in spares and not helpers.is_worker_spare(path)
    ]


def upload(size: int, filename: str = "blob.bin") -> tuple[aiohttp.FormData, str]:
    content = os.urandom(size)
    form = aiohttp.FormData()
    form.add_field("data", content, filename=filename)
    return form, hashlib.sha256(content).hexdigest()


async def predict(client, size: int, filename: str = "blob.bin") -> dict:
    form, digest = upload(size, filename)
    resp = await client.post(PREDICT, data=form)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["predictions"]["size"] == size
    assert body["predictions"]["sha256"] == digest
    return body["predictions"]


async def test_a_small_prediction_upload_is_kept_in_memory(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory)
    )
    # small: inside the call, written by the worker in its memory directory
    assert placed((await predict(client, 100_000))["directory"], memory) == "worker"
    # larger: written by the server to the memory directory
    assert placed((await predict(client, 3_000_000))["directory"], memory) == "server"
    assert leftovers(client, memory, disk) == []
    await client.close()
    assert files_in(memory, disk) == []


async def test_a_larger_one_goes_to_disk(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory),
        "--upload-memory-max", "65536",
    )  # fmt: skip
    assert placed((await predict(client, 60_000))["directory"], memory) == "worker"
    assert placed((await predict(client, 70_000))["directory"], disk) == "server"
    assert leftovers(client, memory, disk) == []


async def test_a_body_of_unknown_length_goes_to_disk(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory)
    )
    content = os.urandom(10_000)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="data"; filename="x"\r\n\r\n'
        + content
        + b"\r\n--b--\r\n"
    )

    async def chunked():  # no Content-Length: the body is sent in chunks
        yield body[:5000]
        yield body[5000:]

    resp = await client.post(
        PREDICT,
        data=chunked(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["predictions"]["directory"] == str(disk)
    assert answer["predictions"]["sha256"] == hashlib.sha256(content).hexdigest()


async def test_trainings_keep_their_uploads_on_disk(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory)
    )
    form, digest = upload(1000)
    resp = await client.post(TRAIN, data=form)
    assert resp.status == 200
    url = f"{TRAIN}{(await resp.json())['uuid']}"

    for _ in range(600):
        done = await (await client.get(url)).json()
        if done["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert done["status"] == "done", done
    assert done["result"]["output"]["directory"] == str(disk)
    assert done["result"]["output"]["sha256"] == digest
    assert await helpers.eventually(lambda: files_in(disk) == [])


async def test_beyond_the_memory_total_uploads_go_to_disk(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory),
        "--upload-memory-total", "150000",
    )  # fmt: skip
    parser = client.app[PARSER]
    assert parser.spool is not None
    # another request holds 100,000 bytes of the total
    assert parser.spool.reserve(100_000)
    assert placed((await predict(client, 60_000))["directory"], disk) == "server"
    parser.spool.release(100_000)
    assert placed((await predict(client, 60_000))["directory"], memory) == "worker"
    assert parser.spool.reserved == 0


async def test_a_memory_directory_that_cannot_be_used_means_disk(
    make_client, dirs, caplog
):
    disk, memory = dirs
    missing = memory / "missing"
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(missing)
    )
    assert "is not a writable directory" in caplog.text
    assert (await predict(client, 1000))["directory"] == str(disk)


async def test_turned_off_with_an_empty_directory(make_client, dirs):
    disk, _ = dirs
    client = await make_client("--model-name", "where", "--upload-memory-dir", "")
    assert client.app[PARSER].spool is None
    assert (await predict(client, 1000))["directory"] == str(disk)


async def test_a_full_memory_directory_moves_the_upload_to_disk(
    make_client, dirs, tiny_tmpfs
):
    disk, _ = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(tiny_tmpfs)
    )
    # the declared length fits the budget, the file system is too small: the
    # worker writes the file on disk instead, and so does the server
    assert placed((await predict(client, 200_000))["directory"], disk) == "worker"
    assert placed((await predict(client, 3_000_000))["directory"], disk) == "server"
    assert placed((await predict(client, 10_000))["directory"], tiny_tmpfs) == "worker"
    assert leftovers(client, tiny_tmpfs, disk) == []


async def test_concurrent_uploads_each_get_their_own_bytes(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "-p", "2", "--upload-memory-dir", str(memory),
        "--upload-memory-total", "500000",
    )  # fmt: skip
    answers = await asyncio.gather(*(predict(client, 100_000) for _ in range(12)))
    assert all(
        placed(a["directory"], memory) == "worker"
        or placed(a["directory"], disk) == "server"
        for a in answers
    )
    assert leftovers(client, memory, disk) == []
    assert client.app[PARSER].spool.reserved == 0


@pytest.mark.parametrize(
    "body, message",
    [
        # the body stops in the middle of the file
        (
            b'--b\r\nContent-Disposition: form-data; name="data"; filename="x"\r\n\r\n'
            b"half a file",
            "Unexpected end of multipart stream",
        ),
        # a part without the header that names it
        (
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
            "Content-Disposition",
        ),
        # a part header line longer than any request header may be
        (
            b"--b\r\nContent-Disposition: form-data; name="
            + b"x" * 9000
            + b"\r\n\r\nx\r\n--b--\r\n",
            "header length",
        ),
        # more header lines than a form part has any use for
        (
            b"--b\r\nContent-Disposition: form-data; name=x\r\n"
            + b"X-Filler: 1\r\n" * 40
            + b"\r\nx\r\n--b--\r\n",
            "header count",
        ),
    ],
    ids=["truncated", "no-disposition", "long-header", "many-headers"],
)
async def test_broken_multipart_bodies_are_400_and_leave_nothing(
    make_client, dirs, body, message
):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory)
    )
    resp = await client.post(
        PREDICT, data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert resp.status == 400
    answer = await resp.json()
    assert answer["message"].startswith(
        "The request body is not valid multipart/form-data: "
    )
    assert message in answer["message"]
    assert leftovers(client, memory, disk) == []
    await predict(client, 10)  # and the server still serves


async def test_a_spare_file_takes_the_next_upload(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory)
    )
    spool = client.app[PARSER].spool
    first = await predict(client, 3_000_000)
    assert placed(first["directory"], memory) == "server"
    assert [os.path.basename(p) for p in spool.spares()] == [first["name"]]
    # the next one is written over it: shorter, so cut to its own length
    second = await predict(client, 2_000_000)
    assert second["name"] == first["name"]
    # with another extension, it is renamed to keep it
    third = await predict(client, 2_500_000, filename="photo.png")
    assert third["name"] == first["name"].replace(".bin", ".png")
    assert [os.path.basename(p) for p in spool.spares()] == [third["name"]]
    assert leftovers(client, memory, disk) == []
    assert spool.reserved == 0 and spool.spare_bytes == 2_500_000
    await client.close()
    assert files_in(memory, disk) == []


async def test_files_of_a_failed_call_are_removed_not_kept(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "failing", "--upload-memory-dir", str(memory)
    )
    form, _ = upload(400_000)
    resp = await client.post("/v2/models/failing/predict/?mode=raise", data=form)
    assert resp.status == 500
    assert client.app[PARSER].spool.spares() == []
    assert files_in(memory, disk) == []


async def test_a_file_the_model_answers_with_is_not_kept(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "echo", "--upload-memory-dir", str(memory)
    )
    for seed in range(3):
        content = bytes([seed]) * 400_000  # written by the server, in memory
        form = aiohttp.FormData()
        form.add_field("image", content, filename="picture.png")
        resp = await client.post("/v2/models/echo/predict/?accept=image/png", data=form)
        assert resp.status == 200
        assert await resp.read() == content
        assert client.app[PARSER].spool.spares() == []
    assert files_in(memory, disk) == []


def worker_spares(root) -> list[str]:
    return [path for path in files_in(root) if helpers.is_worker_spare(path)]


async def test_a_worker_writes_its_next_small_upload_over_a_spare(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory), "-p", "1"
    )
    first = await predict(client, 10_000, "one.png")
    # the path the model was given is gone with its call ...
    assert not os.path.exists(os.path.join(first["directory"], first["name"]))
    assert len(worker_spares(memory)) == 1
    second = await predict(client, 5_000, "two.jpg")
    # ... its file is the next upload's, under a new name with its extension
    assert second["inode"] == first["inode"]
    assert second["name"] != first["name"]
    assert second["name"].endswith(".jpg")
    assert leftovers(client, memory, disk) == []
    await client.close()
    assert files_in(memory, disk) == []


async def test_a_worker_keeps_a_few_spares_at_most(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "files", "--upload-memory-dir", str(memory), "-p", "1"
    )
    form = aiohttp.FormData()
    for index in range(SPARES_KEPT + 3):
        form.add_field("images", b"x" * 100, filename=f"{index}.png")
    resp = await client.post("/v2/models/files/predict/", data=form)
    assert resp.status == 200
    assert len((await resp.json())["predictions"]["images"]) == SPARES_KEPT + 3
    assert len(worker_spares(memory)) == SPARES_KEPT
    assert leftovers(client, memory, disk) == []


async def test_an_upload_the_model_linked_is_never_written_over(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "where", "--upload-memory-dir", str(memory), "-p", "1"
    )
    content = b"keep me" * 100
    form = aiohttp.FormData()
    form.add_field("data", content, filename="a.bin")
    resp = await client.post(f"{PREDICT}?keep=true", data=form)
    assert resp.status == 200
    first = (await resp.json())["predictions"]
    assert worker_spares(memory) == []  # not kept: the model holds a link
    second = await predict(client, len(content))
    assert second["inode"] != first["inode"]
    with open(first["kept"], "rb") as kept:
        assert kept.read() == content

"""Large answers come back through the workers' scratch files and leave
nothing behind; small ones through the socket; the client sees the same
bytes either way."""

from __future__ import annotations

import json
import os
import tempfile

import aiohttp
import pytest

from deepaas.api import keys
from tests.models.testmodels.deepaas_testmodels.outputs import pattern

PREDICT = "/v2/models/outputs/predict/"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """(disk, memory): the temporary directory and a stand-in memory one."""
    disk, memory = tmp_path / "disk", tmp_path / "memory"
    disk.mkdir()
    memory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(disk))
    return disk, memory


def files_in(*roots) -> list[str]:
    return [
        os.path.join(top, name)
        for root in roots
        for top, _, names in os.walk(root)
        for name in names
    ]


def worker_dirs(*roots) -> list[str]:
    return [n for root in roots for n in os.listdir(root) if "deepaas-worker-" in n]


async def test_raw_answers_arrive_whole(make_client, dirs):
    client = await make_client(
        "--model-name", "outputs", "--upload-memory-dir", str(dirs[1]),
        "--upload-memory-max", "1048576",
    )  # fmt: skip
    # through the socket, a memory file and a disk file
    for size in (0, 1000, 64 * 1024, 3_000_000):
        for kind in ("bytes", "bytearray", "memoryview"):
            resp = await client.post(
                f"{PREDICT}?kind={kind}&size={size}&accept=image/png"
            )
            body = await resp.read()
            assert resp.status == 200, (kind, size)
            assert resp.headers["Content-Type"] == "image/png"
            assert int(resp.headers["Content-Length"]) == size
            assert body == pattern(size), (kind, size)
    assert files_in(*dirs) == []


@pytest.mark.parametrize("size", [100, 500_000])
async def test_json_answers_are_the_same_bytes_either_way(make_client, dirs, size):
    client = await make_client(
        "--model-name", "outputs", "--upload-memory-dir", str(dirs[1])
    )
    resp = await client.post(f"{PREDICT}?kind=json&size={size}")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.read()
    expected = {"text": pattern(size).hex()[:size], "size": size}
    assert json.loads(body) == {"status": "OK", "predictions": expected}
    # the small answer came through the socket: the large one is encoded alike
    small = await (await client.post(f"{PREDICT}?kind=json&size=100")).read()
    assert body.replace(expected["text"].encode(), b"T").replace(
        str(size).encode(), b"N"
    ) == small.replace(pattern(100).hex()[:100].encode(), b"T").replace(b"100", b"N")
    assert files_in(*dirs) == []


async def test_a_full_memory_directory_sends_results_from_disk(
    make_client, dirs, tiny_tmpfs
):
    disk, _ = dirs
    client = await make_client(
        "--model-name", "outputs", "--upload-memory-dir", str(tiny_tmpfs)
    )
    resp = await client.post(f"{PREDICT}?size=300000&accept=image/png")
    assert resp.status == 200
    assert await resp.read() == pattern(300_000)
    assert files_in(tiny_tmpfs, disk) == []


@pytest.mark.slow  # waits for a replacement worker
async def test_worker_directories_go_with_their_workers(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "outputs", "-p", "2", "--upload-memory-dir", str(memory)
    )
    assert len(worker_dirs(memory)) == len(worker_dirs(disk)) == 2
    executor = client.app[keys.MODELS]["outputs"].executor
    # a killed worker's directories go; its replacement gets its own
    victim = executor.pids()[0]
    os.kill(victim, 9)
    from tests import helpers

    assert await helpers.eventually(
        lambda: victim not in executor.pids() and executor.health().alive == 2
    )
    assert await helpers.eventually(lambda: len(worker_dirs(memory, disk)) == 4)
    await client.close()
    assert worker_dirs(memory, disk) == []


async def test_a_model_may_answer_with_its_own_small_upload(make_client, dirs):
    disk, memory = dirs
    client = await make_client(
        "--model-name", "echo", "--upload-memory-dir", str(memory)
    )
    content = bytes(range(256)) * 40
    for filename, accept, expected_type in [
        ("picture.png", "image/png", "image/png"),
        ("picture.png", "application/json", None),
    ]:
        form = aiohttp.FormData()
        form.add_field("image", content, filename=filename)
        resp = await client.post(f"/v2/models/echo/predict/?accept={accept}", data=form)
        assert resp.status == 200
        if expected_type is None:
            assert (await resp.json())["predictions"]["size"] == len(content)
        else:
            assert resp.headers["Content-Type"] == expected_type
            assert await resp.read() == content
    assert files_in(*dirs) == []

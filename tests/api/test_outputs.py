"""Answers of moderate size come back through memory the workers share with
the server, larger ones through the workers' scratch files, small ones
through the socket; nothing is left behind, and the client sees the same
bytes whichever way they came, however slowly it reads."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile

import aiohttp
import pytest

from deepaas.api import keys
from deepaas.runtime.results import RESULT_SLOT_SIZE, RESULT_SLOTS
from tests import helpers
from tests.packages.testmodels.deepaas_testmodels.outputs import pattern

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
    """The files under ``roots`` but the workers' spares."""
    return [
        os.path.join(top, name)
        for root in roots
        for top, _, names in os.walk(root)
        for name in names
        if not helpers.is_worker_spare(os.path.join(top, name))
    ]


def worker_dirs(*roots) -> list[str]:
    return [n for root in roots for n in os.listdir(root) if "deepaas-worker-" in n]


async def test_raw_answers_arrive_whole(make_client, dirs):
    memory_max = RESULT_SLOT_SIZE + 500_000
    client = await make_client(
        "--model-name", "outputs", "--upload-memory-dir", str(dirs[1]),
        "--upload-memory-max", str(memory_max),
    )  # fmt: skip
    # through the socket, shared memory, a memory file and a disk file
    for size in (0, 1000, 64 * 1024, 3_000_000, memory_max, memory_max + 1):
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
    size = RESULT_SLOT_SIZE + 1  # a file, not shared memory
    resp = await client.post(f"{PREDICT}?size={size}&accept=image/png")
    assert resp.status == 200
    assert await resp.read() == pattern(size)
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


def result_slots(client) -> list:
    """The result memory of each of the outputs model's workers."""
    executor = client.app[keys.MODELS]["outputs"].executor
    return [w.results for w in executor._workers if w.results is not None]


async def raw_request(client, target: str, rcvbuf: int = 4096):
    """A connection of our own with a small receive buffer, and a request
    sent on it; its reader and writer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(
        sock, (client.server.host, client.server.port)
    )
    reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
    request = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    writer.write(request.encode())
    return reader, writer


async def test_a_slow_reader_keeps_its_answer_while_others_are_served(make_client):
    client = await make_client("--model-name", "outputs", "-p", "1")
    (slots,) = result_slots(client)
    size = 3_000_000
    reader, writer = await raw_request(
        client, f"{PREDICT}?size={size}&seed=5&accept=image/png"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"{size}".encode() in head
    start = await reader.readexactly(50_000)
    # Most of it still waits in the server: its slot stays taken meanwhile,
    # and other answers, made in the other slots, arrive whole.
    assert slots.available == RESULT_SLOTS - 1
    for seed in range(6, 6 + 3 * RESULT_SLOTS):
        resp = await client.post(f"{PREDICT}?size={size}&seed={seed}&accept=image/png")
        assert await resp.read() == pattern(size, seed), seed
    rest = await reader.readexactly(size - len(start))
    assert start + rest == pattern(size, 5)
    writer.close()
    assert await helpers.eventually(lambda: slots.available == RESULT_SLOTS)


async def test_a_client_that_hangs_up_mid_answer_frees_its_slot(make_client):
    client = await make_client("--model-name", "outputs", "-p", "1")
    (slots,) = result_slots(client)
    for seed in range(RESULT_SLOTS + 2):  # more than there are slots
        reader, writer = await raw_request(
            client, f"{PREDICT}?size=3000000&seed={seed}&accept=image/png"
        )
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(10_000)
        writer.transport.abort()
        assert await helpers.eventually(lambda: slots.available == RESULT_SLOTS)
    resp = await client.post(f"{PREDICT}?size=200000&seed=9&accept=image/png")
    assert await resp.read() == pattern(200_000, 9)


async def test_directories_of_workers_of_a_killed_server_are_removed(make_client, dirs):
    disk, memory = dirs
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = memory / f"deepaas-worker-{ended.stdout.strip()}-abcd1234"
    live = disk / f"deepaas-worker-{os.getppid()}-abcd1234"  # a running process
    for directory in (dead, live):
        directory.mkdir()
        (directory / "result-x").write_bytes(b"left")
    await make_client("--model-name", "outputs", "--upload-memory-dir", str(memory))
    assert not dead.exists()
    assert live.exists()

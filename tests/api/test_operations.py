"""Training logs, time limits, and nothing left behind after failures."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile

import aiohttp
import pytest

from deepaas.api import keys
from tests import helpers
from tests.api.test_train import wait_status
from tests.conftest import EXECUTORS

TRAIN = "/v2/models/failing/train/"
PREDICT = "/v2/models/failing/predict/"


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "failing")


@EXECUTORS
class TestTrainingLog:
    async def test_log_holds_prints_logging_and_raw_stderr(self, client, state_dir):
        body = await (await client.post(TRAIN + "?mode=chatty")).json()
        await wait_status(client, TRAIN + body["uuid"])
        resp = await client.get(TRAIN + body["uuid"] + "/log")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
        for expected in ("line 1", "line 3", "a logged warning", "raw stderr bytes"):
            assert expected in text
        assert text.rstrip().endswith("last line")
        assert (state_dir / "logs" / f"{body['uuid']}.log").exists()

    async def test_a_failed_training_log_ends_with_its_traceback(self, client):
        body = await (await client.post(TRAIN + "?mode=raise")).json()
        failed = await wait_status(client, TRAIN + body["uuid"])
        assert failed["status"] == "error"
        text = await (await client.get(TRAIN + body["uuid"] + "/log")).text()
        assert "Traceback (most recent call last)" in text
        assert text.rstrip().endswith("ValueError: the model is unhappy")

    @pytest.mark.slow  # a 32 MB log
    async def test_a_large_log_without_newlines(self, client, state_dir):
        body = await (await client.post(TRAIN + "?mode=ok")).json()
        await wait_status(client, TRAIN + body["uuid"])
        log = state_dir / "logs" / f"{body['uuid']}.log"
        # a progress bar: 32 MB redrawn with carriage returns only
        bar = b"".join(b"\rstep %7d" % n for n in range(2_500_000))
        log.write_bytes(bar)
        resp = await client.get(TRAIN + body["uuid"] + "/log?tail=2")
        assert await resp.text() == "step 2499998\rstep 2499999"
        whole = await client.get(TRAIN + body["uuid"] + "/log")
        assert whole.headers["Content-Length"] == str(len(bar))
        assert await whole.read() == bar
        # no line end at all: the tail is the end of the file, bounded
        log.write_bytes(b"x" * (9 << 20))
        resp = await client.get(TRAIN + body["uuid"] + "/log?tail=1")
        assert len(await resp.read()) == 4 << 20
        assert (await client.get("/healthz")).status == 200

    async def test_a_log_over_its_cap_keeps_its_end_and_says_it_was_cut(
        self, make_client, state_dir
    ):
        client = await make_client(
            "--model-name", "failing", "--training-log-max-bytes", "65536"
        )
        # 4,000 lines of 50 bytes over 3 s: cut while it runs, and at the end
        body = await (await client.post(TRAIN + "?mode=flood&seconds=3")).json()
        done = await wait_status(client, TRAIN + body["uuid"])
        assert done["status"] == "done", done
        text = await (await client.get(TRAIN + body["uuid"] + "/log")).text()
        notice, *lines = text.splitlines()
        assert notice.startswith("[deepaas: the first ") and "cut" in notice
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(numbers[0], 4001))  # the end, whole lines
        assert len(lines) * 50 <= 65536 + 50 * 100  # (one burst may follow a cut)
        tail = await (await client.get(TRAIN + body["uuid"] + "/log?tail=2")).text()
        assert tail == lines[-2] + "\n" + lines[-1] + "\n"
        everything = TRAIN + body["uuid"] + "/log?tail=100000"
        assert await (await client.get(everything)).text() == text
        log = state_dir / "logs" / f"{body['uuid']}.log"
        assert log.stat().st_blocks * 512 <= 65536 + 100 * 50 + 2 * 4096

    async def test_tail(self, client):
        body = await (await client.post(TRAIN + "?mode=chatty")).json()
        await wait_status(client, TRAIN + body["uuid"])
        resp = await client.get(TRAIN + body["uuid"] + "/log?tail=1")
        assert await resp.text() == "last line\n"

    async def test_log_grows_while_training_runs(self, client):
        body = await (await client.post(TRAIN + "?mode=chatty&seconds=30")).json()
        path = TRAIN + body["uuid"] + "/log"

        async def has_lines() -> bool:
            return "line 3" in await (await client.get(path)).text()

        for _ in range(200):
            if await has_lines():
                break
            await asyncio.sleep(0.05)
        assert await has_lines()
        status = await (await client.get(TRAIN + body["uuid"])).json()
        assert status["status"] == "running"
        await client.delete(TRAIN + body["uuid"])

    @pytest.mark.parametrize("tail", ["0", "-1", "many"])
    async def test_bad_tail_is_422(self, client, tail):
        body = await (await client.post(TRAIN)).json()
        resp = await client.get(TRAIN + body["uuid"] + f"/log?tail={tail}")
        assert resp.status == 422
        assert "tail" in (await resp.json())["errors"]

    async def test_unknown_training_log_is_404(self, client):
        resp = await client.get(TRAIN + "f" * 32 + "/log")
        assert resp.status == 404

    async def test_delete_removes_the_log(self, client, state_dir):
        body = await (await client.post(TRAIN + "?mode=chatty")).json()
        await wait_status(client, TRAIN + body["uuid"])
        await client.delete(TRAIN + body["uuid"])
        assert not (state_dir / "logs" / f"{body['uuid']}.log").exists()


@EXECUTORS
async def test_slow_predict_is_504_and_its_worker_replaced(make_client):
    client = await make_client("--model-name", "failing", "--predict-timeout", "0.5")
    first = await (await client.post(PREDICT)).json()
    resp = await client.post(PREDICT + "?mode=sleep&seconds=30")
    assert resp.status == 504
    assert "0.5 seconds" in (await resp.json())["message"]
    after = await (await client.post(PREDICT)).json()
    assert after["predictions"]["pid"] != first["predictions"]["pid"]


@EXECUTORS
@pytest.mark.slow  # waits out real time
async def test_no_free_worker_is_503_with_retry_after(make_client):
    client = await make_client("--model-name", "failing", "--queue-timeout", "0.3")
    busy = asyncio.ensure_future(client.post(PREDICT + "?mode=sleep&seconds=2"))
    executor = client.app[keys.MODELS]["failing"].executor
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    resp = await client.post(PREDICT)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "busy" in (await resp.json())["message"]
    assert (await busy).status == 200


@EXECUTORS
@pytest.mark.slow  # seven failures, each replacing a worker
async def test_nothing_left_behind_after_any_failure(
    make_client, monkeypatch, tmp_path
):
    disk, memory = tmp_path / "tmp", tmp_path / "shm"
    disk.mkdir()
    memory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(disk))

    def left() -> list[str]:
        """Files under either directory (the workers' own directories for
        their results stay while they live, with no file in them between
        calls but the spares they write their next small uploads over)."""
        return [
            os.path.join(top, name)
            for root in (disk, memory)
            for top, _, names in os.walk(root)
            for name in names
            if not helpers.is_worker_spare(os.path.join(top, name))
        ]

    # Small uploads go to the memory directory, large ones to disk.
    client = await make_client(
        "--model-name", "failing", "-p", "2", "--predict-timeout", "1",
        "--upload-memory-dir", str(memory), "--upload-memory-max", "4096",
    )  # fmt: skip

    async def predict(mode: str, seconds: float = 0, size: int = 0) -> int:
        form = aiohttp.FormData()
        form.add_field("data", os.urandom(2048), filename="x.bin")
        form.add_field("more", os.urandom(size), filename="y.bin")
        resp = await client.post(f"{PREDICT}?mode={mode}&seconds={seconds}", data=form)
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(
        predict("ok"),
        predict("raise", size=8192),
        predict("exit", size=8192),
        predict("segfault"),
        predict("sleep", 10),
        predict("http"),
        predict("ok"),
    )
    assert sorted(statuses) == [200, 200, 429, 500, 500, 500, 504]
    # a client that goes away in the middle of an upload
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        "--b\r\nContent-Disposition: form-data; name=data; filename=a\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", client.port)) as raw:
        raw.sendall(head.encode() + b"x" * 5000)
        # hang up once the server has started writing the upload
        assert await helpers.eventually(lambda: left() != [])
    executor = client.app[keys.MODELS]["failing"].executor
    assert await helpers.eventually(lambda: executor.health().alive == 2)
    assert await helpers.eventually(lambda: left() == [], timeout=5)
    assert executor.health().busy == 0
    assert await predict("ok") == 200

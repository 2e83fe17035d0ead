"""The server's state is its user's alone: the database (and its WAL and
shared-memory files), training logs and job results are 0600 in 0700
directories, whatever the umask."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from deepaas import private
from tests import helpers


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


async def test_state_is_private_whatever_the_umask(make_client, state_dir, open_umask):
    client = await make_client("--model-name", "module-model")
    response = await client.post("/v2/models/module-model/train/?epochs=1")
    assert response.status == 200, await response.text()
    uuid = (await response.json())["uuid"]
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        training = await (
            await client.get(f"/v2/models/module-model/train/{uuid}")
        ).json()
        if training["status"] != "running":
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    response = await client.post(
        "/v2/models/module-model/predict/", headers={"Prefer": "respond-async"}
    )
    job = await helpers.wait_job(client, (await response.json())["links"]["self"])
    assert job["status"] == "done"

    files = [p for p in state_dir.rglob("*") if p.is_file()]
    directories = [state_dir, *(p for p in state_dir.rglob("*") if p.is_dir())]
    names = {p.name for p in files}
    assert "trainings.sqlite3" in names and "trainings.sqlite3-wal" in names
    assert any(p.parent.name == "logs" for p in files)
    assert any(p.parent.name == "jobs" for p in files)
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    assert {str(p): mode(p) for p in directories} == {
        str(p): 0o700 for p in directories
    }


def test_an_open_state_directory_is_closed_up(tmp_path, open_umask):
    directory = tmp_path / "state"
    directory.mkdir(mode=0o777)
    database = directory / "trainings.sqlite3"
    database.write_bytes(b"")
    database.chmod(0o666)
    private.private_directory(str(directory))
    private.private_file(str(database))
    assert mode(directory) == 0o700
    assert mode(database) == 0o600


def test_open_private_creates_0600(tmp_path, open_umask):
    fd = private.open_private(str(tmp_path / "result"), os.O_WRONLY)
    os.close(fd)
    assert mode(tmp_path / "result") == 0o600

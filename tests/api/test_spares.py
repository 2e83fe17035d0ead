"""Spare memory-backed upload files, used directly: only files of ours that
nobody else has are kept, within their bounds, and they go in time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepaas.api import uploads
from deepaas.api.uploads import MemorySpool, Uploads


@pytest.fixture
def spool(tmp_path):
    return MemorySpool(str(tmp_path), max_request=10_000_000, total=40_000_000)


def written(spool: MemorySpool, size: int, name: str = "x.bin") -> Uploads:
    """A request's upload of ``size`` bytes, written to the spool and done
    with (its worker answered)."""
    request = Uploads(spool, expected=size + 200)
    fd, path = request.create(name)
    os.write(fd, b"u" * size)
    request.closed(path, fd)
    os.close(fd)
    request.done_with()
    return request


def test_a_file_of_ours_is_kept_and_written_over(spool):
    first = written(spool, 1000)
    (path,) = first.paths
    first.cleanup()
    assert spool.spares() == [path] and spool.spare_bytes == 1000
    second = Uploads(spool, expected=600)
    fd, again = second.create("y.bin")
    assert again == path and spool.spares() == []
    os.write(fd, b"v" * 500)
    os.ftruncate(fd, 500)
    os.close(fd)
    with open(again, "rb") as f:
        assert f.read() == b"v" * 500


def test_the_spare_nearest_in_size_is_taken(spool):
    requests = [written(spool, size, f"f{size}.bin") for size in (1000, 50_000, 9000)]
    for request in requests:
        request.cleanup()
    fd, path = spool.take_spare(".bin", 8000)
    os.close(fd)
    assert os.path.basename(path).startswith(spool.prefix)
    assert os.path.getsize(path) == 9000


@pytest.mark.parametrize("change", ["link", "replace", "symlink", "rename"])
def test_a_file_someone_else_has_is_removed(spool, tmp_path, change):
    request = written(spool, 1000)
    (path,) = request.paths
    if change == "link":
        os.link(path, tmp_path / "kept")
    elif change == "replace":
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(b"theirs")
    elif change == "symlink":
        os.unlink(path)
        os.symlink(tmp_path / "elsewhere", path)
    else:
        os.rename(path, tmp_path / "moved")
    request.cleanup()
    assert spool.spares() == []
    assert not os.path.lexists(path)


def test_files_of_a_call_not_done_with_are_removed(spool):
    request = Uploads(spool, expected=1000)
    fd, path = request.create("x.bin")
    os.close(fd)
    request.cleanup()  # never done_with: the call was cut short
    assert spool.spares() == [] and not os.path.exists(path)


def test_spares_are_bounded_in_number_and_bytes(spool):
    requests = [written(spool, 100) for _ in range(uploads.SPARES_MAX + 3)]
    for request in requests:
        request.cleanup()
    assert len(spool.spares()) == uploads.SPARES_MAX
    # a quarter of the total at most
    big = written(spool, spool.total // uploads.SPARES_SHARE)
    big.cleanup()
    assert spool.spare_bytes <= spool.total // uploads.SPARES_SHARE
    assert all(os.path.exists(p) for p in spool.spares())


def test_a_request_that_needs_their_room_removes_spares(tmp_path):
    spool = MemorySpool(str(tmp_path), max_request=20_000_000, total=20_000_000)
    request = written(spool, 4_000_000)
    (path,) = request.paths
    request.cleanup()
    assert spool.spares() == [path]
    assert spool.reserve(17_000_000)  # only without the spare
    assert spool.spares() == [] and not os.path.exists(path)


def test_unused_spares_expire_and_go_when_the_server_stops(spool, monkeypatch):
    request = written(spool, 1000)
    (old,) = request.paths
    request.cleanup()
    monkeypatch.setattr(uploads, "SPARE_IDLE", 0.0)
    spool.expire()
    assert spool.spares() == [] and not os.path.exists(old)
    monkeypatch.setattr(uploads, "SPARE_IDLE", 60.0)
    request = written(spool, 1000)
    (kept,) = request.paths
    request.cleanup()
    spool.close()
    assert spool.spares() == [] and not os.path.exists(kept)


def test_files_of_servers_that_were_killed_are_swept(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"{uploads.PREFIX}{ended.stdout.strip()}-abcd1234.png"
    ours = tmp_path / f"{uploads.PREFIX}{os.getpid()}-abcd1234.png"
    foreign = tmp_path / f"{uploads.PREFIX}abcd1234.png"  # not named by a pid
    for path in (dead, ours, foreign):
        path.write_bytes(b"x")
    assert MemorySpool.from_options(str(tmp_path), 1000, 1000) is not None
    assert not dead.exists() and ours.exists() and foreign.exists()


def test_a_spare_is_never_renamed_over_a_file_already_there(spool, tmp_path):
    request = written(spool, 1000, "x.bin")
    (path,) = request.paths
    request.cleanup()
    theirs = path[: -len(".bin")] + ".png"
    with open(theirs, "wb") as f:
        f.write(b"theirs")
    assert spool.take_spare(".png", 1000) is None  # not usable: a new file then
    with open(theirs, "rb") as f:
        assert f.read() == b"theirs"
    assert spool.spares() == [] and not os.path.exists(path)

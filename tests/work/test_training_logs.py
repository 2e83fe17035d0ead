"""Training logs held to a size cap while a writer keeps appending."""

from __future__ import annotations

import os

from deepaas.work.training_logs import LogCap, open_log


def append(path, first: int, count: int) -> None:
    """Lines ``first`` .. ``first + count - 1``, as a worker writes them."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for n in range(first, first + count):
            os.write(fd, f"line {n:06d} {'x' * 37}\n".encode())
    finally:
        os.close(fd)


def read_kept(path) -> tuple[bytes, list[int]]:
    log = open_log(str(path))
    try:
        rest = log.file.read()
    finally:
        log.close()
    numbers = [int(line.split()[1]) for line in rest.decode().splitlines()]
    return log.notice, numbers


def test_the_oldest_output_is_dropped_and_the_rest_kept_in_order(tmp_path):
    path = tmp_path / "t.log"
    cap = LogCap(str(path), 64 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # held open
    os.close(fd)
    for burst in range(20):  # 20 x 200 lines x 50 bytes = 200 KB
        append(path, burst * 200 + 1, 200)
        cap.enforce()
    notice, numbers = read_kept(path)
    assert numbers == list(range(numbers[0], 4001))  # whole lines, none lost
    kept = len(numbers) * 50
    assert 54 * 1024 < kept <= 64 * 1024
    assert notice.startswith(b"[deepaas: the first ")
    assert f"first {(numbers[0] - 1) * 50} bytes" in notice.decode()
    # the disk it takes is the cap, not what was written
    assert os.stat(path).st_blocks * 512 <= 64 * 1024 + 2 * 4096
    assert os.stat(path).st_size == 4000 * 50  # offsets are as written
    # and the writer carries on where it was
    append(path, 4001, 10)
    assert read_kept(path)[1][-11:] == list(range(4000, 4011))


def test_a_log_within_the_cap_is_untouched(tmp_path):
    path = tmp_path / "t.log"
    append(path, 1, 100)
    LogCap(str(path), 64 * 1024).enforce()
    notice, numbers = read_kept(path)
    assert notice == b"" and numbers == list(range(1, 101))
    LogCap(str(tmp_path / "none.log"), 10).enforce()  # no log yet: nothing


def test_without_holes_the_log_is_rewritten_as_its_tail(tmp_path):
    """What happens on a filesystem that cannot punch holes."""
    path = tmp_path / "t.log"
    cap = LogCap(str(path), 10_000, punching=False)
    append(path, 1, 1000)  # 50,000 bytes
    cap.enforce()
    text = path.read_bytes().decode()
    first, rest = text.split("\n", 1)
    assert first.startswith("[deepaas: the first ") and "cut" in first
    numbers = [int(line.split()[1]) for line in rest.splitlines()]
    assert numbers == list(range(901, 1001))  # the last 5,000 bytes
    assert os.stat(path).st_size < 10_000
    append(path, 1001, 150)
    cap.enforce()
    numbers = [int(x.split()[1]) for x in path.read_text().splitlines()[1:]]
    assert numbers == list(range(numbers[0], 1151)) and numbers[0] > 901

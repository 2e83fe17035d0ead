"""What the benchmark scripts share: a deepaas-run on loopback and /proc readings."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


class TreeCPU:
    """The CPU time each process of a tree has spent, sampled until stopped:
    a process that ends is counted up to its last sample, one that starts is
    counted from zero."""

    def __init__(self, root: int, members: list[int]) -> None:
        self.root = root
        self.start = {pid: cpu_seconds(pid) for pid in members}
        self.last = dict(self.start)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        stopping = False
        while not stopping:
            stopping = self.done.wait(0.2)  # a last look once told to stop
            for pid in [self.root, *descendants(self.root)]:
                now = cpu_seconds(pid)
                if now >= self.last.get(pid, 0.0):
                    self.last[pid] = now

    def stop(self) -> dict[int, float]:
        """CPU seconds per process since the start."""
        self.done.set()
        self.thread.join()
        return {pid: t - self.start.get(pid, 0.0) for pid, t in self.last.items()}


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent == frontier[-1]]
        frontier.pop()
        found += kids
        frontier += kids
    return found


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def deepaas_run_path() -> str:
    return shutil.which("deepaas-run") or os.path.join(
        os.path.dirname(sys.executable), "deepaas-run"
    )


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"server not ready at {url} after {timeout}s")


def worker_state(metrics: str) -> tuple[int, int]:
    """(workers deepaas wants but has not started, workers it has replaced so
    far), from its /metrics."""
    with urllib.request.urlopen(metrics, timeout=30) as response:
        lines = response.read().decode().splitlines()

    def total(prefix: str) -> int:
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in lines
            if line.startswith(prefix)
        )

    return total("deepaas_workers_missing{"), total("deepaas_worker_restarts_total{")


def wait_workers_settled(metrics: str, timeout: float = 60) -> None:
    """Return once deepaas (its ``metrics`` URL) has every worker started and
    replaced none since the last look.

    deepaas replaces the worker of a call whose client hung up, as wrk's
    connections do when a load ends; a load measured right after another
    would count the replacement's start-up as its own.
    """
    deadline = time.monotonic() + timeout
    seen = None
    while (state := worker_state(metrics)) != seen or state[0]:
        if time.monotonic() > deadline:
            raise SystemExit(f"{metrics}: workers not settled after {timeout} s")
        seen = state
        time.sleep(0.1)


def start_server(
    args: list[str],
    env: dict[str, str] | None = None,
    executable: str | None = None,
    log_args: tuple[str, ...] = ("--log-level", "WARNING"),
    ready_path: str = "/readyz",
) -> tuple[subprocess.Popen[bytes], str]:
    """A deepaas-run on a free loopback port, ready; and its base URL.

    ``executable`` is another installation's deepaas-run (e.g. upstream's);
    ``ready_path`` answers 200 once the server is ready for calls. It runs in
    the temporary directory, never in this repository: a worker of an earlier
    commit, started as ``python -c``, would import the ``deepaas`` of its
    working directory instead of its own.
    """
    port = free_port()
    server = subprocess.Popen(
        [executable or deepaas_run_path(), "--listen-ip", "127.0.0.1",
         "--listen-port", str(port), *log_args, *args],
        env=env,
        cwd=(env or os.environ).get("TMPDIR") or tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(base + ready_path))
    except BaseException:
        server.kill()
        raise
    return server, base


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop a server as its operator would (SIGTERM), killing it if it does
    not end within a minute."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def drive(
    method: str,
    url: str,
    requests: int,
    concurrency: int,
    max_seconds: float,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """A bounded load by ``concurrency`` clients: at most ``requests`` calls and
    ``max_seconds``. Requests/s, latency percentiles and the non-200 count."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = requests
    deadline = time.monotonic() + max_seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            start = time.perf_counter()
            async with session.request(method, url, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "non_200": sum(n for s, n in statuses.items() if s != 200),
    }


WRK_BODY = """\
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.body = f:read("*all")
f:close()
"""


def wrk_load(
    method: str,
    url: str,
    concurrency: int,
    seconds: float,
    scratch: str,
    *,
    body_file: str | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[float, float]:
    """(requests/s, p50 latency in ms) measured by wrk for ``seconds``; the
    body, if any, is the content of ``body_file``. Anything but 2xx stops the
    run."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
               "--latency", url]  # fmt: skip
    env = dict(os.environ)
    if method != "GET" or headers:
        key = repr((method, body_file, content_type, headers)).encode()
        script = os.path.join(scratch, f"wrk-{zlib.crc32(key)}.lua")
        lines = [f'wrk.method = "{method}"']
        for name, value in (headers or {}).items():
            lines.append(f'wrk.headers["{name}"] = "{value}"')
        if body_file:
            lines.append(WRK_BODY)
            env["WRK_BODY_FILE"] = body_file
        if content_type:
            lines.append(f'wrk.headers["Content-Type"] = "{content_type}"')
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        command[1:1] = ["-s", script]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env=env
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{method} {url}: non-2xx answers\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    if found is None or latency is None:
        raise SystemExit(f"{method} {url}: wrk said\n{out}")
    value, unit = latency.groups()
    p50_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return float(found.group(1)), p50_ms

"""Soak a real deepaas-run with a bounded mix of good and bad traffic.

Sends --requests requests at --concurrency to a server on 127.0.0.1 serving the
test model ``failing`` (installed from tests/packages into a temporary directory):
good predicts (some with a file upload), bad arguments, model exceptions,
worker deaths, slow predicts cut by --predict-timeout, trainings,
asynchronous predictions (Prefer: respond-async) and clients following a
job's event stream to its end. Then it prints counts by kind and status,
requests lost (no answer or an unexpected status: must be 0), trainings and
asynchronous jobs not done, upload temp files left behind (must be
0), the worker count, and the server's process-tree RSS at start and end.

With --hostile, hostile clients run beside that load until it ends: headers
that trickle in, clients that hang up mid-call and mid-upload, uploads of
thousands of parts, gzip bombs, and idle connections held open; a probe times
/healthz throughout. It then also prints what the hostile clients got, the
/healthz latency, and the server tree's open file descriptors at start and end.

    python benchmarks/soak.py --requests 50000 --concurrency 32
    python benchmarks/soak.py --requests 20000 --concurrency 16 --hostile
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from common import descendants, start_server, tree_rss_mib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from deepaas.runtime.worker_uploads import SPARES_KEPT  # noqa: E402
from tests.helpers import install_model_packages, is_worker_spare  # noqa: E402

# kind: (share of requests, expected status)
MIX = {
    "predict": (0.65, 200),
    "async_job": (0.03, 202),  # Prefer: respond-async, half with a file
    "subscriber": (0.02, 200),  # follows a job's event stream to its end
    "predict_file": (0.10, 200),
    "bad_args": (0.08, 422),
    "model_error": (0.08, 500),
    "slow": (0.002, 504),
    "worker_death": (0.002, 500),
    "train": (0.036, 200),
}


def request_for(kind: str, base: str) -> tuple[str, str, aiohttp.FormData | None]:
    predict = f"{base}/v2/models/failing/predict/"
    if kind == "predict":
        return "POST", predict + "?mode=ok", None
    if kind == "predict_file":
        form = aiohttp.FormData()
        form.add_field("data", os.urandom(4096), filename="sample.bin")
        return "POST", predict + "?mode=ok", form
    if kind == "bad_args":
        return "POST", predict + "?seconds=not-a-number", None
    if kind == "model_error":
        return "POST", predict + "?mode=raise", None
    if kind == "slow":
        return "POST", predict + "?mode=sleep&seconds=30", None
    if kind == "worker_death":
        return "POST", predict + "?mode=exit", None
    if kind == "async_job":
        form = None
        if random.random() < 0.5:
            form = aiohttp.FormData()
            form.add_field("data", os.urandom(4096), filename="sample.bin")
        return "POST", predict + "?mode=sleep&seconds=0.05", form
    return "POST", f"{base}/v2/models/failing/train/?mode=ok", None


async def follow(session: aiohttp.ClientSession, url: str) -> int | str:
    """Read a job's event stream to its end: 200 when it ended with the
    job's result, else what went wrong."""
    async with session.get(url) as resp:
        if resp.status != 200:
            return resp.status
        last = ""
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("event: "):
                last = line
        return 200 if last == "event: result" else f"ended at {last or 'nothing'}"


async def soak(
    base: str, requests: int, concurrency: int, deadline: float, seed: int
) -> tuple[collections.Counter[tuple[str, int | str]], int, list[str]]:
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=[w for w, _ in MIX.values()], k=requests)
    counts: collections.Counter[tuple[str, int | str]] = collections.Counter()
    trainings: list[str] = []
    jobs: list[str] = []  # job URLs
    lost = 0
    queue = iter(kinds)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal lost
        for kind in queue:
            if time.monotonic() > deadline:
                return
            method, url, data = request_for(
                "async_job" if kind == "subscriber" else kind, base
            )
            headers = {"Prefer": "respond-async"} if kind in ASYNC_KINDS else {}
            try:
                async with session.request(
                    method, url, data=data, headers=headers
                ) as resp:
                    body = await resp.json()
                    status: int | str = resp.status
                    if kind == "train" and resp.status == 200:
                        trainings.append(body["uuid"])
                    if kind in ASYNC_KINDS and resp.status == 202:
                        jobs.append(base + resp.headers["Location"])
                if kind == "subscriber" and status == 202:
                    status = await follow(session, jobs[-1] + "/events")
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                status = type(exc).__name__
            counts[(kind, status)] += 1
            if status != MIX[kind][1]:
                lost += 1

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return counts, lost, trainings, jobs


ASYNC_KINDS = ("async_job", "subscriber")


async def jobs_not_done(jobs: list[str], timeout: float) -> int:
    """How many asynchronous predictions have not ended "done" in time."""
    deadline = time.monotonic() + timeout
    left = list(jobs)
    async with aiohttp.ClientSession() as session:
        while left and time.monotonic() < deadline:
            still = []
            for url in left:
                async with session.get(url) as resp:
                    if (await resp.json()).get("status") == "running":
                        still.append(url)
            left = still
            if left:
                await asyncio.sleep(0.5)
        bad = len(left)
        for url in jobs:
            if url not in left:
                async with session.get(url) as resp:
                    bad += (await resp.json()).get("status") != "done"
    return bad


HOSTILE_SERVER_ARGS = (
    "--header-timeout", "3", "--body-timeout", "3", "--keepalive-timeout", "5",
)  # fmt: skip


async def hostile(
    host: str, port: int, stop: asyncio.Event
) -> collections.Counter[tuple[str, str]]:
    """Hostile clients, over and over until ``stop``; what each one got."""
    got: collections.Counter[tuple[str, str]] = collections.Counter()
    predict = "/v2/models/failing/predict/"

    async def exchange(kind: str, data: bytes, *, hang_up_after: float | None = None,
                       trickle: bool = False) -> None:  # fmt: skip
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            got[(kind, type(exc).__name__)] += 1
            return
        try:
            if trickle:
                writer.write(data)
                for _ in range(20):  # a byte a second, well past the limit
                    await asyncio.sleep(1)
                    writer.write(b"X")
                    await writer.drain()
            else:
                writer.write(data)
                await writer.drain()
            if hang_up_after is not None:
                await asyncio.sleep(hang_up_after)
                got[(kind, "hung up")] += 1
                return
            line = await asyncio.wait_for(reader.readline(), 30)
            got[(kind, line.split(b" ")[1].decode() if line else "closed")] += 1
        except (OSError, TimeoutError, IndexError) as exc:
            got[(kind, type(exc).__name__)] += 1
        finally:
            writer.close()

    def post(path: str, headers: str, body: bytes) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    parts = (
        b"".join(
            b'--b\r\nContent-Disposition: form-data; name="data"; '
            b'filename="p"\r\n\r\nx\r\n'
            for _ in range(3000)
        )
        + b"--b--\r\n"
    )
    bomb = gzip.compress(b'{"mode": "' + b"x" * (64 << 20) + b'"}', 9)
    multipart = "Content-Type: multipart/form-data; boundary=b\r\n"
    upload_head = post(predict, multipart, b"x" * 200_000)[:-150_000]

    async def loop(
        kind: str, make: Callable[[], Awaitable[None]], pause: float
    ) -> None:
        while not stop.is_set():
            await make()
            await asyncio.sleep(pause)

    async def idle_connections() -> None:
        held = []
        while not stop.is_set():
            while len(held) < 50:
                try:
                    held.append(await asyncio.open_connection(host, port))
                except OSError:
                    got[("idle connection", "refused")] += 1
                    break
            await asyncio.sleep(1)
            for reader, writer in list(held):
                if reader.at_eof():
                    got[("idle connection", "closed by the server")] += 1
                    writer.close()
                    held.remove((reader, writer))
        for _, writer in held:
            writer.close()

    await asyncio.gather(
        *(loop("slow headers", lambda: exchange(
            "slow headers", f"POST {predict} HTTP/1.1\r\nHost: x\r\n".encode(),
            trickle=True), 0) for _ in range(10)),
        loop("hang-up mid-call", lambda: exchange(
            "hang-up mid-call", post(predict + "?mode=sleep&seconds=1", "", b""),
            hang_up_after=0.2), 0.2),
        loop("hang-up mid-upload", lambda: exchange(
            "hang-up mid-upload", upload_head, hang_up_after=0.1), 0.2),
        loop("3000-part upload", lambda: exchange(
            "3000-part upload", post(predict, multipart, parts)), 0.5),
        loop("gzip bomb", lambda: exchange(
            "gzip bomb", post(predict, "Content-Type: application/json\r\n"
                              "Content-Encoding: gzip\r\n", bomb)), 0.5),
        idle_connections(),
    )  # fmt: skip
    return got


async def probe_healthz(base: str, stop: asyncio.Event) -> list[float]:
    """/healthz latencies, in milliseconds, every 50 ms until ``stop``."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(f"{base}/healthz") as resp:
                await resp.read()
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    return latencies


def open_fds(pid: int) -> int:
    """File descriptors open in a process and its descendants."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return total


async def soak_with_hostile_clients(
    base: str, args: argparse.Namespace, deadline: float
) -> tuple[Any, collections.Counter[tuple[str, str]], list[float]]:
    url = yarl_free_split(base)
    stop = asyncio.Event()
    hostile_task = asyncio.ensure_future(hostile(url[0], url[1], stop))
    probe_task = asyncio.ensure_future(probe_healthz(base, stop))
    try:
        normal = await soak(base, args.requests, args.concurrency, deadline, args.seed)
    finally:
        stop.set()
    return normal, await hostile_task, await probe_task


def yarl_free_split(base: str) -> tuple[str, int]:
    host, _, port = base.removeprefix("http://").partition(":")
    return host, int(port)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def trainings_not_done(base: str, uuids: list[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"{base}/v2/models/failing/train/"
            async with session.get(url) as resp:
                listed = {t["uuid"]: t["status"] for t in await resp.json()}
            pending = [u for u in uuids if listed.get(u) != "done"]
            if not pending or time.monotonic() > deadline:
                return len(pending)
            await asyncio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hostile", action="store_true", help="hostile clients beside the load"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="deepaas-soak-") as scratch:
        root = Path(scratch)
        site = install_model_packages(["testmodels"], root)["testmodels"]
        server_tmp, server_memory = root / "tmp", root / "memory"
        server_tmp.mkdir()
        server_memory.mkdir()  # stands in for /dev/shm, to look for leftovers
        env = {**os.environ, "PYTHONPATH": str(site), "TMPDIR": str(server_tmp)}
        server, base = start_server(
            ["--model-name", "failing", "-p", str(args.workers),
             "--predict-timeout", "1", "--state-dir", str(root / "state"),
             "--upload-memory-dir", str(server_memory),
             "--log-file", str(root / "server.log"),
             *(HOSTILE_SERVER_ARGS if args.hostile else ())],
            env=env,
        )  # fmt: skip
        hostile_got: collections.Counter[tuple[str, str]] = collections.Counter()
        healthz: list[float] = []
        try:
            rss_start = tree_rss_mib(server.pid)
            fds_start = open_fds(server.pid)
            started = time.monotonic()
            if args.hostile:
                (counts, lost, trainings, jobs), hostile_got, healthz = asyncio.run(
                    soak_with_hostile_clients(base, args, started + args.max_seconds)
                )
            else:
                counts, lost, trainings, jobs = asyncio.run(
                    soak(base, args.requests, args.concurrency,
                         started + args.max_seconds, args.seed)
                )  # fmt: skip
            elapsed = time.monotonic() - started
            not_done = asyncio.run(trainings_not_done(base, trainings, 120))
            jobs_left = asyncio.run(jobs_not_done(jobs, 120))
            # let replacements of the last dead workers start, and the
            # server drop what hostile clients left open
            time.sleep(8 if args.hostile else 2)
            rss_end = tree_rss_mib(server.pid)
            fds_end = open_fds(server.pid)
            workers = [
                p for p in descendants(server.pid)
                if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()
            ]  # fmt: skip
            # files only: each live worker keeps its scratch directory, with
            # the few spare files it writes its next small uploads over
            files = sorted(
                os.path.join(top, name)
                for directory in (server_tmp, server_memory)
                for top, _, names in os.walk(directory)
                for name in names
            )
            spares = [path for path in files if is_worker_spare(path)]
            leftovers = [path for path in files if path not in spares]
        finally:
            server.terminate()
            server.wait(timeout=60)

    sent = sum(counts.values())
    print(f"requests sent {sent} of {args.requests} in {elapsed:.1f} s "
          f"({sent / elapsed:.0f} req/s), concurrency {args.concurrency}, "
          f"{args.workers} workers")  # fmt: skip
    for (kind, status), n in sorted(counts.items(), key=lambda kv: str(kv[0])):
        expected = MIX[kind][1]
        mark = "" if status == expected else f"   <- expected {expected}"
        print(f"  {kind:14} {status!s:>22}  {n:7d}{mark}")
    print(f"lost requests          {lost}")
    print(f"trainings started      {len(trainings)}, not done {not_done}")
    print(f"async jobs started     {len(jobs)}, not done {jobs_left}")
    print(f"upload temp files left {len(leftovers)}")
    print(f"workers' spare files   {len(spares)} (at most {SPARES_KEPT} per worker)")
    print(f"worker processes       {len(workers)} (wanted {args.workers})")
    print(
        f"server tree RSS        {rss_start:.1f} MiB at start, {rss_end:.1f} MiB at end"
    )
    print(f"server tree open fds   {fds_start} at start, {fds_end} at end")
    if args.hostile:
        print("hostile clients:")
        for (kind, outcome), n in sorted(hostile_got.items()):
            print(f"  {kind:20} {outcome:>22}  {n:7d}")
        print(
            f"/healthz during it     p50 {percentile(healthz, 0.5):.1f} ms, "
            f"p99 {percentile(healthz, 0.99):.1f} ms, max {max(healthz, default=0):.1f}"
            f" ms ({len(healthz)} probes)"
        )
    ok = (
        lost == 0
        and not leftovers
        and len(spares) <= SPARES_KEPT * len(workers)
        and not_done == 0
        and jobs_left == 0
        and sent == args.requests
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

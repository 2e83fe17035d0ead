"""Asynchronous predictions under load: jobs submitted and completed per second.

Starts our server (the benchmark model, 2 workers) on 127.0.0.1 and runs
--concurrency clients, each submitting a prediction with ``Prefer:
respond-async`` and polling its job every --poll-ms until it is done, then
submitting the next, until --jobs jobs or --max-seconds. Prints jobs
submitted and completed per second, the time from submission to a client
seeing the job done (p50, p99), jobs that did not end "done" (must be 0),
and, for reference, synchronous predictions per second at the same
concurrency.

    python benchmarks/jobs.py
    python benchmarks/jobs.py --jobs 300 --max-seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from common import drive, start_server
from compare import install_model


async def run_jobs(
    base: str, jobs: int, concurrency: int, poll: float, max_seconds: float
) -> dict[str, float]:
    url = f"{base}/v2/models/bench/predict/?text=hello"
    submitted: list[float] = []  # seconds each POST took
    completed: list[float] = []  # seconds from POST to "done" seen
    failed = 0
    remaining = jobs
    deadline = time.monotonic() + max_seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, failed
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            start = time.perf_counter()
            async with session.post(url, headers={"Prefer": "respond-async"}) as resp:
                if resp.status != 202:
                    failed += 1
                    continue
                location = base + resp.headers["Location"]
                await resp.read()
            submitted.append(time.perf_counter() - start)
            while True:
                await asyncio.sleep(poll)
                async with session.get(location) as resp:
                    job = await resp.json()
                if job["status"] != "running":
                    break
            if job["status"] == "done":
                completed.append(time.perf_counter() - start)
            else:
                failed += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    completed.sort()
    return {
        "jobs": len(submitted),
        "submitted/s": len(submitted) / elapsed,
        "completed/s": len(completed) / elapsed,
        "done p50 (ms)": statistics.median(completed) * 1000 if completed else 0,
        "done p99 (ms)": completed[max(0, int(len(completed) * 0.99) - 1)] * 1000
        if completed
        else 0,
        "submit p50 (ms)": statistics.median(submitted) * 1000 if submitted else 0,
        "not done": failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--poll-ms", type=float, default=10)
    parser.add_argument("--max-seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepaas-jobs-") as scratch:
        root = Path(scratch)
        install_model(root / "site")
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch,
               "XDG_DATA_HOME": str(root / "state")}  # fmt: skip
        env.pop("DEEPAAS_V2_MODEL", None)
        server, base = start_server(
            ["--model-name", "bench", "--workers", str(args.workers),
             "--noaccess-log"],
            env=env,
        )  # fmt: skip
        try:
            figures = asyncio.run(
                run_jobs(
                    base,
                    args.jobs,
                    args.concurrency,
                    args.poll_ms / 1000,
                    args.max_seconds,
                )
            )
            sync = asyncio.run(
                drive(
                    "POST",
                    f"{base}/v2/models/bench/predict/?text=hello",
                    args.jobs,
                    args.concurrency,
                    args.max_seconds,
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
    for name, value in figures.items():
        print(f"{name:24} {value:10.2f}")
    print(
        f"{'sync predict/s':24} {sync['rps']:10.2f}  (same concurrency, for reference)"
    )
    print(
        f"\n{args.concurrency} clients, poll every {args.poll_ms:g} ms, "
        f"{args.workers} workers, {os.cpu_count()} CPUs"
    )
    return 1 if figures["not done"] else 0


if __name__ == "__main__":
    sys.exit(main())

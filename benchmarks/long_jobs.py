"""Long jobs on a real server: event latency and webhook delivery.

1. Event latency: a training of the benchmark model prints --lines lines, each
   the time it was printed at, --interval seconds apart; a client follows the
   training's event stream (GET .../events) and notes when each line arrives.
   Prints p50 and p99 of arrival less printing time.
2. Webhooks under a receiver that fails every other request: --jobs
   asynchronous predictions name a receiver on loopback; prints how many
   deliveries arrived, how many attempts it took, and the time from the first
   submission until the last delivery.

    python benchmarks/long_jobs.py
    python benchmarks/long_jobs.py --lines 50 --jobs 20
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
from aiohttp import web
from common import free_port, start_server
from compare import install_model


async def event_latency(base: str, lines: int, interval: float) -> list[float]:
    """Seconds from each line printed in the worker to its arrival here."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/v2/models/bench/train/?lines={lines}&interval={interval}"
        ) as resp:
            uuid = (await resp.json())["uuid"]
        latencies = []
        url = f"{base}/v2/models/bench/train/{uuid}/events"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=600)) as resp:
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: at "):
                    latencies.append(time.time() - float(line.split()[2]))
                elif line.startswith("event: result"):
                    break
    return latencies


async def webhooks(base: str, port: int, jobs: int, timeout: float) -> dict[str, float]:
    calls = 0
    ids: set[str] = set()
    last_at = 0.0

    async def receive(request: web.Request) -> web.Response:
        nonlocal calls, last_at
        calls += 1
        if calls % 2 == 1:
            return web.Response(status=503)
        ids.add(request.headers["webhook-id"])
        last_at = time.monotonic()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            for _ in range(jobs):
                async with session.post(
                    f"{base}/v2/models/bench/predict/",
                    headers={
                        "Prefer": "respond-async",
                        "Webhook-URL": f"http://127.0.0.1:{port}/hook",
                    },
                ) as resp:
                    assert resp.status == 202, await resp.text()
        deadline = time.monotonic() + timeout
        while len(ids) < jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    return {
        "webhooks sent": jobs,
        "delivered": len(ids),
        "attempts": calls,
        "seconds to the last": (last_at - started) if ids else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepaas-long-") as scratch:
        root = Path(scratch)
        install_model(root / "site")
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch,
               "XDG_DATA_HOME": str(root / "state")}  # fmt: skip
        env.pop("DEEPAAS_V2_MODEL", None)
        server, base = start_server(
            ["--model-name", "bench", "--workers", "2", "--noaccess-log",
             "--webhook-allow", "127.0.0.1:*"],
            env=env,
        )  # fmt: skip
        try:
            latencies = asyncio.run(event_latency(base, args.lines, args.interval))
            hooks = asyncio.run(
                webhooks(base, free_port(), args.jobs, args.max_seconds)
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"log line to event stream client: {len(latencies)} lines")
    print(f"  p50 {statistics.median(latencies) * 1000:8.1f} ms")
    print(f"  p99 {p99 * 1000:8.1f} ms")
    print("webhooks to a receiver failing every other request:")
    for name, value in hooks.items():
        print(f"  {name:20} {value:10.2f}")
    return 0 if hooks["delivered"] == hooks["webhooks sent"] else 1


if __name__ == "__main__":
    sys.exit(main())

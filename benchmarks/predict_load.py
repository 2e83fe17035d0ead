"""Bounded predict load against a real deepaas-run on loopback.

Starts ``deepaas-run`` (the demo model unless --model-name is given) on a free
loopback port, sends --requests predict calls at --concurrency, and prints
requests per second and latency percentiles, plus the GET /v2/models/ rate for
comparison. Stops by itself; touches nothing but 127.0.0.1.

    python benchmarks/predict_load.py --requests 2000 --concurrency 32 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import aiohttp
from common import start_server


async def drive(
    method: str, url: str, requests: int, concurrency: int, max_seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = requests
    deadline = time.monotonic() + max_seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            start = time.perf_counter()
            async with session.request(method, url) as resp:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-name", default="deepaas-test")
    parser.add_argument("--query", default="", help="predict query string")
    parser.add_argument("--max-seconds", type=float, default=60)
    args = parser.parse_args()

    server, base = start_server(
        ["-p", str(args.workers), "--model-name", args.model_name]
    )
    try:
        predict_url = f"{base}/v2/models/{args.model_name}/predict/?{args.query}"
        for label, method, url in (
            ("GET /v2/models/", "GET", base + "/v2/models/"),
            ("POST predict", "POST", predict_url),
        ):
            asyncio.run(drive(method, url, 100, args.concurrency, 10))  # warm-up
            r = asyncio.run(
                drive(method, url, args.requests, args.concurrency, args.max_seconds)
            )
            print(
                f"{label:16} c={args.concurrency:<3} workers={args.workers} "
                f"n={r['requests']:<6.0f} {r['rps']:8.0f} req/s  "
                f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                f"non-200 {r['non_200']:.0f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

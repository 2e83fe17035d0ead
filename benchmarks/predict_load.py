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
import sys

from common import drive, start_server


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

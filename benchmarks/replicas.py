"""Replicas on PostgreSQL beside one server on SQLite, both behind nginx.

Two set-ups of the benchmark model, the same number of workers in all, each
behind nginx round robin on loopback:

- one ``deepaas-run`` on its SQLite file, with --workers 2;
- two ``deepaas-run`` replicas sharing a throwaway PostgreSQL database
  (Debian's server, as the postgres test tier starts it), --workers 1 each.

For each, the figures of ``jobs.py`` (asynchronous predictions submitted and
completed per second by --concurrency clients polling every --poll-ms, and
the time to done) and of ``long_jobs.py``'s event latency (a training prints
--lines time-stamped lines; its event stream, opened through nginx, on
whichever replica, notes when each arrives). Printed side by side.

    python benchmarks/replicas.py
    python benchmarks/replicas.py --jobs 300 --max-seconds 10 --lines 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import start_server, stop_server
from compare import install_model
from jobs import run_jobs
from long_jobs import event_latency

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nginx import Balancer  # noqa: E402 - the repository's own helpers
from tests.pgcluster import Cluster  # noqa: E402


def measure(base: str, args: argparse.Namespace) -> dict[str, float]:
    figures = asyncio.run(
        run_jobs(
            base, args.jobs, args.concurrency, args.poll_ms / 1000, args.max_seconds
        )
    )
    latencies = sorted(asyncio.run(event_latency(base, args.lines, args.interval)))
    figures["event p50 (ms)"] = statistics.median(latencies) * 1000
    figures["event p99 (ms)"] = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
    figures["events seen"] = len(latencies)
    return figures


def setup(
    args: argparse.Namespace,
    root: Path,
    name: str,
    count: int,
    workers: int,
    extra: list[str],
) -> dict[str, float]:
    """The figures of ``count`` servers of ``workers`` workers behind nginx."""
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": str(root),
           "XDG_DATA_HOME": str(root / name)}  # fmt: skip
    env.pop("DEEPAAS_V2_MODEL", None)
    servers = []
    balancer = None
    try:
        for n in range(count):
            servers.append(
                start_server(
                    [
                        "--model-name",
                        "bench",
                        "--workers",
                        str(workers),
                        "--noaccess-log",
                        "--state-dir",
                        str(root / name / str(n)),
                        *extra,
                    ],
                    env=env,
                )  # fmt: skip
            )
        ports = [int(base.rsplit(":", 1)[1]) for _, base in servers]
        balancer = Balancer(ports)
        return measure(balancer.url, args)
    finally:
        if balancer is not None:
            balancer.stop()
        for server, _ in servers:
            stop_server(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--poll-ms", type=float, default=10)
    parser.add_argument("--max-seconds", type=float, default=30)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    cluster = Cluster()
    with tempfile.TemporaryDirectory(prefix="deepaas-replicas-") as scratch:
        root = Path(scratch)
        install_model(root / "site")
        cluster.start()
        try:
            database = asyncio.run(cluster.new_database())
            results = {
                "1 on SQLite": setup(args, root, "sqlite", 1, 2, []),
                "2 on PostgreSQL": setup(
                    args, root, "postgres", 2, 1, ["--database", database]
                ),
            }
        finally:
            cluster.stop()
    names = list(results)
    print(f"{'through nginx':24} " + " ".join(f"{n:>16}" for n in names))
    for figure in results[names[0]]:
        print(f"{figure:24} " + " ".join(f"{results[n][figure]:16.2f}" for n in names))
    print(
        f"\n{args.concurrency} clients, poll every {args.poll_ms:g} ms, 2 workers in "
        f"all, {args.lines} log lines {args.interval:g} s apart, "
        f"{os.cpu_count()} CPUs"
    )
    failed = any(
        r["not done"] or r["events seen"] < args.lines for r in results.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

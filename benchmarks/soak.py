"""Soak a real deepaas-run with a bounded mix of good and bad traffic.

Sends --requests requests at --concurrency to a server on 127.0.0.1 serving the
test model ``failing`` (installed from tests/models into a temporary directory):
good predicts (some with a file upload), bad arguments, model exceptions,
worker deaths, slow predicts cut by --predict-timeout, and trainings. Then it
prints counts by kind and status, requests lost (no answer or an unexpected
status: must be 0), trainings not done, upload temp files left behind (must be
0), the worker count, and the server's process-tree RSS at start and end.

    python benchmarks/soak.py --requests 50000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from common import descendants, start_server, tree_rss_mib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import install_model_packages  # noqa: E402

# kind: (share of requests, expected status)
MIX = {
    "predict": (0.70, 200),
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
    return "POST", f"{base}/v2/models/failing/train/?mode=ok", None


async def soak(
    base: str, requests: int, concurrency: int, deadline: float, seed: int
) -> tuple[collections.Counter[tuple[str, int | str]], int, list[str]]:
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=[w for w, _ in MIX.values()], k=requests)
    counts: collections.Counter[tuple[str, int | str]] = collections.Counter()
    trainings: list[str] = []
    lost = 0
    queue = iter(kinds)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal lost
        for kind in queue:
            if time.monotonic() > deadline:
                return
            method, url, data = request_for(kind, base)
            try:
                async with session.request(method, url, data=data) as resp:
                    body = await resp.json()
                    status: int | str = resp.status
                    if kind == "train" and resp.status == 200:
                        trainings.append(body["uuid"])
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                status = type(exc).__name__
            counts[(kind, status)] += 1
            if status != MIX[kind][1]:
                lost += 1

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return counts, lost, trainings


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
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="deepaas-soak-") as scratch:
        root = Path(scratch)
        site = install_model_packages(["testmodels"], root)["testmodels"]
        server_tmp = root / "tmp"
        server_tmp.mkdir()
        env = {**os.environ, "PYTHONPATH": str(site), "TMPDIR": str(server_tmp)}
        server, base = start_server(
            ["--model-name", "failing", "-p", str(args.workers),
             "--predict-timeout", "1", "--state-dir", str(root / "state"),
             "--log-file", str(root / "server.log")],
            env=env,
        )  # fmt: skip
        try:
            rss_start = tree_rss_mib(server.pid)
            started = time.monotonic()
            counts, lost, trainings = asyncio.run(
                soak(base, args.requests, args.concurrency,
                     started + args.max_seconds, args.seed)
            )  # fmt: skip
            elapsed = time.monotonic() - started
            not_done = asyncio.run(trainings_not_done(base, trainings, 120))
            time.sleep(2)  # let replacements of the last dead workers start
            rss_end = tree_rss_mib(server.pid)
            workers = [
                p for p in descendants(server.pid)
                if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()
            ]  # fmt: skip
            leftovers = sorted(os.listdir(server_tmp))
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
    print(f"upload temp files left {len(leftovers)}")
    print(f"worker processes       {len(workers)} (wanted {args.workers})")
    print(
        f"server tree RSS        {rss_start:.1f} MiB at start, {rss_end:.1f} MiB at end"
    )
    ok = lost == 0 and not leftovers and not_done == 0 and sent == args.requests
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

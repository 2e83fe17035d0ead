"""What a reload costs the clients: a model package installed again in a new
release while predictions run against it at a steady concurrency, then
SIGHUP; how long until every worker serves the new release, and what the
clients saw meanwhile.

The model's ``warm()`` takes ``--warm-seconds`` (a model loading its
weights), and each worker is replaced only once its successor has warmed, so
a reload takes at least workers x warm-up. Per round: the seconds from
SIGHUP to the first answer of the new release and to the last worker
replaced; requests that failed (any answer but a 200, or none); requests/s
and latency (p50, p99, max) before the reload and during it. Medians over
rounds are printed. Every load is bounded in time; nothing leaves loopback.

    python benchmarks/reload.py
    python benchmarks/reload.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import start_server, stop_server

MODEL = "reloadbench"

SETUP = """\
[metadata]
name = deepaas-reloadbench
version = {release}

[options]
py_modules = deepaas_reloadbench

[options.entry_points]
deepaas.v2.model =
    reloadbench = deepaas_reloadbench
"""

MODULE = """\
import time

RELEASE = "{release}"


def get_metadata():
    return {{"name": "reloadbench", "version": RELEASE}}


def warm():
    time.sleep({warm})


def get_predict_args():
    return {{}}


def predict(**kwargs):
    return RELEASE
"""


def install(site: Path, release: int, warm: float) -> None:
    """Release ``release`` of the benchmark model, installed into ``site`` as
    an upgrade does (the previous release's files replaced)."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch)
        (source / "setup.cfg").write_text(SETUP.format(release=release))
        (source / "setup.py").write_text("from setuptools import setup\nsetup()\n")
        (source / "deepaas_reloadbench.py").write_text(
            MODULE.format(release=release, warm=warm)
        )
        for old in site.glob("deepaas_reloadbench-*.dist-info"):
            shutil.rmtree(old)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--no-index", "--upgrade", "--target",
             str(site), str(source)],
            check=True,
        )  # fmt: skip


@dataclass
class Answers:
    """Every request of a load: when it was sent and answered, and how."""

    sent: list[float] = field(default_factory=list)
    took: list[float] = field(default_factory=list)
    releases: list[str | None] = field(default_factory=list)  # None: failed

    def window(self, start: float, end: float) -> tuple[float, list[float]]:
        """(requests/s, sorted latencies) of the requests sent between
        ``start`` and ``end``."""
        picked = [i for i, t in enumerate(self.sent) if start <= t < end]
        latencies = sorted(self.took[i] for i in picked)
        return len(picked) / max(end - start, 1e-9), latencies


async def generate(
    url: str, concurrency: int, answers: Answers, stop: asyncio.Event
) -> None:
    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                async with session.post(url) as resp:
                    body = await resp.json() if resp.status == 200 else None
            except aiohttp.ClientError:
                body = None
            answers.sent.append(sent)
            answers.took.append(time.monotonic() - sent)
            answers.releases.append(body["predictions"] if body else None)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))


async def reloaded(session: aiohttp.ClientSession, base: str, generation: int) -> bool:
    async with session.get(base + "/readyz") as resp:
        body = await resp.json()
    reload = body.get("models", {}).get(MODEL, {}).get("reload", {})
    if reload.get("status") == "failed":
        raise SystemExit(f"the reload failed: {reload.get('reason')}")
    return reload.get("status") == "reloaded" and reload.get("generation") == generation


async def one_round(
    server: subprocess.Popen[bytes],
    base: str,
    site: Path,
    release: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Load, reload to ``release`` (generation ``release``), load on."""
    answers = Answers()
    stop = asyncio.Event()
    url = f"{base}/v2/models/{MODEL}/predict/"
    loading = asyncio.create_task(generate(url, args.concurrency, answers, stop))
    await asyncio.sleep(args.steady)
    calm = time.monotonic()
    # (pip, beside the load, as an operator's upgrade runs)
    await asyncio.to_thread(install, site, release, args.warm_seconds)
    hangup = time.monotonic()
    server.send_signal(signal.SIGHUP)
    deadline = hangup + args.max_reload
    async with aiohttp.ClientSession() as session:
        while not await reloaded(session, base, release):
            if time.monotonic() > deadline:
                raise SystemExit(f"not reloaded after {args.max_reload} s")
            await asyncio.sleep(0.05)
    done = time.monotonic()
    await asyncio.sleep(args.steady)
    stop.set()
    await loading
    before_rps, before = answers.window(calm - args.steady + 0.5, calm)
    during_rps, during = answers.window(hangup, done)
    first_new = min(
        (
            sent + took
            for sent, took, got in zip(
                answers.sent, answers.took, answers.releases, strict=True
            )
            if got == str(release)
        ),
        default=float("nan"),
    )
    return {
        "reload s": done - hangup,
        "first new answer s": first_new - hangup,
        "failed": sum(1 for got in answers.releases if got is None),
        "req/s before": before_rps,
        "req/s during": during_rps,
        "p50 ms before": percentile(before, 0.5),
        "p50 ms during": percentile(during, 0.5),
        "p99 ms before": percentile(before, 0.99),
        "p99 ms during": percentile(during, 0.99),
        "max ms during": percentile(during, 1.0),
        "requests": len(answers.sent),
    }


def percentile(latencies: list[float], q: float) -> float:
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warm-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steady", type=float, default=3.0, help="seconds of load before and after"
    )
    parser.add_argument("--max-reload", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="one short round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steady, args.warm_seconds = 1, 1.0, 0.2

    scratch = Path(tempfile.mkdtemp(prefix="deepaas-reload-"))
    try:
        site = scratch / "site"
        install(site, 1, args.warm_seconds)
        env = {
            **os.environ,
            "PYTHONPATH": str(site),
            "TMPDIR": str(scratch),
            "XDG_DATA_HOME": str(scratch / "data"),
        }
        server, base = start_server(
            ["--model-name", MODEL, "--workers", str(args.workers),
             "--noaccess-log"],
            env=env,
        )  # fmt: skip
        try:
            rounds = [
                asyncio.run(one_round(server, base, site, release, args))
                for release in range(2, args.rounds + 2)
            ]
        finally:
            stop_server(server)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"reload under load: {args.workers} worker(s), warm-up "
        f"{args.warm_seconds:g} s, {args.concurrency} clients, {os.cpu_count()} "
        f"CPU(s), medians of {args.rounds} round(s)"
    )
    for key in rounds[0]:
        value = statistics.median(r[key] for r in rounds)
        shown = f"{value:,.0f}" if key in ("failed", "requests") else f"{value:,.2f}"
        print(f"  {key:<20} {shown:>10}")
    total_failed = sum(r["failed"] for r in rounds)
    print(f"  failed in all rounds {total_failed:>10,.0f}")
    if total_failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

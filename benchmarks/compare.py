"""deepaas against upstream DEEPaaS 2.6.0, side by side, on this machine.

Creates (once) a virtualenv with ``deepaas==2.6.0`` from the package index,
installs the benchmark model (benchmarks/model) for both, then starts each
server in turn on 127.0.0.1 (A B A B ...) with the same model and worker count
and measures:

- cold start: process start to ready for calls with warm-up done: the first
  200 on /readyz for ours (it listens while the workers warm up), on
  /v2/models/ for upstream (which warms up before it listens);
- idle RSS of the process tree (server and workers);
- GET /v2/models/ requests/s at concurrency 32;
- predict requests/s at concurrency 32, and p50 latency at concurrency 1;
- peak RSS growth of the tree while a file is uploaded to predict.

With ``--ray`` a third side runs ours with ``--executor ray`` (the server
starts a Ray runtime on this machine; its workers are Ray actors), and the
summary adds the per-call overhead Ray adds (its p50 at concurrency 1 less
the local pool's).

It prints, for each figure, each side's median over rounds and the ratio to
upstream. Every load is bounded in count and time; nothing leaves loopback.

    python benchmarks/compare.py                  # the full comparison
    python benchmarks/compare.py --ray            # and the Ray executor
    python benchmarks/compare.py --ours-only --quick
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from common import drive, start_server, stop_server, tree_rss_mib, wrk_load

HERE = Path(__file__).resolve().parent
UPSTREAM_VERSION = "2.6.0"
DEFAULT_UPSTREAM_VENV = HERE / ".venvs" / f"deepaas-{UPSTREAM_VERSION}"


def ensure_upstream(venv: Path) -> str:
    """deepaas-run of a virtualenv holding upstream DEEPaaS (made if missing)."""
    run = venv / "bin" / "deepaas-run"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The differential test makes the same one (tests/compat/conftest.py):
    # whoever comes second waits for the first to finish it.
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not run.exists():
            print(f"creating {venv} with deepaas=={UPSTREAM_VERSION} ...", flush=True)
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(venv)], check=True
            )
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 f"deepaas=={UPSTREAM_VERSION}"],
                check=True,
            )  # fmt: skip
    return str(run)


def install_model(target: Path) -> None:
    """The benchmark model, installed (entry point and all) into ``target``.

    It is built from a copy: setuptools builds in the source directory, and
    two benchmarks installing it at once would trip over each other there."""
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-model-") as tmp:
        source = Path(tmp) / "model"
        shutil.copytree(
            HERE / "model", source, ignore=shutil.ignore_patterns("build", "*.egg-info")
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--target", str(target), str(source)],
            check=True,
        )  # fmt: skip


async def load(
    method: str, url: str, requests: int, concurrency: int, max_seconds: float
) -> tuple[float, float]:
    """(requests/s, p50 latency in ms) of a bounded load; non-200 is an error."""
    result = await drive(method, url, requests, concurrency, max_seconds)
    if result["non_200"]:
        raise SystemExit(f"{method} {url}: {result['non_200']:g} answers not 200")
    return result["rps"], result["p50_ms"]


def sparse_file(path: Path, mib: int) -> Path:
    """A file of ``mib`` MiB that costs no disk and reads as zeros."""
    with open(path, "wb") as f:
        f.truncate(mib * 1024 * 1024)
    return path


async def upload(url: str, path: Path) -> int:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with open(path, "rb") as f:
            form = aiohttp.FormData()
            form.add_field("data", f, filename="big.bin")
            async with session.post(url, data=form) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise SystemExit(f"upload: {resp.status} {body}")
                return int(body["predictions"]["size"])


def upload_peak_growth(pid: int, url: str, path: Path) -> float:
    """Peak RSS growth (MiB) of the server tree while ``path`` is uploaded."""
    base = tree_rss_mib(pid)
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        size = asyncio.run(upload(url, path))
    finally:
        done.set()
        sampler.join()
    assert size == path.stat().st_size, (size, path.stat().st_size)
    return peak - base


def measure(
    executable: str | None,
    env: dict[str, str],
    args: argparse.Namespace,
    big: Path,
    extra_args: str = "",
) -> dict[str, float]:
    started = time.monotonic()
    extra = [] if executable else shlex.split(f"{args.ours_args} {extra_args}")
    server, base = start_server(
        ["--model-name", "bench", "--workers", str(args.workers), *extra],
        env=env,
        executable=executable,
        log_args=(),  # both at their default logging, access log included
        ready_path="/v2/models/" if executable else "/readyz",
    )
    figures = {"cold start (s)": time.monotonic() - started}
    try:
        time.sleep(1)
        figures["idle RSS (MiB)"] = tree_rss_mib(server.pid)
        predict = f"{base}/v2/models/bench/predict/?text=hello"
        models = f"{base}/v2/models/"
        n, seconds = args.requests, args.max_seconds
        asyncio.run(load("POST", predict, 200, 8, seconds))  # warm the path
        if args.client == "wrk":
            figures["GET /v2/models/ c=32 (req/s)"] = wrk_load(
                "GET", models, 32, args.wrk_seconds, args.scratch
            )[0]
            figures["predict c=32 (req/s)"] = wrk_load(
                "POST", predict, 32, args.wrk_seconds, args.scratch
            )[0]
            figures["predict c=1 p50 (ms)"] = wrk_load(
                "POST", predict, 1, args.wrk_seconds, args.scratch
            )[1]
        else:
            figures["GET /v2/models/ c=32 (req/s)"] = asyncio.run(
                load("GET", models, n, 32, seconds)
            )[0]
            figures["predict c=32 (req/s)"] = asyncio.run(
                load("POST", predict, n, 32, seconds)
            )[0]
            figures["predict c=1 p50 (ms)"] = asyncio.run(
                load("POST", predict, n // 4, 1, seconds)
            )[1]
        figures["upload peak RSS growth (MiB)"] = upload_peak_growth(
            server.pid, predict, big
        )
    finally:
        stop_server(server)
    return figures


BETTER_LOWER = {"cold start (s)", "idle RSS (MiB)", "predict c=1 p50 (ms)",
                "upload peak RSS growth (MiB)"}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--upload-mib", type=int, default=1024)
    parser.add_argument("--max-seconds", type=float, default=20)
    parser.add_argument("--upstream-venv", type=Path, default=DEFAULT_UPSTREAM_VENV)
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument(
        "--ray", action="store_true", help="also ours with --executor ray"
    )
    parser.add_argument(
        "--ours-args",
        default="",
        help="extra deepaas-run options for ours, e.g. '--noaccess-log' "
        "(default: none, both servers at their defaults)",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run")
    parser.add_argument(
        "--client",
        choices=["wrk", "aiohttp"],
        default="wrk" if shutil.which("wrk") else "aiohttp",
        help="load generator (default: wrk when installed)",
    )
    parser.add_argument(
        "--wrk-seconds", type=float, default=5, help="length of each wrk load"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.upload_mib = 1, 300, 8
        args.wrk_seconds = 1

    with tempfile.TemporaryDirectory(prefix="deepaas-bench-") as scratch:
        args.scratch = scratch
        root = Path(scratch)
        install_model(root / "site")
        big = sparse_file(root / "upload.bin", args.upload_mib)
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch}
        env.pop("DEEPAAS_V2_MODEL", None)
        # name: (deepaas-run of upstream, or None for ours; extra options)
        sides: dict[str, tuple[str | None, str]] = {"ours": (None, "")}
        if args.ray:
            sides["ours-ray"] = (None, "--executor ray")
        if not args.ours_only:
            sides["upstream"] = (ensure_upstream(args.upstream_venv), "")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            for name, (executable, extra) in sides.items():
                env["XDG_DATA_HOME"] = str(root / f"state-{name}-{round_}")
                figures = measure(executable, env, args, big, extra)
                results[name].append(figures)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                print(f"round {round_ + 1} {name:8} {shown}", flush=True)

    print()
    ours_sides = [name for name in results if name != "upstream"]
    header = f"{'figure':32}" + "".join(f" {name:>10}" for name in results)
    if not args.ours_only:
        header += "".join(f" {name + '/up':>12}" for name in ours_sides)
    print(header)
    for key in results["ours"][0]:
        medians = {
            name: statistics.median(r[key] for r in rounds)
            for name, rounds in results.items()
        }
        line = f"{key:32}" + "".join(f" {v:10.2f}" for v in medians.values())
        if not args.ours_only:
            theirs = medians["upstream"]
            for name in ours_sides:
                ratio = medians[name] / theirs if theirs else float("inf")
                line += f" {ratio:11.2f}x"
            line += "  (lower is better)" if key in BETTER_LOWER else ""
        print(line)
    if args.ray:
        p50 = "predict c=1 p50 (ms)"
        extra = statistics.median(r[p50] for r in results["ours-ray"]) - (
            statistics.median(r[p50] for r in results["ours"])
        )
        print(f"per-call overhead of the Ray executor (p50 at c=1): {extra:+.2f} ms")
    ratio_key = ("predict c=32 (req/s)", "GET /v2/models/ c=32 (req/s)")
    for name, rounds in results.items():
        shares = [r[ratio_key[0]] / r[ratio_key[1]] for r in rounds]
        print(
            f"{name}: predict rate / own GET /v2/models/ rate: median "
            f"{statistics.median(shares):.1%} (rounds: "
            + ", ".join(f"{s:.1%}" for s in shares)
            + ")"
        )
    print(
        f"\nours with: {args.ours_args or '(defaults)'}; "
        f"{args.rounds} round(s), {args.workers} workers, {os.cpu_count()} CPUs, "
        f"{args.upload_mib} MiB upload, load by "
        + (
            f"wrk ({args.wrk_seconds:g} s per load)"
            if args.client == "wrk"
            else f"aiohttp ({args.requests} requests per load)"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

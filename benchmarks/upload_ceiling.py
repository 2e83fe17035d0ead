"""Where the 64 KiB upload's time goes: requests/s and CPU per request of the
server process and of its workers, for deepaas, two variants of it,
the bare aiohttp handler and upstream DEEPaaS 2.6.0, in interleaved rounds.

The workload is payloads.py's "upload 64 KiB c=16" (a form with one text field
and a 64 KiB file, wrk, 2 workers). Sides:

- ``ours``: deepaas as deployed by default (access log on; the worker reads
  the form);
- ``no-access-log``: the same with ``--noaccess-log``;
- ``forms-in-server``: the server reads the form and validates the arguments
  itself (benchmarks/ceiling_hooks), as it did before small forms were left to
  the workers;
- ``forward``: the server carries the body to a worker unread
  (benchmarks/ceiling_hooks: no form read, nothing validated);
- ``bare``: benchmarks/bare.py's multipart handler (no model, no worker);
- ``upstream``: DEEPaaS 2.6.0.

CPU is read from /proc before, during and after each load: the server
process's, its descendants' (the workers, followed every 0.2 s so that a worker
replaced during the load is counted too), and the idle time of the whole
machine.

    python benchmarks/upload_ceiling.py              # 3 rounds, 6 s per load
    python benchmarks/upload_ceiling.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    TICK,
    TreeCPU,
    descendants,
    start_server,
    stop_server,
    wait_workers_settled,
    wrk_load,
)
from compare import ensure_upstream, install_model
from payloads import HERE, MULTIPART, PAYLOAD, multipart_body, start_bare

SIDES = ("bare", "ours", "no-access-log", "forms-in-server", "forward", "upstream")


def machine_times() -> tuple[float, float]:
    """(all CPU time, idle CPU time) of the machine so far, in seconds."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) / TICK, (values[3] + values[4]) / TICK


def settled_workers(pid: int, count: int, metrics: str | None) -> list[int]:
    """The descendants of ``pid`` once there are ``count`` of them again and,
    with deepaas' ``metrics`` URL, its workers are all started."""
    if metrics is not None:
        wait_workers_settled(metrics)
    deadline = time.monotonic() + 60
    while len(found := descendants(pid)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} processes expected, {len(found)} run")
        time.sleep(0.05)
    return found


def measure(
    server: subprocess.Popen[bytes],
    url: str,
    seconds: float,
    body: str,
    scratch: str,
    processes: int,
    metrics: str | None,
) -> dict[str, float]:
    """One warm load: requests/s, CPU ms per request of the server and of its
    workers (``processes`` descendants in all), and the idle share of the
    machine (in cores)."""
    wrk_load("POST", url, 16, 1, scratch, body_file=body, content_type=MULTIPART)
    workers = settled_workers(server.pid, processes, metrics)
    tree = TreeCPU(server.pid, [server.pid, *workers])
    total_before, idle_before = machine_times()
    rps, _ = wrk_load(
        "POST", url, 16, seconds, scratch, body_file=body, content_type=MULTIPART
    )
    total_after, idle_after = machine_times()
    spent = tree.stop()
    requests = rps * max(1, round(seconds))
    return {
        "req/s": rps,
        "server ms/req": spent.pop(server.pid) / requests * 1000,
        "workers ms/req": sum(v for v in spent.values() if v > 0) / requests * 1000,
        "idle cores": (idle_after - idle_before)
        / (total_after - total_before)
        * (os.cpu_count() or 1),
    }


def check_answer(side: str, url: str, body: str) -> None:
    """The benchmark model's answer to one upload: the file's size, or none
    when the body went to it unread (the hooks are in force)."""
    with open(body, "rb") as f:
        request = urllib.request.Request(
            url, data=f.read(), headers={"Content-Type": MULTIPART}
        )
    with urllib.request.urlopen(request, timeout=30) as response:
        size = json.load(response)["predictions"]["size"]
    expected = None if side == "forward" else 64 * 1024
    if size != expected:
        raise SystemExit(f"{side}: the model saw a file of {size}, not {expected}")


def run_side(
    side: str, args: argparse.Namespace, env: dict[str, str], upstream: str | None
) -> dict[str, float]:
    if side == "bare":
        server, base = start_bare(env)
        url = base + "/upload"
    else:
        side_env = dict(env)
        extra = ["--workers", str(args.workers)]
        if side == "no-access-log":
            extra.append("--noaccess-log")
        elif side in ("forward", "forms-in-server"):
            side_env["DEEPAAS_CEILING"] = side
            side_env["PYTHONPATH"] += os.pathsep + str(HERE / "ceiling_hooks")
        server, base = start_server(
            extra,
            env=side_env,
            executable=upstream if side == "upstream" else None,
            log_args=(),
            ready_path="/v2/models/" if side == "upstream" else "/readyz",
        )
        url = base + PAYLOAD
    processes = len(descendants(server.pid))
    if side in ("ours", "forms-in-server", "forward"):
        check_answer(side, url, args.body)
    try:
        metrics = None if side in ("bare", "upstream") else base + "/metrics"
        return measure(
            server, url, args.seconds, args.body, args.scratch, processes, metrics
        )
    finally:
        stop_server(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6, help="per load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--upstream-venv", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1
    if not shutil.which("wrk"):
        raise SystemExit("upload_ceiling.py needs wrk (apt-get install wrk)")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise SystemExit(f"unknown sides: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="deepaas-ceiling-") as scratch:
        args.scratch = scratch
        root = Path(scratch)
        install_model(root / "site")
        sys.path.insert(0, str(root / "site"))
        args.body = str(root / "upload-64k.body")
        Path(args.body).write_bytes(multipart_body(64 * 1024))
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch}
        env.pop("DEEPAAS_V2_MODEL", None)
        env.pop("DEEPAAS_CEILING", None)
        upstream = None
        if "upstream" in sides:
            venv = args.upstream_venv or HERE / ".venvs" / "deepaas-2.6.0"
            upstream = ensure_upstream(venv)
        results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in sides:
                env["XDG_DATA_HOME"] = str(root / f"state-{side}-{round_}")
                results[side].append(run_side(side, args, env, upstream))
                print(f"round {round_ + 1} {side}: {results[side][-1]}", flush=True)
    report(results, args)
    return 0


def report(
    results: dict[str, list[dict[str, float]]], args: argparse.Namespace
) -> None:
    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    print()
    print(
        f"upload 64 KiB c=16, {args.rounds} round(s), {args.seconds:g} s per load, "
        f"{args.workers} workers, {os.cpu_count()} CPUs; medians"
    )
    print()
    print(
        "| side | req/s | / upstream | / bare | server CPU ms/req "
        "| workers CPU ms/req | idle cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for side in results:
        rps = median(side, "req/s")
        ratios = []
        for other in ("upstream", "bare"):
            ratios.append(
                f"{rps / median(other, 'req/s'):.2f}x"
                if other in results and other != side
                else ""
            )
        print(
            f"| {side} | {rps:,.0f} | {ratios[0]} | {ratios[1]} "
            f"| {median(side, 'server ms/req'):.3f} "
            f"| {median(side, 'workers ms/req'):.3f} "
            f"| {median(side, 'idle cores'):.2f} |"
        )


if __name__ == "__main__":
    sys.exit(main())

"""Real payloads, side by side: deepaas, upstream DEEPaaS 2.6.0 and the bare
aiohttp ceilings (benchmarks/bare.py), in interleaved rounds on this machine.

Each round starts every side in turn (bare, ours, ours with batching off,
upstream), runs its workloads with wrk on 127.0.0.1, and stops it. The figures
are medians over the rounds; the ratios are of the medians. Workloads:

- GET /v2/models/ at c=32, the plain predict at c=32 and its p50 at c=1 (the
  figures of compare.py, to see that nothing regresses);
- a 64 KiB upload at c=16 and a 1 MiB upload at c=8 (multipart, one file);
- a 1 MiB PNG answered as bytes, and as an open file, at c=8;
- a JSON body of 100,000 floats, and an answer of 100,000 floats, at c=8;
- the batching model (10 ms per call plus 0.1 ms per item) at c=32 and its
  p50 at c=1, batched (ours) and not (ours with --max-batch-size 1, upstream);
- memory, ours alone: the peak RSS growth of the process tree during a 1 GiB
  upload, and of the server process while a 256 MiB answer goes out.

Every load is bounded in time, nothing leaves loopback, and the servers are
stopped at the end of each round.

    python benchmarks/payloads.py                 # the full run (~15 min)
    python benchmarks/payloads.py --quick         # a smoke run of every figure
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    free_port,
    start_server,
    stop_server,
    wait_ready,
    wait_workers_settled,
    wrk_load,
)
from compare import ensure_upstream, install_model, sparse_file, upload_peak_growth

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
PAYLOAD = "/v2/models/bench-payload/predict/"
BATCH = "/v2/models/bench-batch/predict/"
BOUNDARY = "deepaas-bench-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Workload:
    """One load, by wrk: where each side takes it, and what it sends."""

    name: str
    concurrency: int
    paths: dict[str, str]  # side -> path (and query)
    body: str | None = None  # a key of the body files
    content_type: str | None = None
    figure: str = "req/s"  # or "p50 ms"
    bytes_per_request: int = 0  # shows MB/s beside req/s when set


def multipart_body(size: int) -> bytes:
    """A form with one text field and one ``size``-byte file, as browsers send."""
    content = os.urandom(size)
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="kind"\r\n\r\n'
            f'stat\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="data"; '
            f'filename="image.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def workloads() -> list[Workload]:
    both = ("ours", "upstream")

    def on(path: str, *sides: str, bare: str | None = None) -> dict[str, str]:
        paths = {side: path for side in sides}
        if bare is not None:
            paths["bare"] = bare
        return paths

    return [
        Workload("GET /v2/models/ c=32", 32, on("/v2/models/", *both)),
        Workload("predict c=32", 32, on("/v2/models/bench/predict/?text=hello", *both)),
        Workload(
            "predict c=1",
            1,
            on("/v2/models/bench/predict/?text=hello", *both),
            figure="p50 ms",
        ),
        Workload(
            "upload 64 KiB c=16",
            16,
            on(PAYLOAD, *both, bare="/upload"),
            body="upload-64k",
            content_type=MULTIPART,
            bytes_per_request=64 * 1024,
        ),
        Workload(
            "upload 1 MiB c=8",
            8,
            on(PAYLOAD, *both, bare="/upload"),
            body="upload-1m",
            content_type=MULTIPART,
            bytes_per_request=MiB,
        ),
        Workload(
            "PNG bytes out c=8",
            8,
            on(f"{PAYLOAD}?kind=png&accept=image/png", *both, bare="/png"),
            bytes_per_request=MiB,
        ),
        Workload(
            "open file out c=8",
            8,
            on(f"{PAYLOAD}?kind=file&accept=image/png", *both, bare="/file"),
            bytes_per_request=MiB,
        ),
        Workload(
            "JSON 100k floats in c=8",
            8,
            on(PAYLOAD, *both, bare="/json-in"),
            body="json-in",
            content_type=JSON,
        ),
        Workload(
            "JSON 100k floats out c=8",
            8,
            on(f"{PAYLOAD}?kind=floats", *both, bare="/json-out"),
        ),
        Workload("batch model c=32", 32, on(BATCH, "ours", "unbatched", "upstream")),
        Workload(
            "batch model c=1",
            1,
            on(BATCH, "ours", "unbatched", "upstream"),
            figure="p50 ms",
        ),
    ]


def write_bodies(scratch: Path) -> dict[str, str]:
    from deepaas_bench_model import payload

    bodies = {
        "upload-64k": multipart_body(64 * 1024),
        "upload-1m": multipart_body(MiB),
        "json-in": json.dumps({"kind": "sum", "values": payload.FLOATS}).encode(),
    }
    paths = {}
    for key, content in bodies.items():
        path = scratch / f"{key}.body"
        path.write_bytes(content)
        paths[key] = str(path)
    image = scratch / "image.png"
    image.write_bytes(payload.IMAGE)
    paths["image"] = str(image)
    return paths


def start_bare(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "bare.py"), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(base + "/ready"))
    except BaseException:
        server.kill()
        raise
    return server, base


def peak_server_rss_growth(pid: int, action: Callable[[], None]) -> float:
    """Peak RSS growth (MiB) of the process ``pid`` alone while ``action`` runs."""

    def rss() -> float:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    base = peak = rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak - base


def big_answer(url: str, size: int) -> None:
    """Fetch a ``size``-byte answer, reading it in chunks (the client holds
    little of it)."""
    import urllib.request

    request = urllib.request.Request(url, method="POST")
    received = 0
    with urllib.request.urlopen(request, timeout=600) as resp:
        while chunk := resp.read(MiB):
            received += len(chunk)
    if received != size:
        raise SystemExit(f"big answer: {received} bytes, {size} expected")


def run_side(
    side: str,
    args: argparse.Namespace,
    env: dict[str, str],
    bodies: dict[str, str],
    upstream: str | None,
) -> dict[str, float]:
    """Start ``side``, run every workload it takes, stop it."""
    if side == "bare":
        server, base = start_bare(env)
    else:
        extra = ["--workers", str(args.workers)]
        if side == "ours":
            extra += ["--max-batch-wait-ms", str(args.batch_wait_ms)]
        elif side == "unbatched":
            extra += ["--max-batch-size", "1"]
        server, base = start_server(
            extra,
            env=env,
            executable=upstream if side == "upstream" else None,
            log_args=(),  # default logging, access log included
            ready_path="/v2/models/" if side == "upstream" else "/readyz",
        )
    figures: dict[str, float] = {}
    try:
        # Memory first, on a quiet server: the loads leave the tree's RSS
        # moving for a while after they end.
        if side == "ours":
            figures["1 GiB upload: tree peak RSS growth (MiB)"] = upload_peak_growth(
                server.pid, base + PAYLOAD, Path(bodies["gib"])
            )
            size = args.big_answer_mib * MiB
            figures[
                f"{args.big_answer_mib} MiB answer: server peak RSS growth (MiB)"
            ] = peak_server_rss_growth(
                server.pid,
                lambda: big_answer(
                    f"{base}{PAYLOAD}?kind=bytes&count={size}&accept=image/png",
                    size,
                ),
            )
        for load in workloads():
            path = load.paths.get(side)
            if path is None:
                continue
            body = bodies[load.body] if load.body else None
            method = "GET" if path == "/v2/models/" else "POST"
            # The same load for a second first: a warm path, warm connections.
            for seconds in (1, args.seconds):
                if seconds == args.seconds and side in ("ours", "unbatched"):
                    # the warm-up's end replaced workers: measure without that
                    wait_workers_settled(base + "/metrics")
                rps, p50 = wrk_load(
                    method,
                    base + path,
                    load.concurrency,
                    seconds,
                    args.scratch,
                    body_file=body,
                    content_type=load.content_type,
                )
            figures[load.name] = p50 if load.figure == "p50 ms" else rps
    finally:
        stop_server(server)
    return figures


TARGETS: dict[str, tuple[str, str, float]] = {
    # figure: (numerator side, denominator side, at least)
    "upload 64 KiB c=16": ("ours", "bare", 0.60),
    "upload 1 MiB c=8": ("ours", "bare", 0.50),
    "PNG bytes out c=8": ("ours", "bare", 0.50),
    "open file out c=8": ("ours", "bare", 0.50),
    "batch model c=32": ("ours", "unbatched", 8.0),
}
UPSTREAM_TARGETS = {
    "upload 64 KiB c=16": 4.0,
    "JSON 100k floats in c=8": 2.0,
    "JSON 100k floats out c=8": 2.0,
}


def report(
    results: dict[str, list[dict[str, float]]], args: argparse.Namespace
) -> None:
    sides = [s for s in ("ours", "unbatched", "upstream", "bare") if results.get(s)]
    names: list[str] = []
    for rounds in results.values():
        for figures in rounds:
            names += [n for n in figures if n not in names]

    def median(side: str, name: str) -> float | None:
        values = [r[name] for r in results.get(side, []) if name in r]
        return statistics.median(values) if values else None

    print()
    print(
        "| figure | "
        + " | ".join(sides)
        + " | ours / bare | ours / upstream | target |"
    )
    print("|---|" + "---:|" * len(sides) + "---:|---:|---|")
    per_request = {w.name: w.bytes_per_request for w in workloads()}
    for name in names:
        cells = []
        for side in sides:
            value = median(side, name)
            if value is None:
                cells.append("")
                continue
            cell = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
            if per_request.get(name):
                cell += f" ({value * per_request[name] / MiB:,.0f} MiB/s)"
            cells.append(cell)
        ours = median("ours", name)
        bare, upstream = median("bare", name), median("upstream", name)
        to_bare = f"{ours / bare:.0%}" if ours and bare else ""
        to_upstream = f"{ours / upstream:.2f}x" if ours and upstream else ""
        target = ""
        if name in TARGETS:
            top, bottom, least = TARGETS[name]
            a, b = median(top, name), median(bottom, name)
            if a is not None and b:
                shown = f"{least:.0%}" if least < 1 else f"{least:g}x"
                met = "met" if a / b >= least else "NOT MET"
                target = f"{top}/{bottom} >= {shown} ({a / b:.2f}): {met}"
        if name in UPSTREAM_TARGETS and ours and upstream:
            least = UPSTREAM_TARGETS[name]
            met = "met" if ours / upstream >= least else "NOT MET"
            target += ("; " if target else "") + f">= {least:g}x upstream: {met}"
        if name == "batch model c=1":
            a, b = median("ours", name), median("unbatched", name)
            if a is not None and b is not None:
                limit = b + args.batch_wait_ms
                met = "met" if a <= limit else "NOT MET"
                target = f"p50 <= unbatched + wait ({limit:.2f} ms): {met}"
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {to_bare} | {to_upstream} | {target} |"
        )
    print()
    for side in sides:
        for index, figures in enumerate(results[side]):
            shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
            print(f"round {index + 1} {side:9} {shown}")
    print(
        f"\n{args.rounds} round(s), {args.seconds:g} s per load (wrk, 1 thread), "
        f"{args.workers} workers, {os.cpu_count()} CPUs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="per load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--sides",
        default="bare,ours,unbatched,upstream",
        help="which of bare, ours, unbatched, upstream to run",
    )
    parser.add_argument("--upload-mib", type=int, default=1024)
    parser.add_argument("--big-answer-mib", type=int, default=256)
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="ours' --max-batch-wait-ms (the c=1 latency allowance)",
    )
    parser.add_argument("--upstream-venv", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.upload_mib, args.big_answer_mib = 1, 1, 8, 8
    if not shutil.which("wrk"):
        raise SystemExit("payloads.py needs wrk (apt-get install wrk)")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]

    with tempfile.TemporaryDirectory(prefix="deepaas-payloads-") as scratch:
        args.scratch = scratch
        root = Path(scratch)
        install_model(root / "site")
        sys.path.insert(0, str(root / "site"))
        bodies = write_bodies(root)
        bodies["gib"] = str(sparse_file(root / "upload.bin", args.upload_mib))
        env = {
            **os.environ,
            "PYTHONPATH": str(root / "site"),
            "TMPDIR": scratch,
            "DEEPAAS_BENCH_IMAGE": bodies["image"],
        }
        env.pop("DEEPAAS_V2_MODEL", None)
        upstream = None
        if "upstream" in sides:
            upstream = ensure_upstream(args.upstream_venv) if args.upstream_venv else (
                ensure_upstream(HERE / ".venvs" / "deepaas-2.6.0")
            )  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in sides:
                env["XDG_DATA_HOME"] = str(root / f"state-{side}-{round_}")
                figures = run_side(side, args, env, bodies, upstream)
                results[side].append(figures)
                print(f"round {round_ + 1} {side} done", flush=True)
        report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

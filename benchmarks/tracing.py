"""What tracing costs per prediction: predict with tracing off, on with every
request sampled (``always_on``), and on with a tenth of them
(``traceidratio`` 0.1), side by side on this machine.

Each round starts our server three times in turn (same model, same workers)
and measures predict requests/s at concurrency 32 and p50 latency at
concurrency 1. The traced servers (and their workers) send their spans over
OTLP/HTTP to a sink on loopback that reads each export and answers it, as a
collector would, and counts the bytes. Medians over rounds and the ratio to
"off" are printed. Every load is bounded in time; nothing leaves loopback.

    python benchmarks/tracing.py
    python benchmarks/tracing.py --quick --client aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from aiohttp import web
from common import drive, free_port, start_server, wrk_load
from compare import install_model


class Sink:
    """An OTLP/HTTP endpoint that takes every export and keeps nothing but
    how many bytes came."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.exports = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()))

    async def _take(self, request: web.Request) -> web.Response:
        self.received += len(await request.read())
        self.exports += 1
        return web.Response(content_type="application/x-protobuf")

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Sink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def measure(args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    server, base = start_server(
        ["--model-name", "bench", "--workers", str(args.workers), "--noaccess-log"],
        env=env,
    )
    try:
        predict = f"{base}/v2/models/bench/predict/?text=hello"
        warm = asyncio.run(drive("POST", predict, 200, 8, 10))
        if warm["non_200"]:
            raise SystemExit(f"{warm['non_200']} answers were not 200")
        if args.client == "wrk":
            rps = wrk_load("POST", predict, 32, args.seconds, args.scratch)[0]
            p50 = wrk_load("POST", predict, 1, args.seconds, args.scratch)[1]
        else:
            rps = asyncio.run(drive("POST", predict, 20000, 32, args.seconds))["rps"]
            p50 = asyncio.run(drive("POST", predict, 5000, 1, args.seconds))["p50_ms"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"predict c=32 (req/s)": rps, "predict c=1 p50 (ms)": p50}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5, help="per load")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--client",
        choices=["wrk", "aiohttp"],
        default="wrk" if shutil.which("wrk") else "aiohttp",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1

    with (
        tempfile.TemporaryDirectory(prefix="deepaas-tracing-") as scratch,
        Sink() as sink,
    ):
        args.scratch = scratch
        root = Path(scratch)
        install_model(root / "site")
        base_env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch}
        base_env.pop("DEEPAAS_V2_MODEL", None)
        for name in [n for n in base_env if n.startswith("OTEL_")]:
            del base_env[name]
        traced = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}",
            "OTEL_SERVICE_NAME": "deepaas-bench",
        }
        sides = {
            "off": {},
            "always": {**traced, "OTEL_TRACES_SAMPLER": "always_on"},
            "10%": {
                **traced,
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            },
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            for name, extra in sides.items():
                env = {**base_env, **extra}
                env["XDG_DATA_HOME"] = str(root / f"state-{name}-{round_}")
                figures = measure(args, env)
                results[name].append(figures)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                print(f"round {round_ + 1} {name:8} {shown}", flush=True)
        exported = sink.received

    print()
    print(f"{'figure':24}" + "".join(f" {n:>10}" for n in results)
          + "".join(f" {n + '/off':>12}" for n in list(results)[1:]))  # fmt: skip
    for key in results["off"][0]:
        medians = {
            name: statistics.median(r[key] for r in rounds)
            for name, rounds in results.items()
        }
        line = f"{key:24}" + "".join(f" {v:10.2f}" for v in medians.values())
        for name in list(results)[1:]:
            line += f" {medians[name] / medians['off']:11.3f}x"
        print(line)
    print(
        f"\n{args.rounds} round(s), {args.workers} workers, {os.cpu_count()} CPUs, "
        f"load by {args.client} ({args.seconds:g} s per load), access log off; "
        f"{exported / 1e6:.1f} MB of spans exported to the sink"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

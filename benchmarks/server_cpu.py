"""What one prediction costs the server process: its CPU per request under
load, beside earlier commits, in interleaved rounds.

The plain predict path is bound by the server's one event loop: at c=32 it
runs near a whole core, so its CPU time per request is what sets the rate,
and it moves less than the rate does with the machine's other load. For the
working tree and each ``REF`` (installed as ``regression.py`` installs them),
round after round, this starts the server (the ``bench`` model, 2 workers,
default options plus ``--args``), warms it for 2 s, and reads from /proc the
CPU time of the server process and of its workers around a wrk load at c=32.

    python benchmarks/server_cpu.py 0fbb6dc
    python benchmarks/server_cpu.py 0fbb6dc --args=--noaccess-log
    python benchmarks/server_cpu.py 0fbb6dc --upload  # the 64 KiB upload, c=16
    python benchmarks/server_cpu.py HEAD --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from common import TreeCPU, descendants, start_server, stop_server, wrk_load
from compare import install_model
from regression import ensure_ref, ensure_worktree, multipart_body, resolve

PREDICT = "/v2/models/bench/predict/?text=hello"
UPLOAD = "/v2/models/bench/predict/"


def measure(
    executable: str, env: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    """Requests/s and CPU µs per request of the server and of its workers."""
    server, base = start_server(
        ["--model-name", "bench", "--workers", "2", *args.extra],
        env=env,
        executable=executable,
        log_args=(),  # every side at its default logging
    )
    try:
        url = base + (UPLOAD if args.upload else PREDICT)
        wrk_load("POST", url, args.concurrency, args.warm, args.scratch, **args.body)
        tree = TreeCPU(server.pid, [server.pid, *descendants(server.pid)])
        rate, _ = wrk_load(
            "POST", url, args.concurrency, args.seconds, args.scratch, **args.body
        )
        spent = tree.stop()
    finally:
        stop_server(server)
    requests = rate * max(1, round(args.seconds))
    own = spent.pop(server.pid)
    return {
        "req/s": rate,
        "server µs/req": own / requests * 1e6,
        "workers µs/req": sum(v for v in spent.values() if v > 0) / requests * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="*", help="tags or commits to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8, help="each load")
    parser.add_argument("--args", default="", help="more deepaas-run options")
    parser.add_argument(
        "--upload", action="store_true", help="the 64 KiB upload, c=16, instead"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    args.extra = shlex.split(args.args)
    args.warm = 2
    args.concurrency = 16 if args.upload else 32
    if args.quick:
        args.rounds, args.seconds, args.warm = 1, 1, 1
    sides = {"ours": ensure_worktree()}
    for ref in args.refs:
        sides[resolve(ref)[:7]] = ensure_ref(resolve(ref))
    with tempfile.TemporaryDirectory(prefix="deepaas-server-cpu-") as scratch:
        args.scratch = scratch
        root = Path(scratch)
        args.body = {}
        if args.upload:
            body, body_type = multipart_body(root / "upload.body")
            args.body = {"body_file": str(body), "content_type": body_type}
        install_model(root / "site")
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch}
        env.pop("DEEPAAS_V2_MODEL", None)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        names = list(sides)
        for round_ in range(args.rounds):
            turn = round_ % len(names)  # none always goes first
            for name in names[turn:] + names[:turn]:
                env["XDG_DATA_HOME"] = str(root / f"state-{round_}-{name}")
                results[name].append(measure(sides[name], env, args))
                figures = ", ".join(
                    f"{k} {v:,.0f}" for k, v in results[name][-1].items()
                )
                print(f"round {round_ + 1} {name}: {figures}", flush=True)
    print()
    print("| side | req/s | server µs/req | workers µs/req |")
    print("|---|---:|---:|---:|")
    for name, rounds in results.items():
        cells = [statistics.median(r[key] for r in rounds) for key in rounds[0]]
        print(f"| {name} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")
    print(
        f"\n{args.rounds} round(s), medians; "
        f"{'a 64 KiB upload, ' if args.upload else ''}"
        f"wrk -t1 -c{args.concurrency} for {args.seconds:g} s "
        f"after a {args.warm} s warm-up; 2 workers, {os.cpu_count()} CPUs; "
        f"options: {args.args or 'defaults'}; ours: the working tree on "
        f"{resolve('HEAD')[:7]}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

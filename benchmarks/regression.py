"""The working tree against earlier commits (and upstream 2.6.0), side by side.

Installs the working tree, and each ``REF`` (a tag or commit of this
repository), in a virtualenv of its own (kept in ``benchmarks/.venvs/``), all
alike (not editable); with ``--upstream``, upstream DEEPaaS 2.6.0 in another.
Then, round after round, starts each server in turn on 127.0.0.1 (each round
in another order), each with its own state directory, the benchmark model
(``bench``: a small dict back; a file argument of which it reads only the
size) and two workers at default options, and measures:

- predict requests/s at concurrency 32, and p50 latency at concurrency 1 (wrk);
- a 64 KiB upload at concurrency 16, requests/s (wrk);
- a 1 MiB answer of bytes (the payload model's PNG, ``accept=image/png``) at
  concurrency 8, requests/s (wrk; a server of its own, serving that model);
- an asynchronous prediction's round trip (``Prefer: respond-async``, then its
  event stream to its ``result`` event), p50 ms;
- an event-stream message: how long a training's printed line takes to reach
  a client following ``.../events``, p50 ms.

The working tree runs a second time with an API key (``--api-keys-file``, the
key sent as ``Authorization: Bearer``) for the two predict figures, shown in a
table of their own beside the others' figures.

The bare aiohttp handlers of ``bare.py`` (one process, no access log, no
model) run beside them for the two figures they have: the upload (read chunk
by chunk, its size answered) and the 1 MiB answer (from memory).

It prints each figure's median over the rounds, per side, and the ratio of
ours to each other side. A side without a feature (an early commit had no
jobs) shows n/a. Every load is bounded in time; nothing leaves loopback.

    python benchmarks/regression.py 0fbb6dc --upstream
    python benchmarks/regression.py 0fbb6dc ef2a746 --upstream
    python benchmarks/regression.py HEAD~1 --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from common import start_server, stop_server, wrk_load
from compare import DEFAULT_UPSTREAM_VENV, ensure_upstream, install_model
from payloads import start_bare

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENVS = HERE / ".venvs"
UPLOAD_SIZE = 64 * 1024
BARE = "bare aiohttp"
WITH_KEY = "ours, API key"
API_KEY = "regression-key-0123456789abcdef"
PREDICT_FIGURES = ("predict c=32 (req/s)", "predict c=1 p50 (ms)")
PNG_ANSWER = "/v2/models/bench-payload/predict/?kind=png&accept=image/png"
ROUND_TRIPS = 40  # asynchronous predictions timed per round
EVENT_LINES = 40  # training lines timed per round


def resolve(ref: str) -> str:
    """The full commit id of ``ref``."""
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def ensure_ref(commit: str) -> str:
    """deepaas-run of a virtualenv holding this repository at ``commit``
    (made if missing)."""
    venv = VENVS / f"deepaas-{commit[:12]}"
    run = venv / "bin" / "deepaas-run"
    if run.exists():
        return str(run)
    print(f"creating {venv} with deepaas at {commit[:12]} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="deepaas-ref-") as source:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", source], check=True
        )
    return str(run)


def ensure_worktree() -> str:
    """deepaas-run of a virtualenv holding the working tree as it is now,
    installed as the commits are (not editable, its own dependencies), so
    that both sides are alike but for the code."""
    venv = VENVS / "deepaas-worktree"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="deepaas-worktree-") as source:
        for name in filter(None, listed.split("\0")):
            if not (REPO / name).is_file():
                continue  # removed from the working tree
            target = Path(source) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet"]
        if not (venv / "bin" / "deepaas-run").exists():
            print(f"creating {venv} with the working tree ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([*pip, source], check=True)
        else:
            subprocess.run([*pip, "--no-deps", "--force-reinstall", source], check=True)
    return str(venv / "bin" / "deepaas-run")


def multipart_body(path: Path) -> tuple[Path, str]:
    """A multipart body of one 64 KiB file part (``data``), and its type."""
    boundary = "regression-b0undary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="data"; filename="sample.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += bytes(range(256)) * (UPLOAD_SIZE // 256)
    body += f"\r\n--{boundary}--\r\n".encode()
    path.write_bytes(body)
    return path, f"multipart/form-data; boundary={boundary}"


async def until_result(session: aiohttp.ClientSession, url: str) -> str | None:
    """Follow an event stream to its ``result`` event; its last event name."""
    name = None
    async with session.get(url) as response:
        if response.status != 200:
            return None
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif not line and name == "result":
                return name
    return name


async def job_round_trips(base: str, count: int) -> float | None:
    """p50 ms from sending an asynchronous prediction to its result event;
    None when the server has no asynchronous predictions."""
    predict = f"{base}/v2/models/bench/predict/?text=hello"
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(
                predict, headers={"Prefer": "respond-async"}
            ) as response:
                if response.status != 202:
                    return None
                job = await response.json()
            if await until_result(session, base + job["links"]["self"] + "/events") != (
                "result"
            ):
                raise SystemExit(f"{base}: the job's stream did not end in a result")
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def event_latency(base: str, lines: int) -> float | None:
    """p50 ms from a training printing a line (its time is the line) to a
    client of its event stream reading it; None without event streams."""
    train = f"{base}/v2/models/bench/train/?lines={lines}&interval=0.02"
    delays = []
    async with aiohttp.ClientSession() as session:
        async with session.post(train) as response:
            if response.status != 200:
                return None
            training = await response.json()
        url = f"{base}/v2/models/bench/train/{training['uuid']}/events"
        async with session.get(url) as response:
            if response.status != 200:
                return None
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                received = time.time()
                if line.startswith("data: at "):
                    delays.append(received - float(line.split()[-1]))
                elif line.startswith("event: result"):
                    break
    return statistics.median(delays) * 1000 if delays else None


def measure(
    executable: str | None, env: dict[str, str], args: argparse.Namespace
) -> dict[str, float | None]:
    """The figures of one server, started and stopped here."""
    if executable == BARE:
        return measure_bare(env, args)
    if executable == WITH_KEY:
        return measure_with_key(env, args)
    upstream = executable is not None and executable == args.upstream_run
    # upstream has no /readyz (it warms up before it listens)
    ready_path = "/v2/models/" if upstream else "/readyz"
    server, base = start_server(
        ["--model-name", "bench", "--workers", "2"],
        env=env,
        executable=executable,
        log_args=(),  # every side at its default logging
        ready_path=ready_path,
    )
    figures: dict[str, float | None] = {}
    try:
        figures.update(predict_loads(base, args))
        figures[UPLOAD] = upload_load(f"{base}/v2/models/bench/predict/", args)
        figures["job round trip p50 (ms)"] = asyncio.run(
            job_round_trips(base, args.round_trips)
        )
        figures["event-stream message p50 (ms)"] = asyncio.run(
            event_latency(base, args.event_lines)
        )
    finally:
        stop_server(server)
    server, base = start_server(
        ["--model-name", "bench-payload", "--workers", "2"],
        env=env,
        executable=executable,
        log_args=(),
        ready_path=ready_path,
    )
    try:
        figures[ANSWER] = answer_load(base + PNG_ANSWER, args)
    finally:
        stop_server(server)
    return figures


UPLOAD = "64 KiB upload c=16 (req/s)"
ANSWER = "1 MiB bytes answer c=8 (req/s)"


def upload_load(url: str, args: argparse.Namespace) -> float:
    return wrk_load(
        "POST",
        url,
        16,
        args.seconds,
        args.scratch,
        body_file=str(args.body),
        content_type=args.body_type,
    )[0]


def answer_load(url: str, args: argparse.Namespace) -> float:
    wrk_load("POST", url, 8, 1, args.scratch)  # warm the path
    return wrk_load("POST", url, 8, args.seconds, args.scratch)[0]


def predict_loads(
    base: str, args: argparse.Namespace, headers: dict[str, str] | None = None
) -> dict[str, float | None]:
    predict = f"{base}/v2/models/bench/predict/?text=hello"
    wrk_load("POST", predict, 8, 1, args.scratch, headers=headers)  # warm the path
    rate = wrk_load("POST", predict, 32, args.seconds, args.scratch, headers=headers)
    p50 = wrk_load("POST", predict, 1, args.seconds, args.scratch, headers=headers)
    return dict(zip(PREDICT_FIGURES, (rate[0], p50[1]), strict=True))


def measure_with_key(
    env: dict[str, str], args: argparse.Namespace
) -> dict[str, float | None]:
    """The working tree's predict figures with authentication on."""
    keys = Path(args.scratch) / "api-keys"
    keys.write_text(f"{API_KEY} predict bench\n")
    server, base = start_server(
        ["--model-name", "bench", "--workers", "2", "--api-keys-file", str(keys)],
        env=env,
        executable=args.worktree_run,
        log_args=(),
    )
    try:
        return predict_loads(base, args, {"Authorization": f"Bearer {API_KEY}"})
    finally:
        stop_server(server)


def measure_bare(
    env: dict[str, str], args: argparse.Namespace
) -> dict[str, float | None]:
    """The bare handlers' figures: the upload and the 1 MiB answer."""
    server, base = start_bare(env)
    try:
        upload_load(base + "/upload", args)  # warm the path
        return {
            UPLOAD: upload_load(base + "/upload", args),
            ANSWER: answer_load(base + "/png", args),
        }
    finally:
        stop_server(server)


BETTER_LOWER = ("(ms)",)


def show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def median_of(rounds: list[dict[str, float | None]], key: str) -> float | None:
    """The median of a figure over the rounds; None where a side has none."""
    values = [value for figures in rounds if (value := figures.get(key)) is not None]
    return statistics.median(values) if values else None


def table(
    medians: dict[str, dict[str, float | None]],
    names: list[str],
    mine: str,
    label: str,
    figures: tuple[str, ...] | None = None,
) -> None:
    """The medians of ``names`` per figure, and the ratio of ``mine``'s to
    each other side's."""
    others = [name for name in names if name != mine]
    print(
        "| figure | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{label} / {name.split()[0]}" for name in others)
        + " |"
    )
    print("|---|" + "---:|" * (len(names) + len(others)))
    for key in figures or medians[mine]:
        ratios = []
        for name in others:
            theirs, value = medians[name][key], medians[mine][key]
            ratios.append(
                "n/a" if not theirs or value is None else f"{value / theirs:.2f}x"
            )
        lower = " (lower is better)" if key.endswith(BETTER_LOWER) else ""
        print(
            f"| {key}{lower} | "
            + " | ".join(show(medians[name][key]) for name in names)
            + " | "
            + " | ".join(ratios)
            + " |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+", help="the tags or commits to compare with")
    parser.add_argument("--upstream", action="store_true", help="and DEEPaaS 2.6.0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="each wrk load")
    parser.add_argument("--upstream-venv", type=Path, default=DEFAULT_UPSTREAM_VENV)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    args.round_trips, args.event_lines = ROUND_TRIPS, EVENT_LINES
    if args.quick:
        args.rounds, args.seconds, args.round_trips, args.event_lines = 1, 1, 5, 5
    args.worktree_run = ensure_worktree()
    sides: dict[str, str | None] = {"ours": args.worktree_run}
    for ref in args.refs:
        commit = resolve(ref)
        name = commit[:7] if ref.startswith(commit[:7]) else f"{ref} ({commit[:7]})"
        sides[name] = ensure_ref(commit)
    args.upstream_run = None
    if args.upstream:
        args.upstream_run = sides["upstream 2.6.0"] = ensure_upstream(
            args.upstream_venv
        )
    sides[BARE] = BARE
    sides[WITH_KEY] = WITH_KEY

    with tempfile.TemporaryDirectory(prefix="deepaas-regression-") as scratch:
        args.scratch = scratch
        root = Path(scratch)
        install_model(root / "site")
        args.body, args.body_type = multipart_body(root / "upload.body")
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch}
        env.pop("DEEPAAS_V2_MODEL", None)
        results: dict[str, list[dict[str, float | None]]] = {n: [] for n in sides}
        names = list(sides)
        for round_ in range(args.rounds):
            # Each round in another order: none always goes first.
            turn = round_ % len(names)
            for name in names[turn:] + names[:turn]:
                executable = sides[name]
                # each server with its own state directory
                env["XDG_DATA_HOME"] = str(root / f"state-{round_}-{name.split()[0]}")
                figures = measure(executable, env, args)
                results[name].append(figures)
                print(
                    f"round {round_ + 1} {name}: "
                    + ", ".join(f"{k} {show(v)}" for k, v in figures.items()),
                    flush=True,
                )

    medians = {
        name: {key: median_of(rounds, key) for key in results["ours"][0]}
        for name, rounds in results.items()
    }
    print()
    table(medians, [n for n in sides if n != WITH_KEY], "ours", "ours")
    print()
    table(
        medians,
        [WITH_KEY, *(n for n in sides if n not in ("ours", WITH_KEY, BARE))],
        WITH_KEY,
        "with key",
        PREDICT_FIGURES,
    )
    print(
        f"\n{args.rounds} round(s), sides in turn, medians; wrk -t1 for "
        f"{args.seconds:g} s per load; {ROUND_TRIPS if not args.quick else 5} job "
        f"round trips, {args.event_lines} training lines per round; 2 workers, "
        f"{os.cpu_count()} CPUs; ours: the working tree on {resolve('HEAD')[:7]}, "
        "installed as the others are."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

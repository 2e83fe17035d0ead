"""Quick runs of the benchmark scripts, so that they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real servers under load

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300,
        cwd=BENCHMARKS,
    )  # fmt: skip


def test_compare_smoke_run_prints_every_figure():
    result = run_script("compare.py", "--ours-only", "--quick", "--client", "aiohttp")
    assert result.returncode == 0, result.stderr
    for figure in (
        "cold start (s)",
        "idle RSS (MiB)",
        "GET /v2/models/ c=32 (req/s)",
        "predict c=32 (req/s)",
        "predict c=1 p50 (ms)",
        "upload peak RSS growth (MiB)",
    ):
        assert figure in result.stdout


def test_soak_smoke_run_loses_nothing():
    result = run_script("soak.py", "--requests", "400", "--concurrency", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost requests          0" in result.stdout
    assert "upload temp files left 0" in result.stdout
    assert re.search(r"async jobs started\s+[1-9]\d*, not done 0", result.stdout)


def test_hostile_soak_smoke_run_loses_nothing_and_leaks_no_descriptor():
    result = run_script(
        "soak.py", "--requests", "400", "--concurrency", "8", "--hostile"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost requests          0" in result.stdout
    start, end = re.search(
        r"open fds\s+(\d+) at start, (\d+) at end", result.stdout
    ).groups()
    assert int(end) <= int(start) + 2  # the probe's own keep-alive, at most
    for hostile in ("gzip bomb", "3000-part upload", "slow headers"):
        assert hostile in result.stdout
    assert "/healthz during it" in result.stdout


def test_predict_load_smoke_run():
    result = run_script("predict_load.py", "--requests", "200", "--concurrency", "4")
    assert result.returncode == 0, result.stderr
    assert "POST predict" in result.stdout


def test_payloads_smoke_run_prints_every_figure():
    result = run_script("payloads.py", "--quick", "--sides", "bare,ours,unbatched")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        line.split("|")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| ")
    }
    for figure in (
        "upload 64 KiB c=16",
        "upload 1 MiB c=8",
        "PNG bytes out c=8",
        "open file out c=8",
        "JSON 100k floats in c=8",
        "JSON 100k floats out c=8",
        "batch model c=32",
        "batch model c=1",
        "1 GiB upload: tree peak RSS growth (MiB)",
    ):
        assert figure in rows, result.stdout
    # the upload memory bound holds
    growth = float(rows["1 GiB upload: tree peak RSS growth (MiB)"].split("|")[2])
    assert growth < 64


@pytest.mark.ray
def test_compare_smoke_run_with_the_ray_executor():
    result = run_script(
        "compare.py", "--ours-only", "--ray", "--quick", "--client", "aiohttp"
    )
    assert result.returncode == 0, result.stderr
    assert "ours-ray" in result.stdout
    assert "per-call overhead of the Ray executor" in result.stdout


@pytest.mark.ray
def test_ray_upload_smoke_run_reaches_the_far_node():
    result = run_script("ray_upload.py", "--mib", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "size the model saw: 8388608 bytes" in result.stdout
    assert "peak growth" in result.stdout


def test_auth_cost_smoke_run_compares_the_three_sides():
    result = run_script("auth_cost.py", "--quick", "--client", "aiohttp")
    assert result.returncode == 0, result.stdout + result.stderr
    for side in ("off", "api-key", "oidc", "api-key/off", "oidc/off"):
        assert side in result.stdout
    assert "predict c=32 (req/s)" in result.stdout
    assert "oidc, first use of a token" in result.stdout


def test_tracing_smoke_run_compares_off_and_on():
    result = run_script("tracing.py", "--quick", "--client", "aiohttp")
    assert result.returncode == 0, result.stdout + result.stderr
    for side in ("off", "always", "10%", "always/off", "10%/off"):
        assert side in result.stdout
    exported = re.search(r"([\d.]+) MB of spans exported", result.stdout)
    assert exported is not None and float(exported.group(1)) > 0


def test_reload_smoke_run_loses_no_request():
    result = run_script("reload.py", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"failed in all rounds\s+0$", result.stdout, re.MULTILINE)
    reload_seconds = re.search(r"reload s\s+([\d.]+)", result.stdout)
    assert reload_seconds is not None and float(reload_seconds.group(1)) > 0


def test_jobs_smoke_run_completes_every_job():
    result = run_script("jobs.py", "--jobs", "200", "--max-seconds", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"not done\s+0\.00", result.stdout)
    assert "completed/s" in result.stdout and "sync predict/s" in result.stdout


def test_long_jobs_smoke_run_measures_events_and_delivers_every_webhook():
    result = run_script("long_jobs.py", "--lines", "20", "--jobs", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "log line to event stream client: 20 lines" in result.stdout
    assert re.search(r"delivered\s+4\.00", result.stdout)


def test_upload_ceiling_smoke_run_prints_every_side():
    sides = "bare,ours,no-access-log,forms-in-server,forward"
    result = run_script("upload_ceiling.py", "--quick", "--sides", sides)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:-1]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| side")
    }
    assert set(rows) == set(sides.split(","))
    for side, cells in rows.items():
        rps, _, _, server_ms, workers_ms, _ = (c.strip() for c in cells)
        assert float(rps.replace(",", "")) > 0, side
        assert float(server_ms) > 0, side
        if side != "bare":  # the model's workers did the calls
            assert float(workers_ms) > 0, side


def test_regression_smoke_run_prints_every_figure_beside_a_commit():
    """Against this commit itself, installed in a virtualenv of its own, and
    the bare handlers for the figures they have."""
    result = run_script("regression.py", "HEAD", "--quick")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| figure |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[1] == "ours" and columns[3] == "bare aiohttp", columns
    bare_figures = ("64 KiB upload c=16 (req/s)", "1 MiB bytes answer c=8 (req/s)")
    for figure in (
        "predict c=32 (req/s)",
        "predict c=1 p50 (ms)",
        *bare_figures,
        "job round trip p50 (ms)",
        "event-stream message p50 (ms)",
    ):
        row = next(line for line in lines if line.startswith(f"| {figure}"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        ours, commit, bare = (cells[1], cells[2], cells[3])
        assert float(ours.replace(",", "")) > 0, row
        assert float(commit.replace(",", "")) > 0, row
        if figure in bare_figures:
            assert float(bare.replace(",", "")) > 0, row
            assert cells[-1].endswith("x"), row  # ours / bare
        else:
            assert bare == "n/a", row
    # and the working tree with an API key, for the predict figures
    header = next(line for line in lines if line.startswith("| figure | ours, API key"))
    for figure in ("predict c=32 (req/s)", "predict c=1 p50 (ms)"):
        rows = [line for line in lines if line.startswith(f"| {figure}")]
        cells = [cell.strip() for cell in rows[-1].strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0, (header, rows[-1])
        assert cells[-1].endswith("x"), rows[-1]  # with key / the commit


def test_server_cpu_smoke_run_prints_the_cost_per_request():
    result = run_script("server_cpu.py", "--quick", "--args=--noaccess-log")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| ours"))
    rate, server, workers = (
        float(cell.strip().replace(",", "")) for cell in row.strip("|").split("|")[1:]
    )
    assert rate > 0 and server > 0 and workers > 0, row
    assert "options: --noaccess-log" in result.stdout


@pytest.mark.postgres
def test_replicas_smoke_run_compares_both_set_ups():
    result = run_script(
        "replicas.py", "--jobs", "60", "--max-seconds", "10", "--lines", "10",
        "--concurrency", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "1 on SQLite" in lines[0] and "2 on PostgreSQL" in lines[0]
    for figure in ("completed/s", "event p50 (ms)"):
        row = next(line for line in lines if line.startswith(figure))
        sqlite, postgres = (float(cell) for cell in row.split()[-2:])
        assert sqlite > 0 and postgres > 0, row

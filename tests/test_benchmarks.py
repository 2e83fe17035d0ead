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

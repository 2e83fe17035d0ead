"""Upstream DEEPaaS 2.6.0 in a virtualenv of its own, beside this deepaas."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

TALLY = pytest.StashKey[dict[str, int]]()
UPSTREAM_VERSION = "2.6.0"
# The benchmark's comparison uses (and makes) the same one.
UPSTREAM_VENV = (
    Path(__file__).parent.parent.parent / "benchmarks" / ".venvs"
    / f"deepaas-{UPSTREAM_VERSION}"
)  # fmt: skip


@pytest.fixture(scope="session")
def upstream_bin() -> Path:
    """The bin directory of a virtualenv with upstream DEEPaaS (made once)."""
    bin_dir = UPSTREAM_VENV / "bin"
    UPSTREAM_VENV.parent.mkdir(parents=True, exist_ok=True)
    # The benchmarks make the same one (benchmarks/compare.py): whoever comes
    # second waits for the first to finish it.
    with open(UPSTREAM_VENV.parent / f"{UPSTREAM_VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bin_dir / "deepaas-run").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(UPSTREAM_VENV)],
                check=True,
            )
            subprocess.run(
                [str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                 f"deepaas=={UPSTREAM_VERSION}"],
                check=True, timeout=900,
            )  # fmt: skip
    return bin_dir


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    counts = config.stash.get(TALLY, None)
    if counts:
        terminalreporter.write_line(
            f"differential test against upstream DEEPaaS {UPSTREAM_VERSION}: "
            f"{counts['identical']} identical answers, {counts['deliberate']} "
            "deliberate differences"
        )

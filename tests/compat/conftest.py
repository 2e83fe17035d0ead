"""Upstream DEEPaaS 2.6.0 in a virtualenv of its own, beside this deepaas."""

from __future__ import annotations

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
    if not (bin_dir / "deepaas-run").exists():
        subprocess.run([sys.executable, "-m", "venv", str(UPSTREAM_VENV)], check=True)
        subprocess.run(
            [str(bin_dir / "pip"), "install", "--quiet",
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

"""A headless Debian chromium, installed by the test set-up when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("DEEPAAS_TEST_ARTIFACTS")
    or Path(__file__).parent.parent / "artifacts"
)


def _install_chromium() -> None:
    """apt-get install Debian's chromium (no browser downloads from elsewhere)."""
    why = f"{CHROMIUM} is missing; install Debian's chromium package"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run the browser tests)")
        pytest.skip(why)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        subprocess.run(command, env=env, check=True, timeout=1200)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium driven by Playwright's sync API: started and stopped per module,
    since its event loop must be gone before the asyncio tests run."""
    if not os.path.exists(CHROMIUM):
        _install_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: the sandbox refuses to run as root (CI containers).
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

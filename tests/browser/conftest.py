"""A headless Debian chromium driven by Playwright.

The browser is a system package (Debian's ``chromium``): ``.ci/run`` installs
it; elsewhere, install it once with ``apt-get install chromium``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("DEEPAAS_TEST_ARTIFACTS")
    or Path(__file__).parent.parent / "artifacts"
)


def _require_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    why = f"{CHROMIUM} is missing; install Debian's chromium package"
    if os.environ.get("CI"):
        pytest.fail(why + " (CI must run the browser tests)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium driven by Playwright's sync API: started and stopped per module,
    since its event loop must be gone before the asyncio tests run."""
    _require_chromium()
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

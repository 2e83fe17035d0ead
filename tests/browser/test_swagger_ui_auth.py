"""Swagger UI against a server with authentication on: the Authorize button.

The spec and the UI are public (--public-docs); the calls need a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import helpers
from tests.browser.test_swagger_ui import execute, operation, param, screenshot

pytestmark = pytest.mark.browser

KEY = "browser-key-0123456789abcdef"
PREDICT = "post_v2_models_deepaas_test_predict_"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[helpers.Server]:
    state = tmp_path_factory.mktemp("ui-auth-state")
    keys = state / "keys"
    keys.write_text(f"{KEY} predict ui-user\n")
    args = ["--state-dir", str(state), "--api-keys-file", str(keys), "--public-docs"]
    with helpers.running_server(args, helpers.env_with(None)) as s:
        yield s


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.goto(server.url + "/api")
    page.wait_for_selector(".opblock")
    yield page
    context.close()


def authorize(page, key: str) -> None:
    """Log in as a person would: Authorize, paste the key, Authorize, Close."""
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    section = dialog.locator(".auth-container", has_text="X-API-Key")
    section.locator("input").fill(key)
    section.locator("button.authorize").click()
    section.locator("button", has_text="Logout").wait_for(timeout=10_000)
    section.locator("button.btn-done").click()


def test_without_a_key_the_ui_shows_the_401(page):
    block = operation(page, PREDICT)
    param(block, "top_k").locator("input").fill("1")
    status, body = execute(block)
    assert status == 401
    assert body["message"].startswith("Authentication required")


def test_with_a_key_the_ui_predicts(page, artifacts: Path):
    authorize(page, KEY)
    block = operation(page, PREDICT)
    param(block, "top_k").locator("input").fill("2")
    status, body = execute(block)
    screenshot(page, block, artifacts / "swagger-ui-authorized.png")
    assert status == 200, body
    assert len(body["predictions"]) == 2
    curl = block.locator(".curl-command").inner_text()
    assert f"X-API-Key: {KEY}" in curl

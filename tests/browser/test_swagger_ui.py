"""Swagger UI in a real (headless) browser against a real deepaas-run.

Drives the page as a person would: expand an operation, "Try it out", fill
in the arguments, attach a file, Execute, and read the answer off the page.
Screenshots go to tests/artifacts/ (or $DEEPAAS_TEST_ARTIFACTS).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import helpers

pytestmark = pytest.mark.browser

MODEL = "deepaas-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[helpers.Server]:
    state = tmp_path_factory.mktemp("ui-state")
    # No model installed: the built-in demo model is served.
    with helpers.running_server(
        ["--state-dir", str(state)], helpers.env_with(None)
    ) as s:
        yield s


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.goto(server.url + "/api")
    page.wait_for_selector(".opblock")
    yield page
    context.close()


def operation(page, op_id: str):
    """An operation's block, expanded, in "Try it out" mode."""
    block = page.locator(f"#operations-models-{op_id}")
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    return block


def execute(block) -> tuple[int, dict]:
    """Click Execute; the status and JSON body the page shows."""
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tr.response .response-col_status")
    status.wait_for(timeout=30_000)
    # the first <pre> is the body, the second the headers
    body = block.locator(
        ".live-responses-table tr.response .response-col_description pre"
    ).first
    return int(status.inner_text().strip()), json.loads(body.inner_text())


def screenshot(page, block, path: Path) -> None:
    """The operation from its title to the live answer, and the whole page."""
    top = block.bounding_box()
    answer = block.locator(".live-responses-table").bounding_box()
    assert top is not None and answer is not None
    # bounding boxes are in viewport coordinates; a full-page clip is not
    scroll_x, scroll_y = page.evaluate("[window.scrollX, window.scrollY]")
    clip = {
        "x": top["x"] + scroll_x,
        "y": top["y"] + scroll_y,
        "width": top["width"],
        "height": answer["y"] + answer["height"] - top["y"],
    }
    page.screenshot(path=str(path), full_page=True, clip=clip)
    page.screenshot(path=str(path.with_suffix(".full.png")), full_page=True)


def param(block, name: str):
    return block.locator(f'tr[data-param-name="{name}"]')


def test_predict_with_a_file(page, artifacts: Path, tmp_path):
    upload = tmp_path / "photo.jpg"
    upload.write_bytes(b"\xff\xd8 not really a jpeg " * 100)
    block = operation(page, "post_v2_models_deepaas_test_predict_")
    param(block, "label").locator("select").select_option("dog")
    param(block, "top_k").locator("input").fill("2")
    param(block, "data").locator('input[type="file"]').set_input_files(str(upload))

    status, body = execute(block)
    screenshot(page, block, artifacts / "swagger-ui-predict.png")

    assert status == 200, body
    assert body["status"] == "OK"
    assert [p["label"] for p in body["predictions"]] == ["dog", "bird"]
    assert body["arguments"]["top_k"] == 2
    sent = body["arguments"]["data"]
    assert sent["filename"] == "photo.jpg"
    assert sent["size"] == upload.stat().st_size
    assert sent["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
    # the curl line the page offers says what was sent
    curl = block.locator(".curl-command").inner_text()
    assert "multipart/form-data" in curl and "photo.jpg" in curl


def test_invalid_argument_shows_the_json_error(page):
    block = operation(page, "post_v2_models_deepaas_test_predict_")
    # (the page itself refuses values out of a declared range; the server
    # is the one to check that a URL is one)
    param(block, "url").locator("input").fill("not a url")
    status, body = execute(block)
    assert status == 422
    assert "url" in body["errors"]
    assert body["message"].startswith("Invalid arguments")


def test_start_a_training_and_read_it(page, artifacts: Path):
    block = operation(page, "post_v2_models_deepaas_test_train_")
    param(block, "epochs").locator("input").fill("1")
    status, started = execute(block)
    assert status == 200, started
    assert started["status"] == "running"
    assert started["args"]["epochs"] == 1
    training_id = started["uuid"]

    block = operation(page, "get_v2_models_deepaas_test_train__uuid_")
    param(block, "uuid").locator("input").fill(training_id)
    deadline = time.monotonic() + 60
    while True:
        status, body = execute(block)
        assert status == 200, body
        if body["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    screenshot(page, block, artifacts / "swagger-ui-training.png")
    assert body["uuid"] == training_id
    assert body["status"] == "done", body
    assert body["result"]["output"]["epochs"] == 1


def test_an_asynchronous_prediction_through_to_its_result(page, artifacts: Path):
    block = operation(page, "post_v2_models_deepaas_test_predict_")
    param(block, "Prefer").locator("select").select_option("respond-async")
    param(block, "top_k").locator("input").fill("2")
    status, job = execute(block)
    assert status == 202, job
    assert job["status"] == "running" and job["args"]["top_k"] == 2
    curl = block.locator(".curl-command").inner_text()
    assert "Prefer: respond-async" in curl

    block = operation(page, "get_v2_models_deepaas_test_predict__id_")
    param(block, "id").locator("input").fill(job["id"])
    deadline = time.monotonic() + 60
    while True:
        status, body = execute(block)
        assert status == 200, body
        if body["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    screenshot(page, block, artifacts / "swagger-ui-async-prediction.png")
    assert body["status"] == "done", body
    assert [p["label"] for p in body["result"]["predictions"]] == ["cat", "dog"]

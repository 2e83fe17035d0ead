"""The real deepaas-predict process (upstream's third command)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import helpers

PREDICT = str(helpers.BIN_DIR / "deepaas-predict")


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG-a-cat")
    return path


@pytest.fixture
def cli(model_sites, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PREDICT, *args],
            env=helpers.env_with(model_sites["testmodels"]),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return cli


def test_a_json_result_is_written_as_json(cli, image, tmp_path):
    out = tmp_path / "out"
    result = cli("-i", str(image), "-o", str(out), "--model-name", "echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Output saved at {out / 'out_cat.json'}"
    assert json.loads((out / "out_cat.json").read_text()) == {
        "name": "cat.png",
        "size": len(image.read_bytes()),
    }


def test_a_returned_file_is_copied(cli, image, tmp_path):
    out = tmp_path / "out"
    result = cli(
        "-i", str(image), "-o", str(out), "-ct", "image/png", "--model-name", "echo"
    )
    assert result.returncode == 0, result.stderr
    assert (out / "out_cat.png").read_bytes() == image.read_bytes()


def test_text_gets_the_extension_of_its_content_type(cli, image, tmp_path):
    result = cli(
        "--model-name", "echo", "--content-type", "text/plain",
        "--input-file", str(image), "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "out_cat.txt").read_text().startswith("cat.png: ")


def test_url_input_goes_to_the_url_argument_in_a_warmed_worker(cli, tmp_path):
    url = "https://example.org/images/cat.png"
    result = cli("-u", "-i", url, "-o", str(tmp_path), "--model-name", "module-model")
    assert result.returncode == 0, result.stderr
    body = json.loads((tmp_path / "out_cat.json").read_text())
    assert body["args"]["link"] == url
    assert body["warmed_in"] == body["pid"]  # warm() ran in that worker


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-name", "minimal"], "exactly one file argument"),
        (["--model-name", "echo", "-ct", "video/mp4"], "--accept: Must be one of"),
        (["--model-name", "module-model", "-ct", "image/png"], "answers only JSON"),
    ],
)
def test_what_cannot_be_done_is_exit_2_with_the_reason(cli, image, args, message):
    result = cli("-i", str(image), "-o", "out", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_input_file_is_exit_2(cli):
    result = cli("-i", "nowhere.png", "-o", "out", "--model-name", "echo")
    assert result.returncode == 2
    assert "No such file: nowhere.png" in result.stderr


def test_input_and_output_are_required(cli):
    result = cli("--model-name", "echo")
    assert result.returncode == 2
    assert "--input-file" in result.stderr

"""The real deepaas-cli process against installed test model packages."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from tests import helpers

CLI = str(helpers.BIN_DIR / "deepaas-cli")


@pytest.fixture
def run(model_sites):
    """Run deepaas-cli (or ``command``) with one test model site installed."""

    def run(
        *args: str, site: str = "testmodels", command: list[str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            command or [CLI, *args],
            env=helpers.env_with(model_sites[site]),
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def test_several_models_and_no_choice_is_an_error(run):
    result = run("get_metadata")
    assert result.returncode == 2
    assert "module-model" in result.stderr and "--model-name" in result.stderr


def test_single_model_needs_no_choice(run):
    result = run("get_metadata", site="single")
    assert result.returncode == 0
    assert json.loads(result.stdout)["name"] == "only-model"


def test_get_metadata(run):
    result = run("--model-name", "module-model", "get_metadata")
    assert result.returncode == 0
    assert json.loads(result.stdout)["author"] == "tests"


def test_warm(run):
    result = run("--model-name", "module-model", "warm")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"model": "module-model", "status": "warmed"}


def test_help_lists_arguments_with_types_and_defaults(run):
    result = run("--model-name", "module-model", "predict", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert (
        "--text TEXT A choice of words. Type: string. Choices: foo, bar, baz." in text
    )
    assert "Default: 'foo'" in text
    assert "--flag FLAG Type: bool (true/false/yes/no/1/0). Default: False." in text
    assert "--data DATA Data file. Type: path of a local file." in text


def test_predict_every_type_and_a_file(run, tmp_path):
    upload = tmp_path / "picture.png"
    upload.write_bytes(b"not really a png")
    result = run(
        "--model-name", "module-model", "predict",
        "--text", "bar", "--count", "4", "--ratio", "0.75", "--flag", "no",
        "--numbers", "[1, 2.5]", "--link", "http://example.org/a", "--mode", "b",
        "--data", str(upload),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["args"] == {
        "text": "bar",
        "count": 4,
        "ratio": 0.75,
        "flag": False,
        "numbers": [1.0, 2.5],
        "link": "http://example.org/a",
        "mode": "b",
    }
    assert body["file"]["original_filename"] == "picture.png"
    assert body["file"]["content_type"] == "image/png"
    assert body["file"]["head"] == "not really a png"
    assert body["file"]["path"] != str(upload)
    assert not os.path.exists(body["file"]["path"])
    assert upload.exists()
    assert body["pid"] == body["warmed_in"]
    assert list(json.loads(result.stdout)) == sorted(body)


@pytest.mark.parametrize("value", ["true", "yes", "1"])
def test_bool_spellings(run, value):
    result = run("--model-name", "module-model", "predict", "--flag", value)
    assert json.loads(result.stdout)["args"]["flag"] is True


def test_in_process_mode(run):
    result = run(
        "--model-name", "module-model", "--nodeepaas_with_multiprocessing", "predict"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["pid"] == body["warmed_in"]


def test_in_process_mode_with_equals_false(run):
    result = run(
        "--model-name", "module-model", "--deepaas_with_multiprocessing=false", "train",
        "--epochs", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"lr": 0.1, "trained_epochs": 3}


def test_missing_required_argument_exits_2(run):
    result = run("--model-name", "plain-args", "predict", "--times", "1")
    assert result.returncode == 2
    assert "--needed: Missing data for required field." in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count: Must be greater than or equal to 1"),
        (["--text", "nope"], "--text: Must be one of: foo, bar, baz."),
        (["--flag", "maybe"], "--flag: Not a valid boolean."),
        (["--numbers", "[1,"], "--numbers: Not a Python/JSON literal"),
        (["--data", "/no/such/file"], "--data: No such file: /no/such/file"),
    ],
)
def test_bad_arguments_exit_2_with_field_messages(run, args, message):
    result = run("--model-name", "module-model", "predict", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_unknown_option_exits_2(run):
    result = run("--model-name", "module-model", "predict", "--colour", "red")
    assert result.returncode == 2
    assert "--colour" in result.stderr


def test_model_exception_exits_1_without_traceback(run):
    result = run("--model-name", "failing", "predict", "--mode", "raise")
    assert result.returncode == 1
    assert "ValueError: the model is unhappy" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(run):
    result = run("--model-name", "failing", "--debug", "predict", "--mode", "raise")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


@pytest.mark.parametrize(
    ("mode", "text"), [("exit", "exit code 3"), ("segfault", "SIGSEGV")]
)
def test_worker_death_exits_3_naming_the_exit(run, mode, text):
    result = run("--model-name", "failing", "predict", "--mode", mode)
    assert result.returncode == 3
    assert text in result.stderr


def test_output_file_for_json(run, tmp_path):
    out = tmp_path / "out.json"
    result = run(
        "--model-name", "module-model", "train", "--epochs", "2",
        "--deepaas_method_output", str(out),
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == ""
    assert json.loads(out.read_text()) == {"lr": 0.1, "trained_epochs": 2}


def test_binary_result_written_raw(run, tmp_path):
    out = tmp_path / "out.png"
    result = run(
        "--model-name", "accept-model", "predict", "--accept", "image/png",
        "--deepaas_method_output", str(out),
    )  # fmt: skip
    assert result.returncode == 0
    assert out.read_bytes() == b"\x89PNG\r\n\x1a\n-fake-png-"
    piped = run("--model-name", "accept-model", "predict")
    assert piped.returncode == 0
    assert piped.stdout.startswith("PK")


def test_binary_result_refused_to_a_terminal(run):
    # script(1) gives the CLI a real terminal as standard output.
    command = f"{CLI} --model-name accept-model predict --accept image/png"
    result = run(command=["script", "-qec", command, "/dev/null"])
    assert result.returncode == 2
    assert "--deepaas_method_output" in result.stdout


class Interruptible:
    """A deepaas-cli process whose standard output is read line by line, so a
    test can wait until it says where it is."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        # As from a terminal: SIGINT is not ignored, even when the tests run
        # in the background (where the shell ignores it for its children).
        self.proc = subprocess.Popen(
            [CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.1):
                    return
            except queue.Empty:
                assert self.proc.poll() is None, self.proc.stderr.read()
        raise AssertionError(f"{text!r} never came")

    def interrupt(self) -> tuple[int, str, float]:
        """SIGINT; the exit status, standard error and the seconds it took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err, time.monotonic() - started


@pytest.mark.parametrize(
    ("args", "where", "extra_env"),
    [
        (
            [
                "--model-name",
                "failing",
                "predict",
                "--mode",
                "sleep",
                "--seconds",
                "60",
            ],
            "sleeping 60",  # the worker is inside predict()
            {},
        ),
        (
            ["warm", "--model-name", "slow-warm"],
            "warming up",  # the worker is inside warm()
            {"SLOW_WARM_SECONDS": "60"},
        ),
        (
            ["--model-name", "slow-load", "get_metadata"],
            "loading the weights",  # the model's import, in the CLI itself
            {"SLOW_LOAD_SECONDS": "60"},
        ),
    ],
    ids=["in-predict", "in-warm", "in-load"],
)
def test_ctrl_c_stops_at_once_and_leaves_no_process(
    model_sites, args, where, extra_env
):
    cli = Interruptible(args, helpers.env_with(model_sites["testmodels"], **extra_env))
    cli.wait_for(where)
    workers = helpers.children(cli.proc.pid)
    status, err, seconds = cli.interrupt()
    assert status == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert seconds < 10
    assert helpers.wait_until(
        lambda: not any(helpers.pid_alive(p) for p in workers), 10
    )


def test_model_name_after_the_command(run):
    result = run("predict", "--model-name", "module-model", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["args"]["count"] == 3
    warm = run("warm", "--model-name", "module-model")
    assert json.loads(warm.stdout) == {"status": "warmed", "model": "module-model"}


def test_closed_pipe_is_not_a_traceback(run):
    # "true" exits without reading: the pipe is closed before the CLI writes.
    command = f"{CLI} --model-name module-model get_metadata | true"
    result = run(command=["bash", "-c", command])
    assert result.returncode == 0  # the pipeline's status is true's
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr


def test_dict_literal_argument(run):
    result = run(
        "--model-name", "module-model", "train", "--epochs", "1",
        "--options", "{'depth': 3, 'names': ['a', 'b']}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["options"] == {"depth": 3, "names": ["a", "b"]}
    bad = run(
        "--model-name", "module-model", "train", "--epochs", "1", "--options", "[1]"
    )
    assert bad.returncode == 2
    assert "--options: Not a valid mapping type." in bad.stderr


def test_train_says_how_far_it_got_in_plain_lines_off_a_terminal():
    result = subprocess.run(
        [CLI, "train", "--epochs", "2"],
        env=helpers.env_with(None),  # the demo model: one second an epoch
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("train:")]
    assert lines[0].startswith("train: 50% epoch 1 of 2: loss ")
    assert lines[-1].startswith("train: 100% epoch 2 of 2: loss ")
    assert json.loads(result.stdout)["epochs"] == 2  # the result is untouched


def test_train_draws_a_progress_bar_on_a_terminal():
    import pty

    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        [CLI, "train", "--epochs", "2"],
        env=helpers.env_with(None),
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal is closed: the process has ended
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "train: 100%|" in text and "epoch 2 of 2" in text
    assert "\r" in text  # redrawn in place, not line after line
    assert json.loads(stdout)["epochs"] == 2

"""Settings: the options read once, by concern, into typed objects."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from deepaas import config, settings
from deepaas.settings import Settings

PACKAGE = Path(settings.__file__).parent


def test_every_option_is_a_field_of_its_concern_and_nothing_else():
    assert [cls.concern for cls in settings.CLASSES] == [
        concern.name for concern in config.CONCERNS
    ]
    for cls, concern in zip(settings.CLASSES, config.CONCERNS, strict=True):
        fields = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
        assert fields == [opt.dest for opt in concern.opts], cls.__name__
    by_concern = [field.name for field in dataclasses.fields(Settings)]
    assert by_concern == [concern.name for concern in config.CONCERNS]


def test_settings_are_read_from_the_command_line_typed():
    read = Settings.parse(
        [
            "--base-path",
            "models/",
            "--cors-origin",
            "https://a.example",
            "--cors-origin",
            "https://b.example",
            "--worker-gpus",
            "0, 1,",
            "--worker-resources",
            "tpu:2",
            "--use-json",
            "--log-dir",
            "/var/log/x",
            "--state-dir",
            "/srv/state",
            "--max-jobs",
            "7",
        ]
    )
    assert read.server.base == "/models"
    assert read.security.cors_origin == ("https://a.example", "https://b.example")
    assert read.workers.devices == ["0", "1"]
    assert read.workers.worker_resources == {"tpu": "2"}
    assert read.logging.format == "json"
    assert read.logging.path == "/var/log/x/deepaas-run.log"
    assert read.state.jobs_dir == "/srv/state/jobs"
    assert read.jobs.max_jobs == 7
    assert not read.security.authenticates
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.jobs.max_jobs = 8  # type: ignore[misc]


def test_only_the_settings_read_the_options():
    """Nothing but the option declarations, the settings and ``get_app`` (which
    takes a ``ConfigOpts`` too) imports oslo.config; no module of the API keeps
    the options on the Application."""
    readers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.startswith("oslo_config") for name in names):
                readers.add(path.relative_to(PACKAGE).as_posix())
    declarations = {r for r in readers if r.startswith("config/")}
    assert len(declarations) == len(config.CONCERNS) + 1
    assert readers - declarations == {"settings.py", "opts.py", "api/__init__.py"}
    api = PACKAGE / "api"
    assert not [
        path.name for path in api.rglob("*.py") if "keys.CONFIG" in path.read_text()
    ]

"""Schemathesis against the spec of a real server serving the test models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests import helpers

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).parent.parent.parent
# Models that fail on purpose (their 5xx are the point) are left out.
DELIBERATE_FAILURES = "failing|class-model|schema-class|batcher"
ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"


@pytest.mark.parametrize("auth", ["auth-off", "auth-on"])
def test_no_server_error_and_every_error_is_json(model_sites, tmp_path, auth):
    """With authentication on, every request carries an admin key, and
    schemathesis' ignored_auth check sends some without it or with a wrong
    one: those must be refused."""
    env = helpers.env_with(model_sites["testmodels"])
    args = ["--state-dir", str(tmp_path), "-p", "2", "--predict-timeout", "20"]
    checks = "no_server_error_but_not_implemented,error_body_is_json_message"
    extra: list[str] = []
    if auth == "auth-on":
        keys = tmp_path / "keys"
        keys.write_text(f"{ADMIN_KEY} admin fuzzer\n")
        args += ["--api-keys-file", str(keys), "--public-docs"]
        checks += ",ignored_auth"
        extra = ["--header", f"Authorization: Bearer {ADMIN_KEY}"]
    with helpers.running_server(args, env) as server:
        fuzz_env = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(ROOT), env["PYTHONPATH"]]),
            "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
        }
        result = subprocess.run(
            [
                str(helpers.BIN_DIR / "st"), "run", server.url + "/swagger.json",
                "--checks", checks, *extra,
                "--max-examples", "25",
                "--exclude-path-regex", DELIBERATE_FAILURES,
                "--request-timeout", "30",
                "--generation-database", "none",
                "--seed", "20261125",
            ],
            env=fuzz_env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )  # fmt: skip
        workers = helpers.children(server.proc.pid)
        owners = training_owners(server.url) if auth == "auth-on" else set()
    # (st rejects an unknown --checks name, so the custom check was loaded)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) >= 300, result.stdout[-2000:]
    assert len(workers) >= 2
    if auth == "auth-on":
        # the key was sent: trainings were started, and are the fuzzer's
        assert owners == {"key:fuzzer"}


def training_owners(url: str) -> set[str]:
    """Who started the trainings on the server (asked with the admin key)."""

    def get(path: str):
        request = urllib.request.Request(url + path, headers={"X-API-Key": ADMIN_KEY})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.load(resp)

    owners = set()
    for model in get("/v2/models/")["models"]:
        for training in get(f"/v2/models/{model['id']}/train/"):
            owners.add(training.get("owner"))
    return owners

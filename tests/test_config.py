"""Options: defaults, config files, the generated sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deepaas import config

ROOT = Path(__file__).parent.parent


def test_defaults():
    conf = config.build_config([])
    assert (conf.listen_ip, conf.listen_port, conf.workers) == ("127.0.0.1", 5000, 1)
    assert conf.warm and conf.doc_endpoint and conf.predict_endpoint
    assert not conf.debug_endpoint
    assert conf.client_max_size == 0
    assert conf.model_name is None


def test_model_name_from_environment(monkeypatch):
    monkeypatch.setenv("DEEPAAS_V2_MODEL", "from-env")
    assert config.build_config([]).model_name == "from-env"
    assert config.build_config(["--model-name", "cli"]).model_name == "cli"


def test_short_workers_option():
    assert config.build_config(["-p", "3"]).workers == 3


def test_config_file(tmp_path):
    conf_file = tmp_path / "deepaas.conf"
    conf_file.write_text(
        "[DEFAULT]\nlisten_port = 8080\nworkers = 2\npredict_endpoint = false\n"
    )
    conf = config.build_config(["--config-file", str(conf_file)])
    assert (conf.listen_port, conf.workers) == (8080, 2)
    assert conf.predict_endpoint is False


def test_sample_config_is_current(tmp_path):
    generated = tmp_path / "deepaas.conf.sample"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            str(ROOT / "etc" / "deepaas-config-generator.conf"),
            "--output-file",
            str(generated),
        ],
        check=True,
        cwd=ROOT,
    )
    assert (
        generated.read_text() == (ROOT / "etc" / "deepaas.conf.sample").read_text()
    ), "etc/deepaas.conf.sample is stale: run tox -e genconfig"

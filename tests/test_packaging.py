"""The release artefacts: an sdist and a wheel that install and run anywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from deepaas import __version__
from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).parent.parent
NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", ".venvs", "build", "dist", "*.egg-info", "__pycache__", "artifacts"
)


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` on a copy of the source tree."""
    source = tmp_path_factory.mktemp("source") / "deepaas"
    shutil.copytree(ROOT, source, ignore=NOT_SHIPPED)
    out = source / "dist"
    run(sys.executable, "-m", "build", "--outdir", out, source)
    return out


def test_build_makes_one_sdist_and_one_wheel_of_this_version(dist):
    names = sorted(p.name for p in dist.iterdir())
    assert names == [
        f"deepaas-{__version__}-py3-none-any.whl",
        f"deepaas-{__version__}.tar.gz",
    ]
    run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir())


def test_wheel_and_sdist_install_and_serve_in_a_fresh_virtualenv(dist, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    for artefact in (
        [next(dist.glob("*.whl"))],
        ["--force-reinstall", "--no-deps", next(dist.glob("*.tar.gz"))],
    ):
        run(bin_dir / "pip", "install", "-q", *artefact)
        assert run(bin_dir / "deepaas-run", "--version").strip() == __version__
        assert run(bin_dir / "deepaas-cli", "--version").strip() == __version__
        check_it_serves(bin_dir, tmp_path)


def check_it_serves(bin_dir: Path, workdir: Path) -> None:
    """The installed package, not this source tree, serves the demo model."""
    port = helpers.free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [bin_dir / "deepaas-run", "--listen-port", str(port)],
        cwd=workdir,
        env=helpers.env_with(None, XDG_DATA_HOME=str(workdir / "data")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return True
        except OSError:
            assert server.poll() is None, "the installed server exited"
            return False

    try:
        assert helpers.wait_until(ready, timeout=60)
        with urllib.request.urlopen(f"{url}/swagger.json") as resp:
            assert json.load(resp)["info"]["version"] == __version__
        with urllib.request.urlopen(f"{url}/api") as resp:
            assert b"swagger" in resp.read().lower()
    finally:
        server.kill()
        server.wait(timeout=30)

"""The documentation site: it builds without a broken link, its option
reference is the options, its architecture page names every module."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepaas import config

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "deepaas"


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )


def test_the_site_builds_strictly(tmp_path):
    done = build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    pages = {path.parent.name for path in (tmp_path / "site").glob("*/index.html")}
    assert {"model-authors", "options", "architecture", "securing"} <= pages
    assert not list((tmp_path / "site").rglob("*.py"))


@pytest.mark.parametrize(
    "broken",
    ["[gone](no-such-page.md)", "[gone](operations.md#no-such-section)"],
)
def test_a_broken_link_fails_the_build(tmp_path, broken):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(DOCS, copy / "docs")
    page = copy / "docs" / "long-jobs.md"
    page.write_text(page.read_text() + f"\nSee {broken}.\n")
    done = build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such" in done.stderr


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "generate_options", DOCS / "generate_options.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_option_reference_is_the_options():
    generator = load_generator()
    assert (DOCS / "options.md").read_text() == generator.page(), (
        "docs/options.md is stale: run python docs/generate_options.py"
    )
    page = (DOCS / "options.md").read_text()
    for concern in config.CONCERNS:
        assert f"\n## {concern.title}\n" in page
        for opt in concern.opts:
            assert re.search(rf"`--(\[no\])?{re.escape(opt.name)}`", page), opt.name


def test_the_option_reference_notices_a_changed_option(monkeypatch):
    generator = load_generator()
    before = generator.page()
    opt = config.CONCERNS[0].opts[0]
    monkeypatch.setattr(opt, "help", "Something else entirely.")
    assert generator.page() != before


def modules() -> list[str]:
    """Every module of the package with more in it than a docstring."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        body = ast.parse(path.read_text()).body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            body = body[1:]
        if body:
            found.append(path.relative_to(ROOT).as_posix())
    return found


def test_the_architecture_page_names_every_module():
    page = (DOCS / "architecture.md").read_text()
    named = set(re.findall(r"^(deepaas/\S+\.py)\s", page, re.MULTILINE))
    assert len(modules()) > 80
    missing = [module for module in modules() if module not in named]
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
    gone = sorted(
        named - {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    )
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    commands = re.findall(r"^python3 -m venv .*$", readme, re.MULTILINE)
    assert len(commands) == 2, commands
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target

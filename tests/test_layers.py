"""The architecture's layers, kept by import-linter (pyproject.toml's
``[tool.importlinter]`` contracts): the model layer imports no part of the
server, the state layer none either, the runtime no part of the web server,
Ray only where it is used; the command line, API, background work, runtime
and state, and model layer import only downwards; and no package's modules
import each other in a circle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_contract_is_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 broken" in done.stdout


def test_upstream_import_paths_of_the_model_api_stay():
    """Model packages written for DEEPaaS import these names from these
    modules; they stay there, whatever moved behind them."""
    from deepaas.model import loading
    from deepaas.model.v2.base import BaseModel
    from deepaas.model.v2.types import ReturnedFile as Returned
    from deepaas.model.v2.types import UploadedFile as Uploaded
    from deepaas.model.v2.wrapper import ReturnedFile, UploadedFile

    assert (UploadedFile, ReturnedFile) == (Uploaded, Returned)
    assert callable(loading.load_models) and BaseModel.__name__ == "BaseModel"

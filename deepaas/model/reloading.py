"""Loading a served model anew, from what is installed now.

A reload (``SIGHUP`` to ``deepaas-run``) reads each model's entry point
again and imports its package afresh: the modules of the distribution that
provides it are dropped from ``sys.modules`` first, so that a reinstalled
package (another version, new weights beside its code) is what gets
imported. When the new version cannot be loaded, the modules it left half
imported are dropped and the previous ones put back, so that the server
goes on with the version it serves.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from deepaas.model import loading
from deepaas.model.loading import NAMESPACE, ModelSpec

LOG = logging.getLogger(__name__)

# Never dropped: the server's own package (the built-in demo model is one of
# its modules, dropped alone).
SERVER_PACKAGE = "deepaas"


def distribution_roots(name: str) -> set[str]:
    """The top-level modules of the installed distribution whose entry point
    is called ``name`` (none when it is not installed)."""
    roots: set[str] = set()
    for entry_point in metadata.entry_points(group=NAMESPACE, name=name):
        dist = entry_point.dist
        if dist is None:
            continue
        listed = dist.read_text("top_level.txt")
        if listed:
            roots.update(line.strip() for line in listed.splitlines() if line.strip())
            continue
        for file in dist.files or ():
            top = file.parts[0]
            if top.endswith(".py"):
                roots.add(top[: -len(".py")])
            elif "." not in top and top != "__pycache__":
                roots.add(top)
    return roots


def owned_by(spec: ModelSpec) -> Callable[[str], bool]:
    """Whether a module name is one a reload of ``spec``'s model imports
    anew: of the packages of its distribution, or its entry point's."""
    module = spec.target.partition(":")[0].strip()
    roots = distribution_roots(spec.name) | {module.split(".")[0]}
    roots.discard(SERVER_PACKAGE)
    prefixes = tuple(root + "." for root in roots)

    def owned(name: str) -> bool:
        return name == module or name in roots or name.startswith(prefixes)

    return owned


def reload_model(spec: ModelSpec) -> tuple[ModelSpec, Any]:
    """The model called ``spec.name``, loaded anew from what is installed
    now: its entry point read again (its target may have changed), its
    package imported afresh. Returns (spec, model object), as
    ``loading.load_models`` does.

    Raises ``ModelLoadError`` (as ``load_models`` does) when the model is no
    longer installed or cannot be loaded; the modules it had imported before
    are then back in ``sys.modules``.
    """
    owned = owned_by(spec)
    dropped = {name: sys.modules.pop(name) for name in list(sys.modules) if owned(name)}
    importlib.invalidate_caches()  # new files on the import path are seen
    try:
        loaded = loading.load_models(spec.name, fresh=True)
    except BaseException:
        for name in [name for name in sys.modules if owned(name)]:
            del sys.modules[name]  # what the failed import left
        sys.modules.update(dropped)
        raise
    LOG.debug("Model %r: %d module(s) imported anew", spec.name, len(dropped))
    return loaded[spec.name]

"""Discovery of model entry points in the ``deepaas.v2.model`` group.

A module entry point (``name = pkg.module``) is served as is; a class entry
point (``name = pkg.module:Class``) is instantiated once per process. With no
model installed the built-in demo model is served as ``deepaas-test``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
from importlib import metadata
from typing import Any

import stevedore

from deepaas import exceptions

NAMESPACE = "deepaas.v2.model"
DEMO_MODEL_NAME = "deepaas-test"
DEMO_MODEL_TARGET = "deepaas.model.v2.demo:DemoModel"

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to load one model: enough for a spawned worker to load it alone."""

    name: str
    target: str  # "package.module" or "package.module:Attribute"

    def load(self) -> Any:
        """Import the target and return the model object (instantiated if a
        class)."""
        return instantiate(self.name, import_target(self.target))


def import_target(target: str) -> Any:
    """Import ``module`` or ``module:attr.path`` and return the object."""
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attr_path.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def instantiate(name: str, plugin: Any) -> Any:
    """Return ``plugin`` itself, or an instance of it when it is a class."""
    if not inspect.isclass(plugin):
        return plugin
    try:
        return plugin()
    except Exception as exc:
        raise exceptions.ModelLoadError(
            f"Model {name!r}: creating an instance of {plugin.__qualname__} "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc


def installed_names() -> list[str]:
    """Names of every entry point in the group, without importing them."""
    return sorted({ep.name for ep in metadata.entry_points(group=NAMESPACE)})


def _raise_load_failure(
    manager: stevedore.ExtensionManager[Any],
    entry_point: metadata.EntryPoint,
    exc: BaseException,
) -> None:
    raise exceptions.ModelLoadError(
        f"Model entry point {entry_point.name!r} ({entry_point.value}) "
        f"could not be loaded: {type(exc).__name__}: {exc}"
    ) from exc


def _raise_missing(names: Any) -> None:
    raise exceptions.ModelLoadError(
        f"Model entry point(s) {', '.join(sorted(names))} could not be found in "
        f"the {NAMESPACE!r} group."
    )


class FreshNamedExtensionManager(stevedore.NamedExtensionManager):  # type: ignore[type-arg]
    """A ``NamedExtensionManager`` that reads the entry points installed now:
    stevedore lists a group once per process, and a reload is to see the
    package installed since."""

    def list_entry_points(self) -> list[metadata.EntryPoint]:
        return list(metadata.entry_points(group=self.namespace))


def load_models(
    model_name: str | None = None, *, fresh: bool = False
) -> dict[str, tuple[ModelSpec, Any]]:
    """Load the model called ``model_name``, or every installed model (with
    ``fresh``, the one called ``model_name`` from the entry points installed
    now, as a reload does).

    Returns ``{name: (spec, model object)}``. Raises ``ModelLoadError`` for an
    unknown name (listing the installed ones) or an entry point that fails.
    """
    installed = installed_names()
    if model_name:
        if model_name == DEMO_MODEL_NAME and model_name not in installed:
            return _demo()
        if model_name not in installed:
            choices = ", ".join(installed) if installed else "none"
            raise exceptions.ModelLoadError(
                f"No model named {model_name!r} is installed in the "
                f"{NAMESPACE!r} entry point group. Installed models: {choices}."
            )
        named = FreshNamedExtensionManager if fresh else stevedore.NamedExtensionManager
        manager: stevedore.ExtensionManager[Any] = named(
            NAMESPACE,
            names=[model_name],
            on_load_failure_callback=_raise_load_failure,
            on_missing_entrypoints_callback=_raise_missing,
        )
    else:
        if not installed:
            LOG.warning(
                "No model is installed in the %r entry point group: serving the "
                "built-in demo model as %r.",
                NAMESPACE,
                DEMO_MODEL_NAME,
            )
            return _demo()
        manager = stevedore.ExtensionManager(
            NAMESPACE, on_load_failure_callback=_raise_load_failure
        )
    models: dict[str, tuple[ModelSpec, Any]] = {}
    for ext in manager:
        spec = ModelSpec(ext.name, ext.entry_point.value)
        models[ext.name] = (spec, instantiate(ext.name, ext.plugin))
        LOG.info("Loaded model %r from %s", ext.name, spec.target)
    return models


def _demo() -> dict[str, tuple[ModelSpec, Any]]:
    spec = ModelSpec(DEMO_MODEL_NAME, DEMO_MODEL_TARGET)
    return {DEMO_MODEL_NAME: (spec, spec.load())}

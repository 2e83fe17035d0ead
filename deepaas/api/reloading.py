"""Reloading the models while serving (``SIGHUP`` to ``deepaas-run``).

A reload reads each served model anew in the server (its entry point, its
package imported afresh, its metadata and argument declarations), then
replaces the model's workers one at a time with fresh interpreters of the
next generation (``Executor.reload``). Once the first new worker takes
calls, the model's routes get handlers built from the new declarations and
the spec is described anew; from then on, requests are read against the new
declarations, while the calls already running finish on the old workers.

A model whose new version cannot be loaded (in the server or in a worker)
keeps serving the version it served, and ``/readyz`` says why until a later
reload succeeds. The set of models served is the one the server started
with: a model installed since is served after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from deepaas import exceptions
from deepaas.api import keys, spec
from deepaas.api.metrics import METRICS
from deepaas.model import loading, reloading
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.runtime.wrapper import ModelWrapper

LOG = logging.getLogger(__name__)

RELOADING, RELOADED, FAILED = "reloading", "reloaded", "failed"


@dataclasses.dataclass
class ModelReload:
    """How the last reload of one model goes, or went."""

    status: str  # RELOADING, RELOADED or FAILED
    started: float  # wall-clock seconds
    ended: float | None = None
    generation: int | None = None  # of the workers it started
    reason: str | None = None  # why it failed

    def view(self) -> dict[str, Any]:
        """As ``/readyz`` shows it."""
        body: dict[str, Any] = {
            "status": self.status,
            "started": round(self.started, 3),
            "ended": None if self.ended is None else round(self.ended, 3),
            "generation": self.generation,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        return body


def read_declarations(
    specs: list[ModelSpec],
) -> dict[str, ModelDeclaration | exceptions.DeepaasError]:
    """Each model read anew (one after the other: they share
    ``sys.modules``): its declarations, or why it cannot be loaded."""
    read: dict[str, ModelDeclaration | exceptions.DeepaasError] = {}
    for model_spec in specs:
        try:
            fresh_spec, model = reloading.reload_model(model_spec)
            read[model_spec.name] = ModelDeclaration.read(fresh_spec, model)
        except exceptions.DeepaasError as exc:
            read[model_spec.name] = exc
        except Exception as exc:  # noqa: BLE001 - whatever the package raises
            read[model_spec.name] = exceptions.ModelLoadError(
                f"Model {model_spec.name!r} could not be loaded: "
                f"{type(exc).__name__}: {exc}"
            )
    return read


class Reloader:
    """The reloads of one application's models, one at a time.

    ``rebuild_routes`` builds the handlers of the models' routes anew from
    their current declarations.
    """

    def __init__(
        self,
        app: web.Application,
        rebuild_routes: Callable[[web.Application], None],
    ) -> None:
        self.app = app
        self.rebuild_routes = rebuild_routes
        self.task: asyncio.Task[None] | None = None
        self.again = False  # asked for while one was under way
        self.models: dict[str, ModelReload] = {}

    def request(self) -> None:
        """Reload every model: now, or once the reload under way is over."""
        if self.task is not None and not self.task.done():
            LOG.info("A reload is under way: the models are reloaded again after it")
            self.again = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.app[keys.STARTUP].wait()
        except Exception:  # noqa: BLE001 - deepaas-run stops, saying why
            return
        while True:
            self.again = False
            try:
                await self.reload()
            except Exception:  # a fault of ours: said, and the next one tried
                LOG.exception("The reload could not be carried out")
                for name, state in self.models.items():
                    if state.status == RELOADING:
                        state.status, state.ended = FAILED, time.time()
                        state.reason = "The reload could not be carried out."
                        self._count(name, FAILED)
            if not self.again:
                return

    async def wait(self) -> None:
        """Return once no reload is under way."""
        while self.task is not None and not self.task.done():
            await asyncio.shield(self.task)

    async def cancel(self) -> None:
        """Stop a reload under way (at shutdown)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @property
    def failures(self) -> dict[str, str]:
        """The models whose last reload failed, and why."""
        return {
            name: state.reason or ""
            for name, state in self.models.items()
            if state.status == FAILED
        }

    async def reload(self) -> None:
        """Reload every served model (each model's workers in turn, the
        models side by side)."""
        models = self.app[keys.MODELS]
        LOG.info("Reloading model(s) %s", ", ".join(models))
        now = time.time()
        for name in models:
            self.models[name] = ModelReload(RELOADING, now)
        specs = [model.declaration.spec for model in models.values()]
        read = await asyncio.to_thread(read_declarations, specs)
        self._tell_of_new_models()
        await asyncio.gather(
            *(self._roll(models[name], outcome) for name, outcome in read.items())
        )

    def _tell_of_new_models(self) -> None:
        if self.app[keys.SETTINGS].server.model_name:
            return
        served = self.app[keys.MODELS]
        added = set(loading.installed_names()) - served.keys()
        if added:
            LOG.warning(
                "Model(s) %s, installed since the server started, are served "
                "after a restart",
                ", ".join(sorted(added)),
            )

    async def _roll(
        self,
        model: ModelWrapper,
        outcome: ModelDeclaration | exceptions.DeepaasError,
    ) -> None:
        """Replace the workers of ``model`` with ones of its new version."""
        state = self.models[model.name]
        if isinstance(outcome, exceptions.DeepaasError):
            self._failed(model, state, outcome.message)
            return
        declaration = outcome
        workers = self.app[keys.SETTINGS].workers
        switched = False

        def serving() -> None:
            nonlocal switched
            switched = True
            self.switch(model, declaration)

        try:
            await model.executor.reload(
                declaration.spec,
                batch_size=workers.max_batch_size
                if "predict_batch" in declaration.implements
                else 1,
                serving=serving,
            )
        except Exception as exc:  # noqa: BLE001 - said in /readyz and the log
            state.generation = model.executor.health().generation
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            if switched:
                reason += (
                    " Some workers still run the previous version; the next "
                    "reload replaces them."
                )
            self._failed(model, state, reason)
            return
        state.status, state.ended = RELOADED, time.time()
        state.generation = model.executor.health().generation
        self._count(model.name, RELOADED)
        LOG.info(
            "Model %r reloaded: every worker is of generation %d",
            model.name,
            state.generation,
        )

    def _failed(self, model: ModelWrapper, state: ModelReload, reason: str) -> None:
        state.status, state.ended, state.reason = FAILED, time.time(), reason
        if state.generation is None:
            state.generation = model.executor.health().generation
        self._count(model.name, FAILED)
        LOG.error(
            "Model %r could not be reloaded; it serves its previous version: %s",
            model.name,
            reason,
        )

    def _count(self, name: str, outcome: str) -> None:
        """One more reload of model ``name`` that ended so (on /metrics)."""
        metrics = self.app.get(METRICS)
        if metrics is not None:
            metrics.reloads.add((name, outcome))

    def switch(self, model: ModelWrapper, declaration: ModelDeclaration) -> None:
        """Serve ``declaration`` for ``model``: its routes' handlers and the
        spec are built anew from it. If they cannot be, the previous ones
        stay, and ``ModelLoadError`` says why."""
        previous = model.declaration
        try:
            self.describe(model, declaration)
        except Exception as exc:
            self.describe(model, previous)
            raise exceptions.ModelLoadError(
                f"Model {model.name!r}: its new declarations cannot be served: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        version = declaration.metadata.get("version")
        LOG.info(
            "Model %r: serving its new version%s",
            model.name,
            f" {version}" if version is not None else "",
        )

    def describe(self, model: ModelWrapper, declaration: ModelDeclaration) -> None:
        """Build the routes' handlers and the spec from ``declaration``."""
        model.declaration = declaration
        self.rebuild_routes(self.app)
        spec.refresh(self.app)


RELOADER = web.AppKey("deepaas_reloader", Reloader)

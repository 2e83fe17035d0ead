"""Liveness and readiness probes for container orchestrators.

``/healthz`` answers 200 whenever the process serves HTTP. ``/readyz`` answers
200 once every model's workers have loaded and warmed the model and while each
model has a live worker (``"degraded"`` when some are missing, or a model
could not be reloaded); otherwise 503 with the reason. It shows each worker's
generation (one more for each reload) and how the last reload went.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deepaas import exceptions
from deepaas.api import auth, keys, reloading


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readiness(app: web.Application) -> tuple[bool, dict[str, Any]]:
    """Whether the server is ready for calls, and the body saying so."""
    startup = app[keys.STARTUP]
    models = app[keys.MODELS]
    if startup.failed is not None:
        reason = getattr(startup.failed, "message", None) or str(startup.failed)
        return False, {"status": "failed", "reason": reason}
    if not startup.started:
        names = ", ".join(sorted(models))
        return False, {
            "status": "starting",
            "reason": f"Loading and warming the model in the workers ({names}).",
        }
    reloader = app[reloading.RELOADER]
    workers: dict[str, dict[str, Any]] = {}
    dead = []
    for name, model in sorted(models.items()):
        health = model.executor.health()
        workers[name] = {
            "workers": health.size,
            "alive": health.alive,
            "missing": health.missing,
            "busy": health.busy,
            "restarts": health.restarts,
            "generation": health.generation,
            "processes": [
                {
                    "slot": info.slot,
                    "pid": info.pid,
                    "state": info.state,
                    "generation": info.generation,
                    "devices": info.devices,
                    "node": info.node,
                }
                for info in health.workers
            ],
        }
        reload = reloader.models.get(name)
        if reload is not None:
            workers[name]["reload"] = reload.view()
        if health.alive == 0:
            dead.append(name)
    if dead:
        return False, {
            "status": "unavailable",
            "reason": f"No live worker for model(s) {', '.join(dead)}; "
            "replacements are starting.",
            "models": workers,
        }
    authenticator = app[auth.AUTHENTICATOR]
    keys_error = (
        authenticator.api_keys.reload_error
        if authenticator is not None and authenticator.api_keys is not None
        else None
    )
    if keys_error is not None:
        # Serving, with keys that may include one meant to be revoked.
        return True, {
            "status": "degraded",
            "reason": "The API keys file could not be reloaded; the previous "
            f"keys are still in use: {keys_error}",
            "models": workers,
        }
    failures = reloader.failures
    if failures:
        # Serving the previous version of these models.
        return True, {
            "status": "degraded",
            "reason": "; ".join(
                f"Model {name!r} could not be reloaded and serves its previous "
                f"version: {why}"
                for name, why in sorted(failures.items())
            ),
            "models": workers,
        }
    for runner in (app[keys.TRAININGS], app[keys.JOBS]):
        if runner.unsaved:
            # Serving, but results are held in memory only.
            return True, {
                "status": "degraded",
                "reason": f"{runner.unsaved} ended {runner.kind.noun}(s) cannot be "
                f"recorded (retrying): {runner.store_error}",
                "models": workers,
            }
    missing = [name for name, w in workers.items() if w["missing"]]
    if missing:
        # Still serving, with less capacity than configured.
        return True, {
            "status": "degraded",
            "reason": f"Workers missing for model(s) {', '.join(missing)}; "
            "replacements are starting.",
            "models": workers,
        }
    return True, {"status": "ready", "models": workers}


# What /readyz tells a client that is not an admin when authentication is on:
# whether the server is ready, and why not in words that name nothing of its
# insides (processes, devices, nodes, start-up errors).
PUBLIC_REASONS = {
    "starting": "Loading and warming the models.",
    "failed": "The models could not be started.",
    "unavailable": "No live worker; replacements are starting.",
    "degraded": "Serving, with less than the configured capacity or a "
    "problem to see to.",
}


async def readyz(request: web.Request) -> web.Response:
    ready, body = readiness(request.app)
    if not await is_admin(request):
        body = {"status": body["status"]}
        if body["status"] in PUBLIC_REASONS:
            body["reason"] = PUBLIC_REASONS[body["status"]]
    return web.json_response(body, status=200 if ready else 503)


async def is_admin(request: web.Request) -> bool:
    """Whether the request may see the server's insides: authentication
    is off, or it carries an admin's credentials (any others, or bad ones,
    are only not an admin's: a probe never answers 401)."""
    authenticator = request.app[auth.AUTHENTICATOR]
    if authenticator is None:
        return True
    try:
        principal = await authenticator.principal(request)
    except exceptions.Unauthenticated:
        return False
    return principal is not None and principal.is_admin


def setup_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/healthz", healthz)
    app.router.add_get(f"{base}/readyz", readyz)

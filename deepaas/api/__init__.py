"""get_app(): the aiohttp Application serving the configured models."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web, web_response
from oslo_config import cfg

from deepaas import exceptions
from deepaas.api import (
    access,
    auth,
    crosssite,
    errors,
    hosts,
    inference,
    keys,
    pipeline,
    probes,
    reloading,
    routing,
    spec,
    traces,
    versions,
)
from deepaas.api import v2 as v2_api
from deepaas.api.capture import DebugCapture
from deepaas.api.connections import Connections
from deepaas.api.inference import document as inference_document
from deepaas.api.metrics import METRICS, Metrics, metrics_handler
from deepaas.api.parser import PARSER, ArgumentParser, add_ignored_arguments_header
from deepaas.api.startup import Startup
from deepaas.api.uploads import MemorySpool
from deepaas.exceptions import ModelNotFound
from deepaas.model import loading
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.runtime.executor import Executor
from deepaas.runtime.local import LocalExecutor
from deepaas.runtime.protocol import Scratch
from deepaas.runtime.results import RESULT_SLOTS
from deepaas.runtime.wrapper import ModelWrapper
from deepaas.settings import Settings, WorkerSettings, normalize_base_path
from deepaas.state import open_database
from deepaas.state.records import JOB, TRAINING
from deepaas.tracing import Tracing
from deepaas.work.events import EventJournal
from deepaas.work.jobs import Jobs
from deepaas.work.runner import Runner
from deepaas.work.trainings import Trainings
from deepaas.work.webhooks import Lookup, WebhookPolicy, WebhookSender

LOG = logging.getLogger(__name__)


def smallest_limit(*limits: int) -> int:
    """The smallest of some size limits, where 0 means none."""
    return min((limit for limit in limits if limit), default=0)


def load_declarations(model_name: str | None) -> dict[str, ModelDeclaration]:
    """Import the models (every installed one, or the one named) and read
    what each declares.

    Raises ``ModelLoadError`` naming the model when one cannot be loaded or
    declares something invalid.
    """
    return {
        name: ModelDeclaration.read(model_spec, model)
        for name, (model_spec, model) in loading.load_models(model_name).items()
    }


def build_executor(
    settings: WorkerSettings,
    declaration: ModelDeclaration,
    spool: MemorySpool | None = None,
    models: int = 1,
    log_format: str = "text",
    tracing: Tracing | None = None,
) -> Executor:
    """The executor (not started) that runs one model's calls. Results of
    moderate size come back through memory each local worker shares with
    the server; larger ones through files: in ``spool``'s memory directory
    when small enough for it, else in the temporary directory."""
    scratch = Scratch(
        spool.directory if spool is not None else None,
        tempfile.gettempdir(),
        spool.max_request if spool is not None else 0,
    )
    options: dict[str, Any] = {
        "warm": settings.warm,
        "log_level": logging.getLogger().getEffectiveLevel(),
        "log_format": log_format,
        "heartbeat": settings.worker_heartbeat or None,
        "batch_size": settings.max_batch_size
        if "predict_batch" in declaration.implements
        else 1,
        "batch_wait": settings.max_batch_wait_ms / 1000,
        "tracing": tracing,
    }
    if settings.executor == "ray":
        # A Ray runtime started here gets the CPUs every worker asks for.
        options["runtime_cpus"] = models * settings.workers * settings.worker_num_cpus
        return build_ray_executor(settings, declaration, scratch, options)
    return LocalExecutor(
        declaration.spec,
        settings.workers,
        scratch=scratch,
        result_slots=RESULT_SLOTS,
        devices=settings.devices,
        **options,
    )


def build_ray_executor(
    settings: WorkerSettings,
    declaration: ModelDeclaration,
    scratch: Scratch,
    options: dict[str, Any],
) -> Executor:
    """The Ray executor, from the optional extra."""
    try:
        from deepaas.runtime.ray_executor import RayExecutor
    except ImportError as exc:
        raise exceptions.ConfigurationError(
            "--executor ray needs Ray, which is not installed: "
            f"pip install 'deepaas[ray]' ({exc})"
        ) from None
    try:
        resources = {k: float(v) for k, v in settings.worker_resources.items()}
    except ValueError:
        raise exceptions.ConfigurationError(
            "--worker-resources takes NAME:AMOUNT pairs with numeric amounts, not "
            f"{','.join(f'{k}:{v}' for k, v in settings.worker_resources.items())}"
        ) from None
    if settings.worker_gpus:
        LOG.warning(
            "--worker-gpus is for local workers; with --executor ray, Ray "
            "assigns GPUs (--worker-num-gpus)"
        )
    return RayExecutor(
        declaration.spec,
        settings.workers,
        address=settings.ray_address,
        num_cpus=settings.worker_num_cpus,
        num_gpus=settings.worker_num_gpus,
        resources=resources,
        scratch=scratch,
        upload_roots=[d for d in (scratch.memory, scratch.disk) if d],
        **options,
    )


async def _executors_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start every model's executor in the background; stop them on shutdown.
    Meanwhile, trainings and jobs past their retention are removed, and
    webhooks delivered."""
    startup = app[keys.STARTUP]
    startup.begin(app[keys.MODELS].values())
    state = app[keys.SETTINGS].state
    loop = asyncio.get_running_loop()
    keepers = []
    if state.training_retention:
        keepers.append(
            loop.create_task(app[keys.TRAININGS].keep_for(state.training_retention))
        )
    if state.job_retention:
        keepers.append(loop.create_task(app[keys.JOBS].keep_for(state.job_retention)))
    keepers.append(loop.create_task(app[keys.WEBHOOKS].run()))
    lease = app[keys.DATABASE].lease
    if lease is not None:
        keepers.append(loop.create_task(end_work_of_gone_servers(app, lease)))
    spool = app[PARSER].spool
    if spool is not None:
        keepers.append(loop.create_task(spool.keep_spares_fresh()))
    yield
    for keeper in keepers:
        keeper.cancel()
    await asyncio.gather(*keepers, return_exceptions=True)
    await stop_work(app)
    if spool is not None:
        spool.close()


async def end_work_of_gone_servers(app: web.Application, lease: float) -> None:
    """With servers sharing the database: every third of a lease, end as
    interrupted the trainings and jobs of servers whose lease lapsed, and
    give their webhooks (of all the servers sweeping, one ends a record and
    one gives its completed webhook)."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            ended = 0
            for runner in (app[keys.TRAININGS], app[keys.JOBS]):
                ended += await runner.recover()
            if ended:
                await app[keys.WEBHOOKS].resume(state_of(app), watch=False)
        except exceptions.StoreError as exc:
            LOG.error("Cannot look for work of gone servers: %s", exc.message)


def state_of(app: web.Application) -> Lookup:
    """How the webhooks look a record up: whether a training or job has
    ended, and its JSON object (None if it is gone)."""
    trainings, jobs = app[keys.TRAININGS], app[keys.JOBS]
    base = app[keys.BASE_PATH]

    async def lookup(
        kind: str, model: str, record_id: str
    ) -> tuple[bool, dict[str, Any]] | None:
        runner: Runner[Any] = trainings if kind == TRAINING else jobs
        record = await runner.records.get(kind, model, record_id)
        if record is None:
            return None
        return not record.running, runner.kind.view(record, base)

    return lookup


async def stop_work(app: web.Application) -> None:
    """Stop a reload and starting workers, record running trainings as
    interrupted, then stop every executor: calls still running end with a
    503 (PoolClosed)."""
    await app[reloading.RELOADER].cancel()
    await app[keys.STARTUP].cancel()
    await app[keys.TRAININGS].stop()
    await app[keys.JOBS].stop()
    await asyncio.gather(*(m.executor.stop() for m in app[keys.MODELS].values()))


def model_routes(app: web.Application) -> None:
    """Add the routes built from the models' declarations (or, once they
    are there, build their handlers anew from the current declarations)."""
    base = app[keys.BASE_PATH]
    if app[keys.SETTINGS].server.inference_protocol:
        v2_api.setup_routes(
            app,
            base,
            server_keys=inference.server_keys(),
            model_keys=inference.model_keys,
        )
        inference.setup_routes(app, base)
    else:
        v2_api.setup_routes(app, base)


async def _debug_capture(app: web.Application) -> AsyncIterator[None]:
    capture = app[keys.DEBUG_CAPTURE]
    capture.install()
    yield
    capture.uninstall()


def _unknown_model_routes(
    app: web.Application, base: str, *, protocol: bool = False
) -> None:
    """Undocumented fallbacks so an unknown model name gets a helpful 404
    (in the Open Inference Protocol's shape on its paths, with ``protocol``)."""

    async def unknown_model(request: web.Request) -> web.Response:
        if request.match_info["model"] in request.app[keys.MODELS]:
            # A served model, but no route for this method or endpoint.
            allowed = {
                route.method
                for route in request.app.router.routes()
                if route.resource is not None
                and route.resource.canonical == request.path
            }
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound(reason="This endpoint is disabled on this server")
        served = request.app[keys.MODELS]
        names = ", ".join(sorted(served.keys())) or "none"
        raise ModelNotFound(
            f"No model named {request.match_info['model']!r}. Models served: {names}."
        )

    prefix = f"{base}/v2/models/{{model}}"
    for method, suffix in (
        ("GET", ""),
        ("POST", "/predict"),
        ("*", "/train"),
        ("*", "/train/{uuid}"),
    ):
        routing.add_route(app, method, prefix + suffix, unknown_model, access=auth.READ)
    if not protocol:
        return
    for method, suffix in (
        ("GET", "/ready"),
        ("POST", "/infer"),
        ("GET", "/versions/{version}"),
        ("GET", "/versions/{version}/ready"),
        ("POST", "/versions/{version}/infer"),
    ):
        app[keys.PROTOCOL_ROUTES].update(
            routing.add_route(
                app, method, prefix + suffix, unknown_model, access=auth.READ
            )
        )


# What every answer says in its Server header, aiohttp's own error pages (for
# requests that never reach the application) included: the product, not the
# Python and aiohttp versions, which tell a stranger which flaws to try.
SERVER_NAME = "deepaas"


def hide_server_versions() -> None:
    """Make aiohttp name the server ``SERVER_NAME`` in every response."""
    web_response.SERVER_SOFTWARE = SERVER_NAME


def get_app(
    settings: Settings | cfg.ConfigOpts | None = None,
    *,
    declarations: dict[str, ModelDeclaration] | None = None,
) -> web.Application:
    """Build the Application for ``settings`` (default: every option at its
    default; a ``ConfigOpts`` is read into settings first).

    ``declarations`` replaces loading the models from their entry points (the
    commands load them first so that a bad model stops start-up before
    anything listens).
    """
    if settings is None:
        settings = Settings.parse()
    elif isinstance(settings, cfg.ConfigOpts):
        settings = Settings.from_conf(settings)
    server, uploads, state, jobs = (
        settings.server,
        settings.uploads,
        settings.state,
        settings.jobs,
    )
    hide_server_versions()
    authenticator = auth.Authenticator.from_settings(settings.security)
    if declarations is None:
        declarations = load_declarations(server.model_name)
    base = server.base
    inflight = access.InFlight()
    connections = Connections(
        server.max_connections,
        server.header_timeout,
        answer_half_closed=server.answer_half_closed,
    )
    # Who may do what: with authentication on, the credentials a request
    # carries in its headers (which a browser never adds by itself to a
    # request from another site's page); with it off, browsers' requests
    # from pages of other sites are refused.
    middleware = pipeline.request_pipeline(
        access.RequestIds(),
        inflight,
        connections,
        host_check=hosts.host_check(
            server.listen_ip, list(settings.security.allowed_hosts)
        ),
        access_check=crosssite.cross_site_check(settings.security.cors_origin)
        if authenticator is None
        else None,
        auth_check=authenticator.refusal if authenticator is not None else None,
    )
    tracing = Tracing.start("server") if settings.logging.traced else None
    app = web.Application(
        middlewares=[middleware]
        if tracing is None
        else [traces.traced_requests(tracing), middleware],
        # aiohttp's own limit applies to the bodies it reads into memory
        # (JSON, forms), after decompression; files are streamed by the parser.
        client_max_size=smallest_limit(
            uploads.client_max_size, uploads.max_memory_body
        ),
        handler_args={
            "max_line_size": errors.PARSER_LINE_LIMIT,
            "keepalive_timeout": server.keepalive_timeout,
        },
    )
    app[keys.SETTINGS] = settings
    app[keys.BASE_PATH] = base
    app[traces.TRACING] = tracing
    if tracing is not None:
        app.on_cleanup.append(lambda _: asyncio.to_thread(tracing.shutdown))
    app[auth.AUTHENTICATOR] = authenticator
    app[keys.ROUTE_ACCESS] = {}
    app[access.INFLIGHT] = inflight
    app[keys.CONNECTIONS] = connections
    spool = MemorySpool.from_options(
        uploads.upload_memory_dir,
        uploads.upload_memory_max,
        uploads.upload_memory_total,
    )
    app[PARSER] = ArgumentParser(
        uploads.client_max_size,
        strict=uploads.strict_arguments,
        max_parts=uploads.max_parts,
        max_memory=uploads.max_memory_body,
        body_timeout=uploads.body_timeout,
        spool=spool,
    )
    database = app[keys.DATABASE] = open_database(
        state.state_dir, state.database, state.replica_lease
    )
    events = app[keys.EVENTS] = EventJournal(database.events)
    sender = app[keys.WEBHOOKS] = WebhookSender(
        database.webhooks,
        secret=settings.webhooks.webhook_secret,
        attempts=settings.webhooks.webhook_attempts,
        policy=WebhookPolicy(list(settings.webhooks.webhook_allow)),
        shared=database.shared,
        tracing=tracing,
    )
    events.listeners.append(sender.on_event)
    app[keys.JOBS] = Runner(
        Jobs(state.jobs_dir, database.outputs if database.shared else None),
        database,
        events,
        base,
        max_running=jobs.max_jobs,
        max_per_user=jobs.max_jobs_per_user,
        max_args_bytes=jobs.max_job_arguments,
        tracing=tracing,
    )
    trainings = app[keys.TRAININGS] = Runner(
        Trainings(
            state.logs_dir,
            state.training_log_max_bytes,
            database.outputs if database.shared else None,
        ),
        database,
        events,
        base,
        max_running=jobs.max_trainings,
        max_per_user=jobs.max_trainings_per_user,
        tracing=tracing,
    )
    runners: dict[str, Runner[Any]] = {JOB: app[keys.JOBS], TRAINING: trainings}
    database.listen(
        events.heard,
        lambda kind, record: runners[kind].cancel_here(record),
        events.caught_up,
    )
    app.cleanup_ctx.append(_state_ctx)
    executors = {
        name: build_executor(
            settings.workers,
            declaration,
            spool,
            len(declarations),
            log_format=settings.logging.format,
            tracing=tracing,
        )
        for name, declaration in declarations.items()
    }
    metrics = None
    if server.metrics_endpoint:
        metrics = app[METRICS] = Metrics(
            executors,
            trainings,
            connections,
            authenticator.api_keys if authenticator is not None else None,
        )
        app.router.add_get(f"{base}/metrics", metrics_handler(metrics))
    app[keys.MODELS] = {
        name: ModelWrapper(
            declaration,
            executors[name],
            observer=metrics.observe_call if metrics is not None else None,
        )
        for name, declaration in declarations.items()
    }
    app.on_response_prepare.append(add_answer_headers)
    if server.debug_endpoint:
        app[keys.DEBUG_CAPTURE] = DebugCapture()
        app.cleanup_ctx.append(_debug_capture)
    app[keys.STARTUP] = Startup()
    app.cleanup_ctx.append(_executors_ctx)
    if authenticator is not None:
        app.cleanup_ctx.append(_authenticator_ctx)

    app[keys.PROTOCOL_ROUTES] = set()
    probes.setup_routes(app, base)
    versions.setup_routes(app, base, docs=server.doc_endpoint)
    model_routes(app)
    _unknown_model_routes(app, base, protocol=server.inference_protocol)
    spec.setup(
        app,
        base,
        server.doc_endpoint,
        part=inference_document.paths if server.inference_protocol else None,
    )
    app[reloading.RELOADER] = reloading.Reloader(app, model_routes)
    if settings.security.cors_origin:
        crosssite.setup_cors(app, settings.security.cors_origin)
    auth.classify_routes(app, base)
    return app


async def _state_ctx(app: web.Application) -> AsyncIterator[None]:
    """At start, before any request: end the work a previous server left
    running, and take up the webhooks it kept. At the end, once the work
    has stopped: keep the last events and close the database."""
    trainings, jobs = app[keys.TRAININGS], app[keys.JOBS]
    await app[keys.DATABASE].open()
    await trainings.recover()
    await jobs.recover()
    database = app[keys.DATABASE]
    resumed = await app[keys.WEBHOOKS].resume(state_of(app), watch=not database.shared)
    if resumed:
        LOG.info("%d webhook(s) of interrupted work to deliver", resumed)
    yield
    await app[keys.EVENTS].flushed()
    await app[keys.WEBHOOKS].flushed()
    await app[keys.DATABASE].close()


async def add_answer_headers(
    request: web.Request, response: web.StreamResponse
) -> None:
    """on_response_prepare: what every answer carries (its request id,
    ``nosniff``) and the arguments the request's parsing ignored."""
    access.add_request_id_header(request, response)
    add_ignored_arguments_header(request, response)


async def _authenticator_ctx(app: web.Application) -> AsyncIterator[None]:
    """Fetch an OIDC issuer's keys at start (in the background: a slow
    issuer delays nothing); close what the authenticator holds at the end."""
    authenticator = app[auth.AUTHENTICATOR]
    assert authenticator is not None
    fetching = None
    if authenticator.oidc is not None:
        fetching = asyncio.get_running_loop().create_task(authenticator.oidc.refresh())
    yield
    if fetching is not None:
        fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
    await authenticator.close()


__all__ = [
    "build_executor",
    "get_app",
    "load_declarations",
    "normalize_base_path",
    "stop_work",
]

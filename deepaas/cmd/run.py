"""deepaas-run: serve the installed models over HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import sys
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence

from aiohttp import web

from deepaas import exceptions, log
from deepaas.api import (
    access,
    auth,
    get_app,
    keys,
    load_declarations,
    reloading,
    stop_work,
)
from deepaas.api.connections import Connections
from deepaas.settings import Settings

LOG = logging.getLogger("deepaas.cmd.run")
FLUSH_TIMEOUT = 2.0  # seconds the last answers get to be written at shutdown
BACKLOG = 128
RESERVED_DESCRIPTORS = 64  # kept free of connections: logs, database, uploads


def _addresses(host: str, port: int, base: str) -> list[str]:
    shown = f"[{host}]" if ":" in host else host
    root = f"http://{shown}:{port}{base}"
    return [
        f"  API:   {root}/",
        f"  Spec:  {root}/swagger.json",
        f"  UI:    {root}/api",
    ]


def _access_lines(app: web.Application, settings: Settings) -> list[str]:
    """What the banner says about who may do what."""
    authenticator = app[auth.AUTHENTICATOR]
    if authenticator is None:
        return [
            "  Auth:  off: whoever reaches this port may predict, train and "
            "cancel (--api-keys-file, --oidc-issuer turn it on)"
        ]
    return [
        f"  Auth:  on: {'; '.join(authenticator.schemes())}",
        f"  Open without credentials: {', '.join(auth.describe_access(settings))}",
    ]


async def serve(app: web.Application, banner: str) -> None:
    """Listen at once, start the workers in the background, serve until SIGINT
    or SIGTERM (SIGHUP reloads); raise why the workers could not start, if
    they could not."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        # A client that hangs up cancels its request, and so its model call.
        handler_cancellation=True,
        access_log_class=access.AccessLogger,
        access_log=logging.getLogger("aiohttp.access"),
        # What is left once shut_down() has run: answers being written.
        shutdown_timeout=FLUSH_TIMEOUT,
    )
    await runner.setup()
    settings = app[keys.SETTINGS]
    connections = app[keys.CONNECTIONS]
    fit_to_descriptor_limit(
        connections, settings.workers.workers * len(app[keys.MODELS])
    )
    loop = asyncio.get_running_loop()
    server = runner.server
    assert server is not None
    # Every connection through its guard (connections.py).
    listener = await loop.create_server(
        lambda: connections.guard(server()),
        settings.server.listen_ip,
        settings.server.listen_port,
        reuse_address=True,
        backlog=BACKLOG,
    )
    watching = loop.create_task(connections.watch())
    try:
        print(banner, flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hang_up, app)
        stopping = loop.create_task(stop.wait())
        starting = loop.create_task(app[keys.STARTUP].wait())
        try:
            # A signal during a long warm-up stops the server at once.
            await asyncio.wait({starting, stopping}, return_when=FIRST_COMPLETED)
            if starting.done():
                starting.result()  # raises why the workers could not start
                LOG.info("Ready: every worker has loaded and warmed its model")
                settle_garbage_collector()
                await stopping
        finally:
            starting.cancel()
            stopping.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    finally:
        watching.cancel()
        await shut_down(app, listener, settings.server.shutdown_timeout)
        await runner.cleanup()


def hang_up(app: web.Application) -> None:
    """SIGHUP: read the API keys file again, and reload the models."""
    LOG.info("SIGHUP: reloading")
    authenticator = app[auth.AUTHENTICATOR]
    if authenticator is not None and authenticator.api_keys is not None:
        authenticator.api_keys.reload()
    app[reloading.RELOADER].request()


# Seconds a thread that wants the GIL waits for the event loop to let go of
# it (Python's default is 5 ms): the state database's thread answers within
# this while the loop is busy.
SWITCH_INTERVAL = 0.0005

# Allocations between two collections of the youngest generation (Python's
# default is 700): requests allocate many short-lived objects.
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Once start-up is over: what it built (the app, its routes and schemas,
    the libraries) is moved out of the collector's sight for good
    (``gc.freeze``), so that collections look at what requests make, and
    collections of the youngest objects come less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def fit_to_descriptor_limit(connections: Connections, workers: int) -> None:
    """Lower the connection cap to what the process' file descriptor limit
    allows, with room for the workers, uploads, logs and the database."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    room = max(16, soft - RESERVED_DESCRIPTORS - 4 * workers)
    if not connections.max_connections or connections.max_connections > room:
        LOG.info(
            "At most %d connections at once (the descriptor limit is %d)", room, soft
        )
        connections.max_connections = room


async def shut_down(
    app: web.Application, listener: asyncio.AbstractServer, timeout: float
) -> None:
    """Stop accepting connections, give the requests in flight ``timeout``
    seconds to finish, then stop the work: a prediction still running then
    is answered with a JSON 503, and a running training recorded as
    interrupted."""
    listener.close()
    if not await app[access.INFLIGHT].drained(timeout):
        LOG.warning(
            "%d request(s) still running after the %gs shutdown time-out: "
            "stopping them",
            app[access.INFLIGHT].count,
            timeout,
        )
    await stop_work(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, load the models, serve until SIGINT/SIGTERM."""
    settings = Settings.parse(list(sys.argv[1:] if argv is None else argv))
    server, workers = settings.server, settings.workers
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        log.setup(settings.logging)
        declarations = load_declarations(server.model_name)
        app = get_app(settings, declarations=declarations)
    except exceptions.DeepaasError as exc:
        print(f"deepaas-run: {exc.message}", file=sys.stderr)
        return 1
    lines = [
        f"deepaas serving {', '.join(declarations)} with {workers.workers} worker(s)"
    ]
    if workers.executor == "ray":
        cluster = workers.ray_address or os.environ.get("RAY_ADDRESS")
        lines[0] += " on Ray: " + (
            f"the cluster at {cluster}" if cluster else "a Ray runtime of this machine"
        )
    lines += _addresses(server.listen_ip, server.listen_port, server.base)
    if not server.doc_endpoint:
        lines.pop()
    lines += _access_lines(app, settings)
    try:
        asyncio.run(serve(app, "\n".join(lines)))
    except exceptions.DeepaasError as exc:
        print(f"deepaas-run: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"deepaas-run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

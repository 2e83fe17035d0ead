"""deepaas-run: serve the installed models over HTTP."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from deepaas import config, exceptions, log
from deepaas.api import build_models, get_app, normalize_base_path

LOG = logging.getLogger("deepaas.cmd.run")


def _addresses(host: str, port: int, base: str) -> list[str]:
    shown = f"[{host}]" if ":" in host else host
    root = f"http://{shown}:{port}{base}"
    return [
        f"  API:   {root}/",
        f"  Spec:  {root}/swagger.json",
        f"  UI:    {root}/api",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, load the models, serve until SIGINT/SIGTERM."""
    conf = config.build_config(sys.argv[1:] if argv is None else argv)
    log.setup(conf)
    try:
        models = build_models(conf)
        app = get_app(conf, models=models)
    except exceptions.DeepaasError as exc:
        print(f"deepaas-run: {exc.message}", file=sys.stderr)
        return 1
    base = normalize_base_path(conf.base_path)
    lines = [f"deepaas serving {', '.join(models)} with {conf.workers} worker(s)"]
    lines += _addresses(conf.listen_ip, conf.listen_port, base)
    if not conf.doc_endpoint:
        lines.pop()
    try:
        # run_app handles SIGINT and SIGTERM: it stops accepting, runs the
        # cleanup contexts (trainings, worker pools) and returns.
        web.run_app(
            app,
            host=conf.listen_ip,
            port=conf.listen_port,
            print=lambda _: print("\n".join(lines), flush=True),
            access_log=logging.getLogger("aiohttp.access"),
            shutdown_timeout=conf.shutdown_timeout,
        )
    except exceptions.DeepaasError as exc:
        print(f"deepaas-run: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, asyncio.CancelledError) as exc:
        print(f"deepaas-run: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

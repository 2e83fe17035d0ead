"""Logging set-up for the commands."""

from __future__ import annotations

import logging
import sys

from oslo_config import cfg

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def setup(conf: cfg.ConfigOpts) -> None:
    """Configure the root logger from the logging options."""
    level = logging.DEBUG if conf.debug else getattr(logging, conf.log_level)
    handler: logging.Handler
    if conf.log_file:
        handler = logging.FileHandler(conf.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is noisy at INFO for a model server; keep it for debug.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if conf.debug else logging.WARNING
    )

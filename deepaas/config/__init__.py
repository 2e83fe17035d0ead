"""Every deepaas option, declared once with its help text, by concern.

Each module of this package declares the options of one concern (the
server, uploads, workers, state, trainings and jobs, webhooks, security,
logs); ``CONCERNS`` lists them in order, for the documentation and for
``deepaas.settings``, which reads each concern into a typed object. On the
command line and in a configuration file the options stay one flat list,
as upstream DEEPaaS has them.

Options are registered on a ``ConfigOpts`` object handed in by the caller, so
nothing here holds state: the commands build their own configuration, tests
build theirs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from oslo_config import cfg

from deepaas import __version__
from deepaas.config import (
    jobs,
    logs,
    security,
    server,
    state,
    uploads,
    webhooks,
    workers,
)
from deepaas.config.server import MODEL_NAME_ENV


@dataclasses.dataclass(frozen=True)
class Concern:
    """Options that belong together: documented under one title and read
    into one settings object (``deepaas.settings``)."""

    name: str
    title: str
    summary: str
    opts: Sequence[cfg.Opt]


CONCERNS = [
    Concern(
        "server",
        "Server",
        "Where the server listens, what it serves, and its connections.",
        server.OPTS,
    ),
    Concern(
        "uploads",
        "Uploads and request bodies",
        "How large request bodies may be, how long they may take, and where "
        "uploaded files go.",
        uploads.OPTS,
    ),
    Concern(
        "workers",
        "Workers",
        "The worker processes (or Ray actors) that run the model, and the "
        "queue of calls waiting for them.",
        workers.OPTS,
    ),
    Concern(
        "state",
        "State",
        "What the server keeps on disk, and for how long.",
        state.OPTS,
    ),
    Concern(
        "jobs",
        "Trainings and jobs",
        "How many trainings and asynchronous predictions may run at once, and "
        "how much a job may keep.",
        jobs.OPTS,
    ),
    Concern(
        "webhooks",
        "Webhooks",
        "Where webhooks may go, how they are signed and how often they are tried.",
        webhooks.OPTS,
    ),
    Concern(
        "security",
        "Security",
        "Who may call the server, and from which web pages and host names.",
        security.OPTS,
    ),
    Concern(
        "logging",
        "Logging",
        "What is logged, in which form, and where. These options carry "
        "upstream's (oslo.log's) names, so an existing command line or "
        "configuration file starts unchanged.",
        logs.OPTS,
    ),
]


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Every option, for registration and the sample generator. The options
    stay in one flat group (``[DEFAULT]`` in a configuration file, plain
    ``--name`` on the command line), as upstream DEEPaaS has them."""
    return [(None, [opt for concern in CONCERNS for opt in concern.opts])]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option on ``conf`` as a command-line option."""
    for group, opts in list_opts():
        conf.register_cli_opts(opts, group=group)


def build_config(
    argv: Sequence[str] | None = None,
    *,
    default_config_files: list[str] | None = None,
) -> cfg.ConfigOpts:
    """Return a fresh ``ConfigOpts`` with every option, parsed from ``argv``."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf.set_default("model_name", os.environ.get(MODEL_NAME_ENV) or None)
    conf(
        list(argv) if argv is not None else [],
        project="deepaas",
        version=__version__,
        default_config_files=default_config_files or [],
    )
    return conf


__all__ = [
    "CONCERNS",
    "MODEL_NAME_ENV",
    "Concern",
    "build_config",
    "list_opts",
    "register_opts",
]

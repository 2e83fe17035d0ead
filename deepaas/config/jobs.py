"""Options of trainings and asynchronous predictions: how many at once."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.IntOpt(
        "max-trainings",
        default=0,
        min=0,
        help="Most trainings running at once on this server, all models "
        "together (on all the servers sharing a PostgreSQL --database); one "
        "more is answered 429 with Retry-After and nothing is started. 0 means "
        "no limit.",
    ),
    cfg.IntOpt(
        "max-trainings-per-user",
        default=0,
        min=0,
        help="With authentication on: most trainings one user may have running "
        "at once (on all the servers sharing a PostgreSQL --database); one more "
        "is answered 429 with Retry-After. 0 means no limit.",
    ),
    cfg.IntOpt(
        "max-jobs",
        default=1000,
        min=1,
        help="Most asynchronous predictions waiting or running at once, all "
        "users and models together (and all the servers sharing a PostgreSQL "
        "--database); one more is answered 429 with Retry-After "
        "and nothing is stored.",
    ),
    cfg.IntOpt(
        "max-jobs-per-user",
        default=100,
        min=1,
        help="With authentication on: most asynchronous predictions one user "
        "may have waiting or running at once (on all the servers sharing a "
        "PostgreSQL --database); one more is answered 429 with "
        "Retry-After and nothing is stored.",
    ),
    cfg.IntOpt(
        "max-job-arguments",
        default=1 << 20,
        min=1024,
        help="Most bytes of an asynchronous prediction's arguments, as the JSON "
        "kept with it (an uploaded file counts as its name); more is answered "
        "413 and nothing is stored.",
    ),
]

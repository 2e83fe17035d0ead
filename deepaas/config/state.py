"""Options of the state: what the server keeps on disk, and for how long."""

from __future__ import annotations

import os

from oslo_config import cfg

OPTS = [
    cfg.StrOpt(
        "state-dir",
        default=os.path.join(
            os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"),
            "deepaas",
        ),
        sample_default="$XDG_DATA_HOME/deepaas (~/.local/share/deepaas)",
        help="Directory where deepaas keeps its state: the records of "
        "trainings and jobs with their events and webhooks (trainings.sqlite3), "
        "each training's log (logs/<uuid>.log) and each job's result (jobs/). "
        "It must be writable; keep it on a volume to keep them across restarts.",
    ),
    cfg.StrOpt(
        "database",
        default="",
        sample_default="sqlite:///<state-dir>/trainings.sqlite3",
        help="Where the records of trainings and jobs, their events, webhooks "
        "and idempotency keys are kept: sqlite:///PATH, a SQLite file (by "
        "default trainings.sqlite3 in --state-dir), or "
        "postgresql://USER@HOST:PORT/DATABASE, a PostgreSQL database (pip "
        "install 'deepaas[postgres]'; the password may also come from "
        "PGPASSWORD or a password file, TLS from the URL's sslmode and "
        "sslrootcert parameters).",
    ),
    cfg.FloatOpt(
        "replica-lease",
        default=15.0,
        min=1,
        help="With a PostgreSQL --database: seconds a server's lease lasts. "
        "Each server renews its own every third of it; the trainings and jobs "
        "of a server whose lease has lapsed (it died, or lost the database) "
        "are ended as interrupted by the others.",
    ),
    cfg.FloatOpt(
        "training-retention",
        default=0.0,
        min=0,
        help="Seconds a finished training is kept (record and log) after it "
        "ended, for example 604800 for a week; older ones are removed. 0 keeps "
        "them until deleted.",
    ),
    cfg.FloatOpt(
        "job-retention",
        default=86400.0,
        min=0,
        help="Seconds an asynchronous prediction (sent with Prefer: "
        "respond-async) and its result are kept after it ended; older ones are "
        "removed. 0 keeps them until deleted.",
    ),
    cfg.IntOpt(
        "training-log-max-bytes",
        default=0,
        min=0,
        help="Most bytes a training's log keeps: beyond it the oldest output is "
        "dropped (checked every second), and the log, when read, starts with a "
        "line saying how much was cut. 0 means no limit.",
    ),
]

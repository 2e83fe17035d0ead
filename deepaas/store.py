"""Training records kept in a SQLite file, so they survive restarts.

One file (``trainings.sqlite3`` in the state directory) holds the records of
every model, keyed by model and id; WAL mode lets readers and the writer
proceed together and several processes share the file. Each running record
names its owner process, so a server starting up can tell trainings that were
cut by a stop or crash (their owner is gone) from ones another live server runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from typing import Any

from deepaas import exceptions, private
from deepaas.events import Event
from deepaas.jobs import ERROR as JOB_ERROR
from deepaas.jobs import INTERRUPTED, Job
from deepaas.jobs import RUNNING as JOB_RUNNING
from deepaas.trainings import ERROR, RUNNING, Training, TrainingStore
from deepaas.webhooks import Delivery

SCHEMA_VERSION = 6  # 2: trainings.started_by; 3: jobs; 4: events; 5, 6: webhooks
FILENAME = "trainings.sqlite3"
INTERRUPTED_BY_RESTART = (
    "Interrupted by a restart: the server stopped while this training was running."
)
JOB_INTERRUPTED_BY_RESTART = (
    "Interrupted by a restart: the server stopped while this prediction was running; "
    "send it again."
)

# "owner" is the server process running a training; "started_by" who
# started it (with authentication on).
COLUMNS = (
    "model", "uuid", "date", "args", "status", "output", "finish_date", "message",
    "owner", "started_by",
)  # fmt: skip
UNREADABLE_DATE = datetime.datetime(1970, 1, 1)
JOB_COLUMNS = (
    "model", "id", "date", "args", "status", "finish_date", "message",
    "error_status", "result_type", "result_size", "owner", "started_by",
    "idempotency_key",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trainings (
    model       TEXT NOT NULL,
    uuid        TEXT NOT NULL,
    date        TEXT NOT NULL,
    args        TEXT NOT NULL,
    status      TEXT NOT NULL,
    output      TEXT,
    finish_date TEXT,
    message     TEXT,
    owner       TEXT,
    started_by  TEXT,
    PRIMARY KEY (model, uuid)
)
"""

# Asynchronous predictions (deepaas.jobs); their results are files.
_JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    model           TEXT NOT NULL,
    id              TEXT NOT NULL,
    date            TEXT NOT NULL,
    args            TEXT NOT NULL,
    status          TEXT NOT NULL,
    finish_date     TEXT,
    message         TEXT,
    error_status    INTEGER,
    result_type     TEXT,
    result_size     INTEGER,
    owner           TEXT,
    started_by      TEXT,
    idempotency_key TEXT,
    PRIMARY KEY (model, id)
)
"""
# What a training or job went through, for its event stream (deepaas.events)
EVENT_COLUMNS = ("kind", "record", "seq", "name", "data", "final")
_EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    kind   TEXT NOT NULL,
    record TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    name   TEXT NOT NULL,
    data   TEXT NOT NULL,
    final  INTEGER NOT NULL,
    PRIMARY KEY (kind, record, seq)
)
"""
# Webhooks asked for by trainings and jobs, and deliveries not made yet
HOOK_COLUMNS = ("kind", "record", "model", "url", "events")
_HOOKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    kind   TEXT NOT NULL,
    record TEXT NOT NULL,
    model  TEXT NOT NULL,
    url    TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (kind, record)
)
"""
DELIVERY_COLUMNS = ("id", "url", "type", "body", "attempts", "due", "kind", "record")
_DELIVERIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id       TEXT PRIMARY KEY,
    url      TEXT NOT NULL,
    type     TEXT NOT NULL,
    body     TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    due      REAL NOT NULL,
    kind     TEXT NOT NULL,
    record   TEXT NOT NULL
)
"""
_JOBS_INDEX = """
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
ON jobs (model, COALESCE(started_by, ''), idempotency_key)
WHERE idempotency_key IS NOT NULL
"""


def process_identity(pid: int | None = None) -> str | None:
    """``host:pid:start-time`` of a live process (None if it is not running).

    The start time (from /proc) tells a live owner from a new process that
    happens to reuse its pid.
    """
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return f"{socket.gethostname()}:{pid}:{fields[19]}"


def _owner_is_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    pid = rest.partition(":")[0]
    return pid.isdigit() and process_identity(int(pid)) == owner


def _date(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None


class SQLiteTrainingStore(TrainingStore):
    """Training records in ``<state_dir>/trainings.sqlite3``."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, FILENAME)
        self.owner = process_identity() or f"{socket.gethostname()}:{os.getpid()}:0"
        try:
            private.private_directory(state_dir)
            # SQLite gives the WAL and shared-memory files the database's mode.
            private.private_file(self.path)
            for suffix in ("-wal", "-shm", "-journal"):
                private.restrict_if_present(self.path + suffix)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._check_and_migrate()
        except (OSError, sqlite3.Error) as exc:
            raise exceptions.StoreError(
                f"Cannot use the training database {self.path}: {exc}. Check that "
                "the state directory (--state-dir) is writable and the file is an "
                "intact SQLite database (move a damaged one aside to start afresh)."
            ) from exc

    def _check_and_migrate(self) -> None:
        problem = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {problem}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"it was written by a newer deepaas (schema {version})"
            )
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # proves the file is writable
            self._db.execute(_SCHEMA)
            if version == 1:  # trainings had no recorded starter
                self._db.execute("ALTER TABLE trainings ADD COLUMN started_by TEXT")
            self._db.execute(_JOBS_SCHEMA)
            self._db.execute(_JOBS_INDEX)
            self._db.execute(_EVENTS_SCHEMA)
            if version == 5:  # its webhooks did not name their model
                self._db.execute("DROP TABLE IF EXISTS webhooks")
            self._db.execute(_HOOKS_SCHEMA)
            self._db.execute(_DELIVERIES_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for table, expected in (
            ("trainings", COLUMNS),
            ("jobs", JOB_COLUMNS),
            ("events", EVENT_COLUMNS),
            ("webhooks", HOOK_COLUMNS),
            ("deliveries", DELIVERY_COLUMNS),
        ):
            columns = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]
            if columns != list(expected):
                raise sqlite3.DatabaseError(
                    f"its {table} table has other columns ({', '.join(columns)}) "
                    "than deepaas writes"
                )

    def mark_interrupted(self) -> int:
        """Record as failed every running training whose server is gone."""
        rows = self._db.execute(
            "SELECT model, uuid, owner FROM trainings WHERE status = ?", (RUNNING,)
        ).fetchall()
        stale = [(m, u) for m, u, owner in rows if not _owner_is_alive(owner)]
        now = str(datetime.datetime.now())
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE trainings SET status = ?, message = ?, finish_date = ? "
                "WHERE model = ? AND uuid = ? AND status = ?",
                [(ERROR, INTERRUPTED_BY_RESTART, now, m, u, RUNNING) for m, u in stale],
            )
        return len(stale)

    def _write(self, sql: str, training: Training) -> None:
        values = {
            "model": training.model,
            "uuid": training.uuid,
            "date": training.date.isoformat(),
            "args": json.dumps(training.args),
            "status": training.status,
            "output": json.dumps(training.output),
            "finish_date": training.finish_date.isoformat()
            if training.finish_date
            else None,
            "message": training.message,
            "owner": self.owner,
            "started_by": training.owner,
        }
        try:
            self._db.execute(sql, values)
        except sqlite3.Error as exc:
            raise exceptions.StoreError(
                f"Cannot save training {training.uuid}: {exc}"
            ) from exc

    def add(self, training: Training) -> None:
        self._write(
            "INSERT INTO trainings VALUES (:model, :uuid, :date, :args, :status, "
            ":output, :finish_date, :message, :owner, :started_by)",
            training,
        )

    def update(self, training: Training) -> None:
        self._write(
            "UPDATE trainings SET status = :status, output = :output, "
            "finish_date = :finish_date, message = :message "
            "WHERE model = :model AND uuid = :uuid",
            training,
        )

    @staticmethod
    def _training(row: tuple[Any, ...]) -> Training:
        model, uuid, date, args, status, output, finish_date, message, owner = row
        try:
            return Training(
                model=model,
                uuid=uuid,
                date=datetime.datetime.fromisoformat(date),
                args=json.loads(args),
                status=status,
                output=json.loads(output) if output is not None else None,
                finish_date=_date(finish_date),
                message=message,
                owner=owner,
            )
        except (TypeError, ValueError) as exc:
            # One damaged record must not hide the others: it reads as failed.
            return Training(
                model=str(model),
                uuid=str(uuid),
                date=UNREADABLE_DATE,
                args={},
                status=ERROR,
                message=f"This training's record cannot be read: {exc}",
                owner=owner,
            )

    _COLUMNS = ", ".join(c for c in COLUMNS if c != "owner")  # not the process

    def get(self, model: str, training_id: str) -> Training | None:
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM trainings WHERE model = ? AND uuid = ?",
            (model, training_id),
        ).fetchone()
        return self._training(row) if row else None

    def list(self, model: str) -> list[Training]:
        rows = self._db.execute(
            f"SELECT {self._COLUMNS} FROM trainings WHERE model = ? ORDER BY date",
            (model,),
        ).fetchall()
        return [self._training(r) for r in rows]

    def remove(self, model: str, training_id: str) -> None:
        self._db.execute(
            "DELETE FROM trainings WHERE model = ? AND uuid = ?", (model, training_id)
        )

    def finished_before(self, cutoff: datetime.datetime) -> Sequence[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT model, uuid, finish_date FROM trainings "
            "WHERE status != ? AND finish_date IS NOT NULL",
            (RUNNING,),
        ).fetchall()
        # Compared as dates: stored dates are written in two ISO forms.
        return [
            (model, uuid)
            for model, uuid, finished in rows
            if (date := _date(finished)) is not None and date < cutoff
        ]

    def counts(self) -> dict[tuple[str, str], int]:
        rows = self._db.execute(
            "SELECT model, status, COUNT(*) FROM trainings GROUP BY model, status"
        ).fetchall()
        return {(model, status): count for model, status, count in rows}

    def close(self) -> None:
        self._db.close()


class SQLiteJobStore:
    """Asynchronous prediction records, in the trainings' database file
    (its ``jobs`` table), through the training store's connection."""

    def __init__(self, store: SQLiteTrainingStore) -> None:
        self._db = store._db
        self.owner = store.owner

    @staticmethod
    def _job(row: tuple[Any, ...]) -> Job:
        (model, job_id, date, args, status, finish_date, message, error_status,
         result_type, result_size, started_by, key) = row  # fmt: skip
        try:
            return Job(
                model=model,
                id=job_id,
                date=datetime.datetime.fromisoformat(date),
                args=json.loads(args),
                status=status,
                finish_date=_date(finish_date),
                message=message,
                error_status=error_status,
                result_type=result_type,
                result_size=result_size,
                owner=started_by,
                idempotency_key=key,
            )
        except (TypeError, ValueError) as exc:
            return Job(
                model=str(model),
                id=str(job_id),
                date=UNREADABLE_DATE,
                args={},
                status=JOB_ERROR,
                message=f"This job's record cannot be read: {exc}",
                owner=started_by,
            )

    _COLUMNS = ", ".join(c for c in JOB_COLUMNS if c != "owner")

    def _write(self, sql: str, job: Job) -> None:
        values = {
            "model": job.model,
            "id": job.id,
            "date": job.date.isoformat(),
            "args": json.dumps(job.args),
            "status": job.status,
            "finish_date": job.finish_date.isoformat() if job.finish_date else None,
            "message": job.message,
            "error_status": job.error_status,
            "result_type": job.result_type,
            "result_size": job.result_size,
            "owner": self.owner,
            "started_by": job.owner,
            "idempotency_key": job.idempotency_key,
        }
        try:
            self._db.execute(sql, values)
        except sqlite3.Error as exc:
            raise exceptions.StoreError(f"Cannot save job {job.id}: {exc}") from exc

    def add(self, job: Job) -> None:
        names = ", ".join(f":{c}" for c in JOB_COLUMNS)
        self._write(f"INSERT INTO jobs VALUES ({names})", job)

    def update(self, job: Job) -> None:
        self._write(
            "UPDATE jobs SET status = :status, finish_date = :finish_date, "
            "message = :message, error_status = :error_status, "
            "result_type = :result_type, result_size = :result_size "
            "WHERE model = :model AND id = :id",
            job,
        )

    def get(self, model: str, job_id: str) -> Job | None:
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM jobs WHERE model = ? AND id = ?",
            (model, job_id),
        ).fetchone()
        return self._job(row) if row else None

    def by_key(self, model: str, owner: str | None, key: str) -> Job | None:
        """The job an ``Idempotency-Key`` of ``owner`` created, if any."""
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM jobs WHERE model = ? AND "
            "COALESCE(started_by, '') = ? AND idempotency_key = ?",
            (model, owner or "", key),
        ).fetchone()
        return self._job(row) if row else None

    def list(
        self,
        model: str,
        owner: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """A model's jobs (``owner``'s only, when given), oldest first (by
        date, then id): at most ``limit``, from the one after job ``after``."""
        sql = f"SELECT {self._COLUMNS} FROM jobs WHERE model = ?"
        params: tuple[Any, ...] = (model,)
        if owner is not None:
            sql += " AND started_by = ?"
            params += (owner,)
        if after is not None:
            sql += (
                " AND (date, id) > (SELECT date, id FROM jobs WHERE model = ? "
                "AND id = ?)"
            )
            params += (model, after)
        sql += " ORDER BY date, id"
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        rows = self._db.execute(sql, params).fetchall()
        return [self._job(r) for r in rows]

    def remove(self, model: str, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE model = ? AND id = ?", (model, job_id))

    def mark_interrupted(self) -> Sequence[str]:
        """Record as interrupted every running job whose server is gone; their ids."""
        rows = self._db.execute(
            "SELECT model, id, owner FROM jobs WHERE status = ?", (JOB_RUNNING,)
        ).fetchall()
        stale = [(m, i) for m, i, owner in rows if not _owner_is_alive(owner)]
        now = datetime.datetime.now().isoformat()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE jobs SET status = ?, message = ?, finish_date = ? "
                "WHERE model = ? AND id = ? AND status = ?",
                [
                    (INTERRUPTED, JOB_INTERRUPTED_BY_RESTART, now, m, i, JOB_RUNNING)
                    for m, i in stale
                ],
            )
        return [i for _, i in stale]

    def finished_before(self, cutoff: datetime.datetime) -> Sequence[tuple[str, str]]:
        """(model, id) of each job that ended before ``cutoff``."""
        rows = self._db.execute(
            "SELECT model, id, finish_date FROM jobs "
            "WHERE status != ? AND finish_date IS NOT NULL",
            (JOB_RUNNING,),
        ).fetchall()
        return [
            (model, job_id)
            for model, job_id, finished in rows
            if (date := _date(finished)) is not None and date < cutoff
        ]


class SQLiteEventStore:
    """The events of trainings and jobs, in the trainings' database file."""

    def __init__(self, store: SQLiteTrainingStore) -> None:
        self._db = store._db

    def add(self, kind: str, record: str, event: Event) -> None:
        try:
            self._db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                (kind, record, event.seq, event.name, event.data, int(event.final)),
            )
        except sqlite3.Error as exc:
            raise exceptions.StoreError(f"Cannot save an event: {exc}") from exc

    def after(
        self, kind: str, record: str, seq: int, limit: int | None = None
    ) -> list[Event]:
        rows = self._db.execute(
            "SELECT seq, name, data, final FROM events "
            "WHERE kind = ? AND record = ? AND seq > ? ORDER BY seq LIMIT ?",
            (kind, record, seq, -1 if limit is None else limit),
        ).fetchall()
        return [Event(s, name, data, bool(final)) for s, name, data, final in rows]

    def last_seq(self, kind: str, record: str) -> int:
        row = self._db.execute(
            "SELECT MAX(seq) FROM events WHERE kind = ? AND record = ?",
            (kind, record),
        ).fetchone()
        return row[0] or 0

    def remove(self, kind: str, record: str) -> None:
        self._db.execute(
            "DELETE FROM events WHERE kind = ? AND record = ?", (kind, record)
        )

    def prune_to_bytes(self, kind: str, record: str, keep: int) -> None:
        """Forget a record's oldest events until the rest hold at most
        ``keep`` bytes of data."""
        rows = self._db.execute(
            "SELECT seq, LENGTH(CAST(data AS BLOB)) FROM events "
            "WHERE kind = ? AND record = ? ORDER BY seq DESC",
            (kind, record),
        )
        total = 0
        for seq, size in rows:
            total += size or 0
            if total > keep:
                self.prune(kind, record, seq)
                return

    def prune(self, kind: str, record: str, up_to: int) -> None:
        """Forget a record's events numbered ``up_to`` and below."""
        try:
            self._db.execute(
                "DELETE FROM events WHERE kind = ? AND record = ? AND seq <= ?",
                (kind, record, up_to),
            )
        except sqlite3.Error as exc:
            raise exceptions.StoreError(f"Cannot prune events: {exc}") from exc


class SQLiteWebhookStore:
    """Webhooks and their pending deliveries, in the trainings' database."""

    def __init__(self, store: SQLiteTrainingStore) -> None:
        self._db = store._db

    def _run(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise exceptions.StoreError(f"Cannot save a webhook: {exc}") from exc

    def add_hook(
        self, kind: str, record: str, model: str, url: str, events: Sequence[str]
    ) -> None:
        self._run(
            "INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?, ?, ?)",
            (kind, record, model, url, ",".join(events)),
        )

    def hooks(self) -> list[tuple[str, str, str, str, list[str]]]:
        """Every kept webhook: (kind, record, model, url, events)."""
        rows = self._db.execute(
            "SELECT kind, record, model, url, events FROM webhooks"
        ).fetchall()
        return [(k, r, m, u, e.split(",")) for k, r, m, u, e in rows]

    def remove_hook(self, kind: str, record: str) -> None:
        self._run("DELETE FROM webhooks WHERE kind = ? AND record = ?", (kind, record))

    def add_delivery(self, delivery: Delivery) -> None:
        self._run(
            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            dataclasses.astuple(delivery),
        )

    def due(self, now: float, limit: int) -> list[Delivery]:
        rows = self._db.execute(
            "SELECT * FROM deliveries WHERE due <= ? ORDER BY due LIMIT ?",
            (now, limit),
        ).fetchall()
        return [Delivery(*row) for row in rows]

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(due) FROM deliveries").fetchone()
        return row[0]

    def pending_progress(self, kind: str, record: str) -> Delivery | None:
        """A progress delivery of the record not yet tried, if any."""
        row = self._db.execute(
            "SELECT * FROM deliveries WHERE kind = ? AND record = ? AND "
            "type LIKE '%.progress' AND attempts = 0",
            (kind, record),
        ).fetchone()
        return Delivery(*row) if row else None

    def remove_delivery(self, delivery_id: str) -> None:
        self._run("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]

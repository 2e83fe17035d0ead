"""The server's state: the records of trainings and jobs, their events,
webhooks and deliveries, and idempotency keys, behind one ``Database``
(``repositories``) that a backend implements (``sqlite``, the embedded
default). This package imports no other part of the server but its
exceptions and private-file helpers.
"""

from __future__ import annotations

from deepaas import exceptions
from deepaas.state.records import Record
from deepaas.state.repositories import Database, Delivery, Event, StoredHook


def open_database(state_dir: str, url: str = "", lease: float = 15.0) -> Database:
    """The state database at ``url`` (``--database``), by default the SQLite
    file of the state directory ``state_dir``. A SQLite file is opened (and
    migrated) at once; a PostgreSQL database by ``Database.open()``.

    Raises ``ConfigurationError`` for a URL of no backend this server has.
    """
    scheme, _, rest = url.partition("://")
    if not url or scheme == "sqlite":
        from deepaas.state.sqlite import SQLiteDatabase

        if url and not rest.startswith("/"):
            raise exceptions.ConfigurationError(
                f"--database {url}: a SQLite database is sqlite:///PATH, an "
                "absolute path"
            )
        return SQLiteDatabase(state_dir, rest or None)
    if scheme in ("postgresql", "postgres"):
        try:
            from deepaas.state.postgres import PostgresDatabase
        except ImportError as exc:
            raise exceptions.ConfigurationError(
                "--database postgresql://... needs asyncpg, which is not "
                f"installed: pip install 'deepaas[postgres]' ({exc})"
            ) from None
        return PostgresDatabase(url, lease)
    raise exceptions.ConfigurationError(
        f"--database takes sqlite:///PATH or postgresql://..., not {scheme}://"
    )


__all__ = ["Database", "Delivery", "Event", "Record", "StoredHook", "open_database"]

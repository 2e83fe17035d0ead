"""A record as a row: the columns every backend keeps it in, and the
conversions both ways. Dates are ISO 8601 text with microseconds, arguments
and results JSON text, so that every backend keeps the same bytes."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from deepaas.state.records import (
    ERROR,
    UNREADABLE_DATE,
    Record,
    date_text,
    parse_date,
)
from deepaas.state.repositories import ALL, OF_USER

# The columns of a record, in the order every backend keeps them
record_names = (
    "kind", "model", "id", "date", "args", "status", "finish_date", "message",
    "result", "error_status", "owner", "started_by", "progress",
    "progress_message",
)  # fmt: skip
OWNER = record_names.index("owner")

# The columns of every table both backends keep, in order
shared_tables = {
    "records": record_names,
    "idempotency_keys": ("model", "started_by", "key", "record"),
    "events": ("kind", "record", "seq", "name", "data", "final"),
    "webhooks": ("kind", "record", "model", "url", "events"),
    "deliveries": ("id", "url", "type", "body", "attempts", "due", "kind", "record"),
    "outputs": ("kind", "record", "at", "data"),
}


def record_from_row(row: Sequence[Any]) -> Record:
    """The record a row holds; one that cannot be read is a failed record
    saying why (one damaged record must not hide the others)."""
    (kind, model, record_id, date, args, status, finished, message, result,
     error_status, owner, started_by, progress, progress_message) = row  # fmt: skip
    try:
        return Record(
            kind=kind,
            model=model,
            id=record_id,
            date=datetime.datetime.fromisoformat(date),
            args=json.loads(args),
            status=status,
            finish_date=parse_date(finished),
            message=message,
            result=json.loads(result) if result is not None else None,
            error_status=error_status,
            owner=owner,
            started_by=started_by,
            progress=progress,
            progress_message=progress_message,
        )
    except (TypeError, ValueError) as exc:
        return Record(
            kind=str(kind),
            model=str(model),
            id=str(record_id),
            date=UNREADABLE_DATE,
            args={},
            status=ERROR,
            message=f"This {kind}'s record cannot be read: {exc}",
            started_by=started_by,
        )


def record_values(record: Record) -> dict[str, Any]:
    """The row of a record, by column."""
    return {
        "kind": record.kind,
        "model": record.model,
        "id": record.id,
        "date": date_text(record.date),
        "args": json.dumps(record.args),
        "status": record.status,
        "finish_date": date_text(record.finish_date) if record.finish_date else None,
        "message": record.message,
        "result": json.dumps(record.result) if record.result is not None else None,
        "error_status": record.error_status,
        "owner": record.owner,
        "started_by": record.started_by,
        "progress": record.progress,
        "progress_message": record.progress_message,
    }


def limit_reached(
    running: int, of_user: int, max_running: int, max_of_user: int
) -> str | None:
    """Which limit (``ALL``, ``OF_USER``) ``running`` records, ``of_user``
    of them the user's, have reached; None when one more may start."""
    if max_running and running >= max_running:
        return ALL
    if max_of_user and of_user >= max_of_user:
        return OF_USER
    return None

"""Journal rows decoded into records: the same code for every backend's readers.

Pure Python over rows read by position or by column name (``sqlite3.Row`` on SQLite, the
PostgreSQL reader's `Row`): no SQL and no driver here, so a SQLite and a PostgreSQL
journal holding the same rows answer the same records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..clock import to_datetime
from ..records import RunCode, RunInfo, RunStatus
from ..state import StateEncodingError, holds_lone_surrogate, parse_payload
from .records import CommandRecord, EventRecord


def stored_fields(row: Any) -> dict[str, Any]:
    """The fields of an `UnfinishedRun` from a stored-run row (its columns in this order)."""
    return {
        "row": row[0],
        "run_id": row[1],
        "workflow_id": row[2],
        "trigger_id": row[3],
        "version": row[4],
        "status": RunStatus(row[5]),
        "position": row[6],
        "step": row[7],
        "state": row[8],
        "created_at": row[9],
        "recoveries": row[10],
    }


def run_info(row: Any) -> RunInfo:
    """A run as shown, from a row with the named columns of a run query."""
    return RunInfo(
        run_id=row["run_id"],
        workflow_id=row["workflow_id"],
        trigger_id=row["trigger_id"],
        status=RunStatus(row["status"]),
        step=row["step"],
        state=shown_state(row["state"]),
        error=row["error"],
        version=row["version"],
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        error_code=RunCode(row["error_code"]) if row["error_code"] is not None else None,
        forked_from=forked_from(row["forked_from_run"], row["forked_from_step"]),
        parent=row["parent"],
    )


def forked_from(run_id: str | None, step: str | None) -> dict[str, str] | None:
    """A run's ``forked_from`` as shown: ``{"run_id", "step"}``, or None (not a fork)."""
    return None if run_id is None else {"run_id": run_id, "step": step or ""}


def decode_payload(text: str | None, *, wrapped: bool = False) -> tuple[Any, str | None]:
    """A payload row decoded under the state bounds, or (None, why it cannot be).

    Rows that no process of this version writes (too deep, too big, not JSON) must fail
    only their event or command, never the process reading them. `wrapped`: any JSON
    value, not only an object.
    """
    if text is None:
        return None, None
    try:
        if wrapped:
            return parse_payload(f'{{"value":{text}}}')["value"], None
        return parse_payload(text), None
    except StateEncodingError as exc:
        return None, str(exc)


def shown_state(text: str | None) -> dict[str, Any]:
    """A state to show; one that cannot be read says why instead of failing the reader."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return {"unreadable_state": f"the journal holds a state that is not readable JSON: {exc}"}
    if not isinstance(value, dict) or holds_lone_surrogate(text, value):
        return {"unreadable_state": f"not a valid state: {text[:80]}"}
    return value


def event_record(row: Sequence[Any]) -> EventRecord:
    """An event from a row of (id, event_id, type, data, source, created_at)."""
    data, problem = decode_payload(row[3])
    return EventRecord(
        id=row[0],
        event_id=row[1],
        type=row[2],
        data=data if isinstance(data, dict) else {},
        source=row[4],
        created_at=row[5],
        problem=problem,
    )


def command_record(row: Sequence[Any]) -> CommandRecord:
    """A command from a row of (id, command, run_id, workflow_id, trigger_id, payload, at)."""
    payload, problem = decode_payload(row[5], wrapped=True)
    return CommandRecord(
        id=row[0],
        command=row[1],
        run_id=row[2],
        workflow_id=row[3],
        trigger_id=row[4],
        payload=payload,
        created_at=row[6],
        problem=problem,
    )

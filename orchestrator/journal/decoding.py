"""Journal rows decoded into records: the same code for every backend's readers.

Pure Python over rows read by position or by column name (``sqlite3.Row`` on SQLite, the
PostgreSQL reader's `Row`): no SQL and no driver here, so a SQLite and a PostgreSQL
journal holding the same rows answer the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..clock import to_datetime
from ..records import Checkpoint, RunCode, RunInfo, RunStatus
from ..state import StateEncodingError, holds_lone_surrogate, parse_payload
from .records import (
    CommandRecord,
    EventRecord,
    RunMatch,
    RunMatches,
    RunOutcome,
    SwitchRecord,
    WaitRecord,
    WorkflowRecord,
)


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


def wait_records(
    rows: Sequence[Sequence[Any]], buffered: Sequence[Sequence[Any]]
) -> list[WaitRecord]:
    """Live waits, each with its buffered events in order.

    `rows`: (id, run row, run_id, event_type, conditions, persistent, status, into_key,
    timeout_at, on_timeout, joins); `buffered`: (wait, seq, event_id, data).
    """
    by_wait: dict[int, list[tuple[int, str, dict[str, Any]]]] = {}
    for wait, seq, event_id, data in buffered:
        value, _ = decode_payload(data)  # unreadable: an empty event, not a crash at start
        by_wait.setdefault(wait, []).append((seq, event_id, value or {}))
    return [
        WaitRecord(
            id=row[0],
            row=row[1],
            run_id=row[2],
            event_type=row[3],
            conditions=json.loads(row[4]),
            persistent=bool(row[5]),
            status=row[6],
            into=row[7],
            timeout_at=row[8],
            on_timeout=row[9],
            buffer=by_wait.get(row[0], []),
            joins=None if row[10] is None else [str(i) for i in json.loads(row[10])],
        )
        for row in rows
    ]


def workflow_records(
    rows: Sequence[Sequence[Any]],
    off: dict[str, dict[str, int]],
    ticks: Sequence[Sequence[Any]],
) -> list[WorkflowRecord]:
    """Workflows with what is disabled (`disabled_of`) and their next ticks.

    `rows`: (workflow_id, version, file, triggers, mode, loaded_at); `ticks`: (workflow_id,
    trigger_id, next_tick).
    """
    next_ticks: dict[str, dict[str, int]] = {}
    for workflow_id, trigger_id, tick in ticks:
        next_ticks.setdefault(workflow_id, {})[trigger_id] = tick
    records = []
    for row in rows:
        disabled = dict(off.get(row[0], {}))
        records.append(
            WorkflowRecord(
                workflow_id=row[0],
                version=row[1],
                file=row[2],
                triggers=json.loads(row[3]),
                mode=row[4],
                loaded_at=row[5],
                disabled_at=disabled.pop("", None),
                disabled_triggers=disabled,
                next_ticks=next_ticks.get(row[0], {}),
            )
        )
    return records


def switch_records(rows: Sequence[Sequence[Any]]) -> list[SwitchRecord]:
    """Switches from rows of (workflow_id, trigger_id, enabled, changed_at)."""
    return [
        SwitchRecord(
            workflow_id=row[0],
            trigger_id=row[1] or None,
            enabled=bool(row[2]),
            changed_at=row[3],
        )
        for row in rows
    ]


def disabled_of(switches: Sequence[SwitchRecord]) -> dict[str, dict[str, int]]:
    """Workflow id -> key ('' for the whole workflow, else a trigger id) -> disabled since."""
    off: dict[str, dict[str, int]] = {}
    for switch in switches:
        if not switch.enabled:
            off.setdefault(switch.workflow_id, {})[switch.trigger_id or ""] = switch.changed_at
    return off


def switch_commands(rows: Sequence[Sequence[Any]]) -> list[CommandRecord]:
    """Pending switch commands from rows of (id, command, workflow_id, trigger_id, at)."""
    return [
        CommandRecord(
            id=row[0],
            command=row[1],
            run_id=None,
            workflow_id=row[2],
            trigger_id=row[3],
            payload=None,
            created_at=row[4],
        )
        for row in rows
    ]


def checkpoint_of(row: Sequence[Any], state: str | None) -> Checkpoint:
    """A checkpoint from a row of (position, step, started_at, ended_at, ...) and its state."""
    return Checkpoint(
        position=row[0],
        step=row[1],
        started_at=to_datetime(row[2]),
        ended_at=to_datetime(row[3]),
        state=shown_state(state),
        kind=row[-1],
    )


def outcome_of(row: Sequence[Any], state: str | None) -> RunOutcome:
    """A run's outcome from a row of (run_id, status, error, error_code, ...) and its state."""
    return RunOutcome(
        run_id=row[0],
        status=RunStatus(row[1]),
        state=shown_state(state),
        error=row[2],
        error_code=row[3],
    )


def service_scopes(
    rows: Iterable[Sequence[Any]],
) -> list[tuple[int, str, str, list[str]]]:
    """Rows of (run row, run id, state, service id) grouped by run, in order."""
    found: dict[int, tuple[int, str, str, list[str]]] = {}
    for row, run_id, state, service_id in rows:
        found.setdefault(row, (row, run_id, state, []))[3].append(service_id)
    return list(found.values())


def run_matches(rows: Iterable[Sequence[Any]]) -> RunMatches:
    """Rows of (run_id, workflow_id, status, count in all) as `RunMatches` (none: no run)."""
    found = tuple(rows)
    runs = tuple(RunMatch(row[0], row[1], row[2]) for row in found)
    return RunMatches(runs, int(found[0][3]) if found else 0)


def text_after(prefix: str) -> str | None:
    """The least text above every text that starts with `prefix`, by code points.

    The prefix with its last character one higher (after dropping trailing U+10FFFF, which
    has none higher); None when no text is (an empty prefix, or U+10FFFF alone).
    """
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    code = ord(stem[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # surrogates are no characters: the next one is U+E000
        code = 0xE000
    return stem[:-1] + chr(code)

"""Write operations: every statement the group-commit writer may run, and their builders.

An op is a statement and its parameters. The writer applies a batch in the order the
`Stmt` members are declared, each statement once with ``executemany``.

Invariant: ops for one run are submitted in causal order with nondecreasing timestamps
(the `Clock` guarantees it), and two statements that touch the same row and column are the
same member (``updated_at`` is only ever raised with ``max``), so applying a batch grouped
by statement, keeping the last of each run's absolute updates, equals applying it op by op.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from ..records import RunCode, RunStatus


class Stmt(enum.Enum):
    """Statements, in the order a batch applies them."""

    RESET_WORKFLOWS = "UPDATE workflows SET present = 0"
    RESET_LOAD_ERRORS = "DELETE FROM load_errors"
    SET_WORKFLOW = (
        "INSERT INTO workflows (workflow_id, version, file, triggers, mode, loaded_at, present)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO UPDATE SET"
        " version = excluded.version, file = excluded.file, triggers = excluded.triggers,"
        " mode = excluded.mode, loaded_at = excluded.loaded_at, present = excluded.present"
    )
    SET_LOAD_ERROR = (
        "INSERT INTO load_errors (file, line, message, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (file) DO UPDATE SET"
        " line = excluded.line, message = excluded.message, at = excluded.at"
    )
    ADD_VERSION = (
        "INSERT INTO workflow_versions (workflow_id, version, file, definition, created_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    INSERT_RUN = (
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
        " step_started_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    INSERT_EVENT = (
        "INSERT INTO events (event_id, type, data, source, created_at, routed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    )
    MARK_ROUTED = "UPDATE events SET routed_at = ? WHERE event_id = ?"
    SET_FILE_SEEN = (
        "INSERT INTO files_seen (dir, glob, name, inode, at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (dir, glob, name) DO UPDATE SET inode = excluded.inode, at = excluded.at"
    )
    INSERT_WAIT = (
        "INSERT INTO waits (id, run, event_type, conditions, persistent, status, into_key,"
        " timeout_at, on_timeout, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    INSERT_CHECKPOINT = (
        "INSERT OR REPLACE INTO checkpoints"
        " (run, position, step, started_at, ended_at, state, kind) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    SET_PROGRESS = (
        "UPDATE runs SET position = max(position, ?), step = ?, step_started_at = ?,"
        " updated_at = max(updated_at, ?) WHERE id = ?"
    )
    SET_POSITION = (
        "UPDATE runs SET position = max(position, ?), updated_at = max(updated_at, ?) WHERE id = ?"
    )
    SET_VERSION = "UPDATE runs SET version = ? WHERE id = ?"
    SET_STATUS = (
        "UPDATE runs SET status = ?, error = ?, error_code = ?,"
        " updated_at = max(updated_at, ?) WHERE id = ?"
    )
    SET_WAIT = (
        "UPDATE waits SET status = ?, timeout_at = ?, into_key = ?, on_timeout = ? WHERE id = ?"
    )
    ADD_BUFFERED = "INSERT INTO wait_buffer (wait, seq, event_id) VALUES (?, ?, ?)"
    DROP_BUFFERED = "DELETE FROM wait_buffer WHERE wait = ? AND seq = ?"
    ADD_ROUTE = (
        "INSERT OR IGNORE INTO event_routes (event_id, run, action, wait) VALUES (?, ?, ?, ?)"
    )
    ARM_SCHEDULE = (
        "INSERT OR IGNORE INTO schedule_state (workflow_id, trigger_id, last_tick) VALUES (?, ?, ?)"
    )
    SCHEDULE_FIRED = (
        "UPDATE schedule_state SET last_tick = max(last_tick, ?)"
        " WHERE workflow_id = ? AND trigger_id = ?"
    )
    INBOX_DONE = "UPDATE inbox SET done_at = ?, outcome = ? WHERE id = ?"
    ADD_TIMELINE = (
        "INSERT INTO timeline (run, position, at, source, kind, step, message, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    MARK_READY = "UPDATE lease SET ready = 1 WHERE token = ?"


Op = tuple[Stmt, tuple[Any, ...]]
# Updates that set absolute values of one run (its row id is the last parameter): within a
# batch only the last one of each run matters.
_LAST_WINS = frozenset(
    {Stmt.SET_PROGRESS, Stmt.SET_POSITION, Stmt.SET_STATUS, Stmt.SET_VERSION, Stmt.SET_WAIT}
)


def grouped(ops: list[Op]) -> list[tuple[Stmt, list[tuple[Any, ...]]]]:
    """A batch as (statement, parameter rows) in statement order, last-wins updates merged."""
    by_stmt: dict[Stmt, list[tuple[Any, ...]]] = {}
    for stmt, params in ops:
        by_stmt.setdefault(stmt, []).append(params)
    result = []
    for stmt in Stmt:
        rows = by_stmt.get(stmt)
        if rows:
            if stmt in _LAST_WINS:
                rows = list({params[-1]: params for params in rows}.values())
            result.append((stmt, rows))
    return result


def add_version(workflow_id: str, version: str, file: str | None, definition: str, at: int) -> Op:
    """Record a workflow version (a no-op if it is already known)."""
    return Stmt.ADD_VERSION, (workflow_id, version, file, definition, at)


def reset_workflows() -> list[Op]:
    """A runtime starts with nothing registered and no load errors."""
    return [(Stmt.RESET_WORKFLOWS, ()), (Stmt.RESET_LOAD_ERRORS, ())]


def workflow_loaded(
    workflow_id: str, version: str, file: str | None, triggers: str, mode: str, at: int
) -> Op:
    """A workflow is registered now (on this version, from this file)."""
    return Stmt.SET_WORKFLOW, (workflow_id, version, file, triggers, mode, at, 1)


def workflow_removed(workflow_id: str, at: int) -> Op:
    """A workflow is no longer registered."""
    return Stmt.SET_WORKFLOW, (workflow_id, "", None, "[]", "", at, 0)


def load_error(file: str, line: int | None, message: str | None, at: int) -> Op:
    """A file failed to load (or, with `message` None, loads again)."""
    return Stmt.SET_LOAD_ERROR, (file, line, message, at)


def file_seen(folder: str, glob: str, name: str, inode: int | None, at: int) -> Op:
    """A file in a watched folder was an event (or, `inode` None, has left the folder)."""
    return Stmt.SET_FILE_SEEN, (folder, glob, name, inode, at)


def create_run(
    row: int,
    run_id: str,
    workflow_id: str,
    trigger_id: str,
    version: str,
    *,
    status: RunStatus,
    first_step: str,
    state: str,
    at: int,
) -> list[Op]:
    """A new run and its input as checkpoint 0."""
    return [
        (
            Stmt.INSERT_RUN,
            (row, run_id, workflow_id, trigger_id, version, status, first_step, at, at, at),
        ),
        (Stmt.INSERT_CHECKPOINT, (row, 0, None, at, at, state, "step")),
    ]


def checkpoint(
    row: int,
    position: int,
    step: str,
    *,
    started_at: int,
    ended_at: int,
    state: str,
    next_step: str | None,
) -> list[Op]:
    """The state after `position` steps, and the run's pointer to the next step."""
    return [
        (Stmt.INSERT_CHECKPOINT, (row, position, step, started_at, ended_at, state, "step")),
        (Stmt.SET_PROGRESS, (position, next_step, ended_at, ended_at, row)),
    ]


def step_started(row: int, position: int, step: str, at: int) -> Op:
    """A step (re)starts at `at`: after recovery or a resume."""
    return Stmt.SET_PROGRESS, (position, step, at, at, row)


def set_version(row: int, version: str) -> Op:
    """Move a recovered run onto the workflow's current version."""
    return Stmt.SET_VERSION, (version, row)


def set_status(
    row: int, status: RunStatus, at: int, *, error: str | None = None, code: RunCode | None = None
) -> Op:
    """Move a run to `status`, with the error that ended it, if any."""
    return Stmt.SET_STATUS, (status, error, code, at, row)


def add_timeline(
    row: int | None,
    at: int,
    source: str,
    kind: str,
    *,
    position: int | None = None,
    step: str | None = None,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> Op:
    """An explicit timeline entry (logs, retries, recoveries, ...).

    `data` is stored as compact JSON; what JSON cannot hold is stored as its repr, so a
    timeline entry never fails to be written.
    """
    text = None if data is None else json.dumps(data, separators=(",", ":"), default=repr)
    return Stmt.ADD_TIMELINE, (row, position, at, source, kind, step, message, text)


def state_change(row: int, position: int, kind: str, state: str, at: int) -> list[Op]:
    """A checkpoint that is not a step's result: a resume's or a signal's patch."""
    return [
        (Stmt.INSERT_CHECKPOINT, (row, position, None, at, at, state, kind)),
        (Stmt.SET_POSITION, (position, at, row)),
    ]


def add_event(event_id: str, type_: str, data: str, source: str, at: int) -> Op:
    """An event accepted and routed by this process, in the same batch as its effects."""
    return Stmt.INSERT_EVENT, (event_id, type_, data, source, at, at)


def mark_routed(event_id: str, at: int) -> Op:
    """An event written by another process has been routed (with its effects)."""
    return Stmt.MARK_ROUTED, (at, event_id)


def add_wait(
    wait: int,
    row: int,
    event_type: str | None,
    conditions: str,
    *,
    persistent: bool,
    status: str,
    into: str | None,
    timeout_at: int | None,
    on_timeout: str,
    at: int,
) -> Op:
    """A wait: registered through the pause service (``armed``) or parked on at once."""
    return Stmt.INSERT_WAIT, (
        wait,
        row,
        event_type,
        conditions,
        int(persistent),
        status,
        into,
        timeout_at,
        on_timeout,
        at,
    )


def set_wait(
    wait: int, status: str, timeout_at: int | None, into: str | None, on_timeout: str
) -> Op:
    """Move a wait to ``armed``, ``parked``, ``done`` or ``cancelled`` (and how it parks)."""
    return Stmt.SET_WAIT, (status, timeout_at, into, on_timeout, wait)


def buffer_event(wait: int, seq: int, event_id: str) -> Op:
    """Keep an event for a wait that is not parked yet (or between resumes)."""
    return Stmt.ADD_BUFFERED, (wait, seq, event_id)


def drain_event(wait: int, seq: int) -> Op:
    """A buffered event was consumed."""
    return Stmt.DROP_BUFFERED, (wait, seq)


def add_route(event_id: str, row: int, action: str, wait: int | None = None) -> Op:
    """What an event did to a run: ``started``, ``resumed``, ``buffered`` or ``signalled``."""
    return Stmt.ADD_ROUTE, (event_id, row, action, wait)


def arm_schedule(workflow_id: str, trigger_id: str, at: int) -> Op:
    """Start counting a schedule's ticks from `at` (no-op if it already counts)."""
    return Stmt.ARM_SCHEDULE, (workflow_id, trigger_id, at)


def schedule_fired(workflow_id: str, trigger_id: str, tick: int) -> Op:
    """A schedule fired for `tick`: with the run it started, so each tick fires once."""
    return Stmt.SCHEDULE_FIRED, (tick, workflow_id, trigger_id)


def inbox_done(command: int, outcome: str, at: int) -> Op:
    """A command from another process was applied (or refused, with why)."""
    return Stmt.INBOX_DONE, (at, outcome, command)

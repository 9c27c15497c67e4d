"""Write operations: every write a journal writer may apply, and their builders.

An op is a statement key and its parameters: it says what to write, never how, so ops are
the same for every backend. Each backend maps every `Stmt` key to its own statement (for
SQLite, `sqlite.statements.SQL`) and applies a batch in the order the keys are declared,
each statement once over all its rows (SQLite: ``executemany``).

Invariant: ops for one run are submitted in causal order with nondecreasing timestamps
(the `Clock` guarantees it), and two statements that touch the same row and column are the
same key (a backend's statements only ever raise ``updated_at``, with ``max``), so applying
a batch grouped by statement, keeping the last of each run's absolute updates, equals
applying it op by op. One exception: `SET_PARKED` sets what three other keys set (a pause
in one update); a batch that has one of them for the same run runs it as those three
(`untangled`).
"""

from __future__ import annotations

import enum
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ValidationError
from ..records import EventSource, RunCode, RunStatus


class Stmt(enum.Enum):
    """Statements, as keys (each backend holds their text); a batch applies them in this order."""

    # Members are singletons: hashed by identity, in C. `Enum.__hash__` is a Python call
    # per lookup, and a batch looks every op's statement up (about 9 per run).
    __hash__ = object.__hash__

    RESET_WORKFLOWS = enum.auto()
    RESET_LOAD_ERRORS = enum.auto()
    SET_WORKFLOW = enum.auto()
    SET_LOAD_ERROR = enum.auto()
    ADD_VERSION = enum.auto()
    INSERT_RUN = enum.auto()
    SET_FORKED = enum.auto()
    INSERT_EVENT = enum.auto()
    MARK_ROUTED = enum.auto()
    SET_FILE_SEEN = enum.auto()
    INSERT_WAIT = enum.auto()
    INSERT_CHECKPOINT = enum.auto()
    SET_PROGRESS = enum.auto()
    SET_POSITION = enum.auto()
    SET_VERSION = enum.auto()
    CLEAR_RECOVERIES = enum.auto()
    SET_RECOVERIES = enum.auto()
    SET_STATUS = enum.auto()
    SET_PARKED = enum.auto()
    SET_PAUSED_IN = enum.auto()
    SET_WAIT = enum.auto()
    ADD_BUFFERED = enum.auto()
    DROP_BUFFERED = enum.auto()
    ADD_ROUTE = enum.auto()
    ARM_SCHEDULE = enum.auto()
    SCHEDULE_FIRED = enum.auto()
    SCHEDULE_NEXT = enum.auto()
    SET_SWITCH = enum.auto()
    CLAIM_KEY = enum.auto()
    OUTBOX_INVOKE = enum.auto()
    OUTBOX_EVENT = enum.auto()
    ADD_CHILD = enum.auto()
    INBOX_DONE = enum.auto()
    ADD_TIMELINE = enum.auto()
    MARK_READY = enum.auto()


Op = tuple[Stmt, tuple[Any, ...]]
# Updates that set absolute values of one run (its row id is the last parameter): within a
# batch only the last one of each run matters.
_LAST_WINS = frozenset(
    {
        Stmt.SET_PROGRESS,
        Stmt.SET_POSITION,
        Stmt.SET_STATUS,
        Stmt.SET_PAUSED_IN,
        Stmt.SET_VERSION,
        Stmt.SET_WAIT,
        Stmt.SET_PARKED,
    }
)
# The updates a `SET_PARKED` row is made of (`parked_parts`): they set the same columns of
# a run's row absolutely, so a batch that has one of them for a parked run runs its
# `SET_PARKED` rows as their parts, in the order enqueued (`untangled`).
_PARKED_PARTS = (Stmt.SET_PROGRESS, Stmt.SET_STATUS, Stmt.SET_PAUSED_IN)


def grouped(ops: list[Op]) -> list[tuple[Stmt, list[tuple[Any, ...]]]]:
    """A batch as (statement, parameter rows) in statement order, last-wins updates merged."""
    by_stmt: defaultdict[Stmt, list[tuple[Any, ...]]] = defaultdict(list)
    for stmt, params in ops:
        by_stmt[stmt].append(params)
    return in_order(untangled(by_stmt, [stmt for stmt, _ in ops]))


def untangled(
    by_stmt: dict[Stmt, list[tuple[Any, ...]]], kinds: Iterable[Stmt]
) -> dict[Stmt, list[tuple[Any, ...]]]:
    """`by_stmt`, or, if a run parked in it has another update of its row, its parts.

    `kinds` is the statement of each op of the batch in the order enqueued (each list of
    `by_stmt` in that order too). Grouped by statement, a `SET_PARKED` row would be run
    apart from updates of the same columns made before or after it in the batch (a run
    woken at once, a run resumed and parked again): such a batch runs every `SET_PARKED`
    row as its three parts, in place, which is applying it op by op.
    """
    parked = by_stmt.get(Stmt.SET_PARKED)
    if not parked:
        return by_stmt
    runs = {params[-1] for params in parked}
    if len(runs) == len(parked) and not any(
        params[-1] in runs for stmt in _PARKED_PARTS for params in by_stmt.get(stmt, ())
    ):
        return by_stmt
    parts: dict[Stmt, list[tuple[Any, ...]]] = defaultdict(list)
    taken: dict[Stmt, int] = {}
    for stmt in kinds:
        n = taken.get(stmt, 0)
        taken[stmt] = n + 1
        params = by_stmt[stmt][n]
        if stmt is Stmt.SET_PARKED:
            for part, part_params in parked_parts(params):
                parts[part].append(part_params)
        else:
            parts[stmt].append(params)
    return parts


def in_order(
    by_stmt: Mapping[Stmt, list[tuple[Any, ...]]],
) -> list[tuple[Stmt, list[tuple[Any, ...]]]]:
    """`grouped` of a batch whose parameter rows are grouped by statement already."""
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


def set_forked(row: int, run_id: str, step: str) -> Op:
    """A new run was forked from run `run_id`, starting at `step` (with its run row)."""
    return Stmt.SET_FORKED, (run_id, step, row)


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


def set_recoveries(row: int, step: str, count: int) -> Op:
    """Start-up recovery has continued run `row` at `step` `count` times in all."""
    return Stmt.SET_RECOVERIES, (row, step, count)


def clear_recoveries(row: int) -> Op:
    """A retried run starts counting its recoveries again (the crash-loop guard restarts)."""
    return Stmt.CLEAR_RECOVERIES, (row,)


def set_status(
    row: int, status: RunStatus, at: int, *, error: str | None = None, code: RunCode | None = None
) -> Op:
    """Move a run to `status`, with the error that ended it, if any."""
    return Stmt.SET_STATUS, (status, valid_text(error), code, at, row)


def set_paused_in(row: int, step: str | None) -> Op:
    """Run `row` pauses in `step` (the step that asked to wait); None: it woke."""
    return Stmt.SET_PAUSED_IN, (step, row)


def parked(progress: Op, step: str | None, at: int) -> Op:
    """A step's progress (`checkpoint`'s `SET_PROGRESS`), then the run pausing in `step`.

    One update of the run's row for three: `SET_PROGRESS`, `SET_STATUS` to ``paused`` at
    `at` and `SET_PAUSED_IN` (`parked_parts`).
    """
    position, next_step, started_at, _, row = progress[1]
    return Stmt.SET_PARKED, (position, next_step, started_at, step, at, row)


def parked_parts(params: tuple[Any, ...]) -> list[Op]:
    """The three updates a `SET_PARKED` row stands for, in order."""
    position, next_step, started_at, step, at, row = params
    return [
        (Stmt.SET_PROGRESS, (position, next_step, started_at, at, row)),
        set_status(row, RunStatus.PAUSED, at),
        set_paused_in(row, step),
    ]


# A timeline entry's data as compact JSON (`json.dumps` with options builds one per call).
_DATA = json.JSONEncoder(separators=(",", ":"), default=repr)
# Its C core (`JSONEncoder.encode` reaches it through two Python calls; not in typeshed).
_MAKE_ENCODER: Callable[..., Callable[[object, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)


def _data_text(data: dict[str, Any]) -> str:
    """`data` as `_DATA` encodes it (cycles refused: `markers` is a fresh dict)."""
    if _MAKE_ENCODER is None:  # an interpreter without the C accelerator
        return _DATA.encode(data)
    chunks = _MAKE_ENCODER(
        {}, repr, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
    return "".join(chunks(data, 0))


def conditions_text(conditions: list[list[Any]]) -> str:
    """A wait's conditions (`Conditions.to_json`) as journaled: what `json.dumps` writes."""
    if _MAKE_ENCODER is None:
        return json.dumps(conditions)
    chunks = _MAKE_ENCODER(
        {},
        _PLAIN.default,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
    return "".join(chunks(conditions, 0))


_PLAIN = json.JSONEncoder()


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
    text = None if data is None else _data_text(data)
    return Stmt.ADD_TIMELINE, (row, position, at, source, kind, step, valid_text(message), text)


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


def outbox_invoke(
    run_id: str,
    workflow_id: str,
    trigger_id: str,
    payload: str,
    at: int,
    *,
    key: str | None = None,
) -> list[Op]:
    """A step's ``ctx.start``: an invoke command for the inbox (once per `key`, if any)."""
    claim = [] if key is None else [(Stmt.CLAIM_KEY, ("invoke", key, run_id, at))]
    return [*claim, (Stmt.OUTBOX_INVOKE, (run_id, workflow_id, trigger_id, payload, at, key))]


def outbox_event(
    event_id: str, type_: str, data: str, at: int, *, key: str | None = None
) -> list[Op]:
    """A step's ``ctx.emit``: an unrouted event for the inbox (once per `key`, if any)."""
    claim = [] if key is None else [(Stmt.CLAIM_KEY, ("emit", key, event_id, at))]
    source = EventSource.RUN.value
    return [*claim, (Stmt.OUTBOX_EVENT, (event_id, type_, data, source, at, key))]


def add_child(child: str, parent: str, at: int, n: int, *, key: str | None = None) -> Op:
    """Run `child` was started by a step of run `parent` (the `n`-th start of that step)."""
    return Stmt.ADD_CHILD, (child, parent, at, n, key)


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
    joins: str | None = None,
) -> Op:
    """A wait: registered through the pause service (``armed``) or parked on at once.

    `joins`: a join's run ids as a JSON list (None for other waits).
    """
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
        joins,
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


def schedule_next(workflow_id: str, trigger_id: str, tick: int | None) -> Op:
    """A schedule's next tick as armed now (None: not armed, e.g. while disabled)."""
    return Stmt.SCHEDULE_NEXT, (tick, workflow_id, trigger_id)


def set_switch(workflow_id: str, trigger_id: str | None, enabled: bool, at: int) -> Op:
    """A workflow (`trigger_id` None) or one trigger of it was disabled or enabled at `at`."""
    return Stmt.SET_SWITCH, (workflow_id, trigger_id or "", int(enabled), at)


def inbox_done(command: int, outcome: str, at: int) -> Op:
    """A command from another process was applied (or refused, with why)."""
    return Stmt.INBOX_DONE, (at, outcome, command)


MAX_TEXT = 64 * 1024  # characters of one free-text field (a log line, an error) journaled


def valid_text(text: str | None) -> str | None:
    """`text` as valid Unicode and at most `MAX_TEXT` characters (cut, saying how much).

    Free text comes from user code (a log line, an exception's message, a hook's failure);
    one invalid or huge string must not fail, or bloat, its whole batch.
    """
    if text is None:
        return None
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}... ({len(text) - MAX_TEXT:,} more characters cut)"
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


MAX_KEY = 256  # characters of an idempotency key: it names a request, it carries no data
KEY_KINDS = ("emit", "invoke")


def checked_key(key: object) -> str:
    """`key` if it is a usable idempotency key: non-empty, bounded, valid Unicode, no NUL.

    Raises:
        ValidationError: It is not.
    """
    if not isinstance(key, str) or not key:
        raise ValidationError(f"an idempotency key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY:
        raise ValidationError(
            f"an idempotency key is at most {MAX_KEY} characters, got {len(key):,}"
        )
    if not key.isascii() and valid_text(key) != key:
        raise ValidationError(f"an idempotency key must be valid Unicode, got {key!r}")
    if "\x00" in key:  # PostgreSQL text cannot hold it: one key on every backend
        raise ValidationError(f"an idempotency key must not contain a NUL character, got {key!r}")
    return key

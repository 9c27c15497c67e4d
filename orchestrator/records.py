"""What the journal tells about runs: frozen records shared by the runtime, CLI and dashboard.

The run vocabulary lives here too: `RunStatus` and `RunCode`, string enums whose values are
what the journal stores and the CLI prints. Plain data with no I/O, so the dashboard can read
runs without importing the runtime.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_ID_LENGTH = 200
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def is_valid_id(value: object) -> bool:
    """Whether `value` can name a workflow or a trigger: letters, digits, ``_ . -``.

    It starts with a letter or digit and has at most `MAX_ID_LENGTH` characters.
    """
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and bool(_ID.fullmatch(value))


def id_problem(value: object, what: str) -> str | None:
    """Why `value` cannot be a `what` id (a message saying how to fix it); None if it can."""
    if is_valid_id(value):
        return None
    shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
    return (
        f"{what} id {shown} is invalid: use letters, digits, '_', '.', '-' (starting with a "
        f"letter or digit, at most {MAX_ID_LENGTH} characters)"
    )


MAX_EVENT_TYPE = 1024  # characters: an event type names a kind of event, not its data


def event_type_problem(value: object) -> str | None:
    """Why `value` cannot be an event type (a message saying how to fix it); None if it can."""
    if not isinstance(value, str) or not value.strip():
        return f"an event type must be a non-empty string, got {value!r}"
    if len(value) > MAX_EVENT_TYPE:
        return f"an event type is at most {MAX_EVENT_TYPE} characters, got {len(value):,}"
    if "\x00" in value:
        return (
            "an event type must not hold a NUL character (a journal cannot key on it),"
            f" got {value!r}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"an event type must be valid Unicode (no lone surrogates), got {value!r}"
    return None


class RunStatus(enum.StrEnum):
    """Where a run stands. The journal, the CLI and JSON hold its value (``"queued"``, ...)."""

    QUEUED = "queued"
    """Waiting for a slot under its workflow's mode."""
    RUNNING = "running"
    """Executing its steps (or about to)."""
    PAUSED = "paused"
    """Parked until an event, a resume, a timeout or the end of a sleep."""
    COMPLETED = "completed"
    """Every step ran."""
    FAILED = "failed"
    """A step failed, or the run could not go on; its `RunCode` says why."""
    ABORTED = "aborted"
    """Ended by `abort` (or by a newer run that replaced it)."""
    DROPPED = "dropped"
    """Refused by its mode while the workflow was busy, or superseded in its queue."""
    REJECTED = "rejected"
    """Refused by an ``Exclusive(on_busy="reject")`` workflow that was busy."""


STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
FINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.ABORTED,
        RunStatus.DROPPED,
        RunStatus.REJECTED,
    }
)


class EventSource(enum.StrEnum):
    """Where an event came from; journaled with it, and a `Trigger` may filter on it."""

    API = "api"
    """`Runtime.emit` in the process that holds the journal."""
    CLI = "cli"
    """`orchestrator emit` (or another process writing through the journal's commands)."""
    DASHBOARD = "dashboard"
    """The dashboard's emit action."""
    FILE = "file"
    """A `FileTrigger` folder's watch: ``file.created``."""
    SCHEDULE = "schedule"
    """A schedule's tick."""
    SYSTEM = "system"
    """The runtime itself."""
    RUN = "run"
    """``ctx.emit`` in a step of a run (journaled with the step's checkpoint)."""


class RunCode(enum.StrEnum):
    """The stable code of a run's error (``error_code``): why it ended, or why it waits."""

    STEP_FAILED = "STEP_FAILED"
    """A step raised, on its last attempt."""
    STEP_TIMEOUT = "STEP_TIMEOUT"
    """A step overran its timeout, on its last attempt."""
    STEP_CRASHED = "STEP_CRASHED"
    """The worker process of an isolated step died (an exit, a signal, its memory limit)."""
    INVALID_STATE = "INVALID_STATE"
    """The run's input, or what a step returned, is not a JSON object the journal can hold."""
    PAUSE_TIMEOUT = "PAUSE_TIMEOUT"
    """A pause with ``on_timeout="fail"`` timed out."""
    ABORTED = "ABORTED"
    """Aborted by request."""
    REPLACED = "REPLACED"
    """Aborted, replaced by a newer run (``SingletonLoop(on_busy="replace")``)."""
    DROPPED = "DROPPED"
    """Dropped by its mode: the workflow was busy."""
    REJECTED = "REJECTED"
    """Rejected by its mode: the workflow was busy."""
    DISABLED = "DISABLED"
    """Refused: its workflow or trigger was disabled when the daemon applied its invoke."""
    SUPERSEDED = "SUPERSEDED"
    """Dropped from its queue by a newer run (``Exclusive(on_busy="queue_single")``)."""
    WORKFLOW_MISSING = "WORKFLOW_MISSING"
    """Not final: it waits for its workflow, which is not loaded."""
    STEP_MISSING = "STEP_MISSING"
    """Not final: it waits for its next step, which its workflow no longer has."""
    NOT_INVOCABLE = "NOT_INVOCABLE"
    """Queued by ``orchestrator invoke`` while no daemon ran, it names a workflow or trigger
    the daemon that applied it does not have (its error says which)."""
    CRASH_LOOP = "CRASH_LOOP"
    """Its process died in the same step more often than ``Runtime(max_recoveries=...)``
    allows; start-up recovery failed it instead of starting that step again."""


def is_ok(status: RunStatus) -> bool:
    """Whether a run in `status` has not failed: it completed, or it waits (paused)."""
    return status in (RunStatus.COMPLETED, RunStatus.PAUSED)


@dataclass(frozen=True)
class RunInfo:
    """A run as the journal has it.

    Attributes:
        run_id: The run's id.
        workflow_id: The workflow it belongs to.
        trigger_id: The trigger (pipeline) that started it.
        status: Where it stands.
        step: The current or next step's name; for a paused run, the step it waits in
            (the one that paused it). ``None`` once it has finished.
        state: The state at its last committed checkpoint.
        error: Why it failed, or why it cannot continue.
        version: The workflow version it runs on (it started on it, or moved to the current
            one at a recovery or a retry).
        created_at: When it was created (UTC).
        updated_at: When it last changed (UTC).
        error_code: The stable code of `error`, if any.
        forked_from: For a run made by `fork`, ``{"run_id", "step"}``: the run it was
            forked from and the step it started at; None for every other run.
        parent: For a run a step started (`ctx.start`), that step's run id; else None.
    """

    run_id: str
    workflow_id: str
    trigger_id: str
    status: RunStatus
    step: str | None
    state: dict[str, Any]
    error: str | None
    version: str
    created_at: datetime
    updated_at: datetime
    error_code: RunCode | None = None
    forked_from: dict[str, str] | None = None
    parent: str | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended up when `invoke` (or `wait`) returned.

    Attributes:
        ok: True when the run completed or paused (it did not fail).
        status: The run's status.
        run_id: The run's id.
        state: Its state at that point.
        error: The error message when it failed, was aborted, dropped or rejected.
        error_code: The error's stable code.
    """

    ok: bool
    status: RunStatus
    run_id: str
    state: dict[str, Any]
    error: str | None = None
    error_code: RunCode | None = None


@dataclass(frozen=True)
class TimelineEntry:
    """One thing a run did, in order.

    Attributes:
        at: When (UTC).
        source: Who recorded it: ``runtime``, ``logger``, ``event``, ...
        kind: What: ``run.started``, ``step.completed``, ``info``, ...
        message: A human-readable line, if any.
        data: Structured details, if any.
        step: The step it belongs to, if any.
    """

    at: datetime
    source: str
    kind: str
    message: str | None = None
    data: dict[str, Any] | None = None
    step: str | None = None


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A committed state of a run, in order (position 0 is its input).

    `kind` is ``step`` (a step's result), ``resume`` (the state a resume or a consumed
    event produced) or ``signal`` (a signal's patch merged in).
    """

    position: int
    step: str | None
    started_at: datetime
    ended_at: datetime
    state: dict[str, Any] = field(repr=False)
    kind: str = "step"


SYSTEM_EVENTS: dict[str, str] = {
    RunStatus.COMPLETED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.ABORTED: "run.aborted",
}
"""The system event of each final status that has one (dropped and rejected runs never ran)."""


def system_event_data(
    run_id: str,
    workflow_id: str,
    trigger_id: str,
    status: str,
    error: str | None,
    code: str | None,
) -> dict[str, Any]:
    """The data of the system event that tells a run ended (source ``system``)."""
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "trigger_id": trigger_id,
        "status": str(status),
        "error": error,
        "error_code": None if code is None else str(code),
    }

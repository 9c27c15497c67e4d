"""What the journal tells about runs: frozen records shared by the runtime, CLI and dashboard.

Plain data with no I/O, so the dashboard can read runs without importing the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

RunStatus = Literal[
    "queued", "running", "paused", "completed", "failed", "aborted", "dropped", "rejected"
]
STATUSES: tuple[str, ...] = (
    "queued",
    "running",
    "paused",
    "completed",
    "failed",
    "aborted",
    "dropped",
    "rejected",
)
FINAL_STATUSES = frozenset({"completed", "failed", "aborted", "dropped", "rejected"})


def is_ok(status: str) -> bool:
    """Whether a run in `status` has not failed: it completed, or it waits (paused)."""
    return status in ("completed", "paused")


@dataclass(frozen=True)
class RunInfo:
    """A run as the journal has it.

    Attributes:
        run_id: The run's id.
        workflow_id: The workflow it belongs to.
        trigger_id: The trigger (pipeline) that started it.
        status: One of `STATUSES`.
        step: The next or current step's name (``None`` once it has finished).
        state: The state at its last committed checkpoint.
        error: Why it failed, or why it cannot continue.
        version: The workflow version it started on.
        created_at: When it was created (UTC).
        updated_at: When it last changed (UTC).
        error_code: The stable code of `error`, if any.
    """

    run_id: str
    workflow_id: str
    trigger_id: str
    status: str
    step: str | None
    state: dict[str, Any]
    error: str | None
    version: str
    created_at: datetime
    updated_at: datetime
    error_code: str | None = None


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
    status: str
    run_id: str
    state: dict[str, Any]
    error: str | None = None
    error_code: str | None = None


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


@dataclass(frozen=True)
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

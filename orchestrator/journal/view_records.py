"""What the dashboard's views return, and how it asks for runs: the same for every backend.

Each backend's views decode damaged rows defensively into these records: a JSON value that
does not parse comes back as its text, a timestamp that is not a number as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ..records import Checkpoint, RunCode, RunStatus, TimelineEntry

SORTS: Final = ("newest", "oldest", "workflow", "status")
"""How the run list can be ordered, by name (each backend says how in its own terms)."""


@dataclass(frozen=True)
class RunFilter:
    """Which runs the list shows, and in what order.

    Attributes:
        status: Only runs in this status, or all.
        workflow: Only runs of this workflow, or all.
        search: Text the run id starts with, or found in the workflow, trigger, error or
            error code (ASCII case-insensitive).
        sort: A key of `SORTS`.
    """

    status: RunStatus | None = None
    workflow: str | None = None
    search: str = ""
    sort: str = "newest"


@dataclass(frozen=True)
class LoadErrorView:
    """A file that failed to load: where, why, and when (None if the time is unreadable)."""

    file: str
    line: int | None
    message: str
    at: datetime | None


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """A run as the list shows it (no state: that is the detail's).

    `status` and `error_code` are the enums, or the journaled text when it is not one of
    their values (a row written by another version, or damaged).
    """

    run_id: str
    workflow_id: str
    trigger_id: str
    status: RunStatus | str
    step: str | None
    error: str | None
    error_code: RunCode | str | None
    version: str
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class RunPage:
    """One page of the run list and how many runs match in all."""

    rows: list[RunRow]
    total: int
    offset: int


@dataclass(frozen=True, kw_only=True)
class EventView:
    """An event, what it did to runs, and its data (any JSON value if damaged)."""

    event_id: str
    type: str
    data: Any
    source: str
    created_at: datetime | None
    routed_at: datetime | None
    routes: list[RouteView] = field(default_factory=list)


@dataclass(frozen=True)
class RouteView:
    """What one event did to one run: ``started``, ``resumed``, ``buffered``, ``signalled``."""

    run_id: str
    workflow_id: str
    action: str


@dataclass(frozen=True, kw_only=True)
class WaitView:
    """A live wait of a run and the latest events of its type since it was registered.

    `conditions` is the journaled ``[[path, op, operand], ...]`` (whatever it decodes to);
    `event_type` is ``None`` for a sleep.
    """

    wait_id: int
    event_type: str | None
    conditions: Any
    status: str
    into: str | None
    timeout_at: datetime | None
    on_timeout: str
    created_at: datetime | None
    buffered: int
    recent: list[EventView]


@dataclass(frozen=True)
class RunDetail:
    """Everything the run screen shows about one run."""

    run: RunRow
    timeline: list[TimelineEntry]
    checkpoints: list[Checkpoint]
    waits: list[WaitView]
    # A forked run's ``{"run_id", "step"}``: where it comes from; None for other runs.
    forked_from: dict[str, str] | None = None
    # The step names of its pipeline (on the version registered now, else its own): where
    # a fork of it may start. Empty when the journal does not know them.
    steps: list[str] = field(default_factory=list)
    # The run whose step started it (`ctx.start`), if any.
    parent: str | None = None
    # Its children (the first `CHILDREN_SHOWN`, in the order started), and how many it has
    # by status (``"not started"``: the start is journaled, its run not made yet).
    children: list[RunRow] = field(default_factory=list)
    children_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def children_total(self) -> int:
        """How many children it started."""
        return sum(self.children_by_status.values())


CHILDREN_SHOWN = 500  # children a run's detail lists; the rest are counted


@dataclass(frozen=True, kw_only=True)
class WorkflowView:
    """A workflow registered now; `triggers` is whatever the journaled JSON decodes to."""

    workflow_id: str
    version: str
    file: str | None
    triggers: Any
    mode: str
    loaded_at: datetime | None
    # Since when the whole workflow is disabled; None while it is enabled.
    disabled_at: datetime | None = None
    # The ids of its triggers disabled one by one.
    disabled_triggers: frozenset[str] = frozenset()


FIGURES_CAP: Final = 10_000
"""Runs counted per workflow at most (a count above it is shown as ``10,000+``)."""
FIGURES_RECENT: Final = 100
"""How many of a workflow's latest completed runs its p95 duration is taken from."""


@dataclass(frozen=True, kw_only=True)
class WorkflowFigures:
    """What a loaded workflow did lately: each figure a bounded read of the journal.

    Attributes:
        runs: Runs created since the window's start, at most `FIGURES_CAP` + 1 counted.
        failed: Those of them that failed, counted the same way.
        durations: How long its latest completed runs took, in seconds (at most
            `FIGURES_RECENT`, newest first).
        next_fire: The earliest next tick of its schedules (None: it has none armed).
    """

    workflow_id: str
    runs: int
    failed: int
    durations: tuple[float, ...]
    next_fire: datetime | None

    @property
    def p95(self) -> float | None:
        """The 95th percentile of `durations` (nearest rank), None without any."""
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]

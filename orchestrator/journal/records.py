"""What a journal returns to the engine and the CLI: plain records, the same for every backend.

Each is a frozen dataclass of plain values (ids, JSON already decoded, timestamps in
microseconds), so nothing here knows how a backend stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..records import RunStatus, TimelineEntry


@dataclass(frozen=True)
class Opened:
    """What the writer learned when it opened the journal under its lease."""

    max_run_row: int


@dataclass(frozen=True, kw_only=True)
class UnfinishedRun:
    """A run that was not final when its journal was last closed (or its process died)."""

    row: int
    run_id: str
    workflow_id: str
    trigger_id: str
    version: str
    status: RunStatus
    position: int
    step: str | None
    state: str
    created_at: int
    # How often start-up recovery already continued this run at `step` (the crash-loop guard).
    recoveries: int = 0


@dataclass(frozen=True, kw_only=True)
class StoredRun(UnfinishedRun):
    """A run as the journal has it, whatever its status: where a retry continues from.

    `state` is that of its last checkpoint; `error`, `error_code` and `updated_at` say how
    it ended, if it did.
    """

    error: str | None = None
    error_code: str | None = None
    updated_at: int = 0


@dataclass(frozen=True)
class StoredCheckpoint:
    """One checkpoint of a run as journaled: where a fork finds the state before a step.

    `step` names the step whose result it is, None for the input and for patches (resume,
    signal, retry).
    """

    position: int
    step: str | None
    state: str


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """Where one run of a join stands: ``{"run_id", "status", "state", "error", "error_code"}``."""

    run_id: str
    status: RunStatus
    state: dict[str, Any]
    error: str | None
    error_code: str | None

    def to_json(self) -> dict[str, Any]:
        """As a join puts it in the joining run's state."""
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "state": self.state,
            "error": self.error,
            "error_code": self.error_code,
        }


@dataclass(frozen=True, kw_only=True)
class WaitRecord:
    """An armed or parked wait as journaled, with the events buffered for it."""

    id: int
    row: int
    run_id: str
    event_type: str | None
    conditions: list[list[Any]]
    persistent: bool
    status: str
    into: str | None
    timeout_at: int | None
    on_timeout: str
    buffer: list[tuple[int, str, dict[str, Any]]]
    joins: list[str] | None = None


class DormantWait(NamedTuple):
    """A paused run parked on a plain event wait, as one row (start-up re-arms it lazily).

    Plain: its run's only live wait, on an event type, with no timeout and no join; its
    conditions still as journaled JSON text. `dormant_waits` returns these fields as plain
    tuples (`DormantRow`), and the engine keeps them so: the garbage collector stops
    tracking a plain tuple of scalars, never a NamedTuple, and a restart with 100,000
    paused runs keeps 100,000 of them. ``DormantWait._make(row)`` names a row's fields.
    """

    wait_id: int
    row: int
    run_id: str
    workflow_id: str
    trigger_id: str
    version: str
    position: int
    step: str | None
    state: str
    event_type: str
    conditions: str
    persistent: bool
    into: str | None
    on_timeout: str


# `DormantWait`'s fields, in its order, as a plain tuple.
DormantRow = tuple[
    int, int, str, str, str, str, int, str | None, str, str, str, bool, str | None, str
]


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """An event written by another process and not routed yet."""

    id: int
    event_id: str
    type: str
    data: dict[str, Any]
    source: str
    created_at: int = 0
    # Why its data cannot be routed (a row no process should have written), or None.
    problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class CommandRecord:
    """A command from another process (the CLI, the dashboard) not applied yet."""

    id: int
    command: str
    run_id: str | None
    workflow_id: str | None
    trigger_id: str | None
    payload: Any
    created_at: int = 0
    # Why its payload cannot be read (a row no process should have written), or None.
    problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowRecord:
    """A workflow registered now by the process holding the lease."""

    workflow_id: str
    version: str
    file: str | None
    triggers: list[dict[str, Any]]
    mode: str
    loaded_at: int
    # Since when (µs) the whole workflow is disabled; None while it is enabled.
    disabled_at: int | None = None
    # Trigger id -> since when that one trigger is disabled.
    disabled_triggers: dict[str, int] = field(default_factory=dict)
    # Schedule trigger id -> its next tick (µs) as the daemon armed it (none while disabled).
    next_ticks: dict[str, int] = field(default_factory=dict)

    def enabled(self, trigger_id: str | None = None) -> bool:
        """Whether the workflow (and, given one, that trigger of it) is enabled."""
        return self.disabled_at is None and trigger_id not in self.disabled_triggers


@dataclass(frozen=True, kw_only=True)
class SwitchRecord:
    """A disable or enable the daemon applied, to a workflow (`trigger_id` None) or a trigger."""

    workflow_id: str
    trigger_id: str | None
    enabled: bool
    changed_at: int


@dataclass(frozen=True)
class LoadErrorRecord:
    """A workflow file that failed to load, with where and why."""

    file: str
    line: int | None
    message: str
    at: int


@dataclass(frozen=True)
class DaemonRecord:
    """The live process holding the journal's lease."""

    pid: int
    host: str
    started_at: int
    ready: bool
    # Why its journal writes are failing (it keeps retrying them), or None while they work.
    degraded: str | None = None


@dataclass(frozen=True)
class StandbyRecord:
    """A daemon standing by to take the journal over (a PostgreSQL journal's)."""

    pid: int
    host: str
    started_at: int  # when it started standing by
    running: int = 0  # steps of the active daemon it runs now (claimed, not answered yet)


@dataclass(frozen=True, slots=True)
class WriterIdentity:
    """Who a writer is on a journal several daemons share: its token, its daemon row, epoch."""

    token: str  # its `standbys` row while it stands by, its daemon row's once registered
    daemon_id: int  # 0 until it registered as the active daemon
    epoch: int


@dataclass(frozen=True)
class CommandOutcome:
    """What became of a command: ``None`` while it is pending, else "ok" or the error."""

    id: int
    outcome: str | None


@dataclass(frozen=True)
class RunMatch:
    """A run whose id starts with a prefix the user typed: enough to tell it apart."""

    run_id: str
    workflow_id: str
    status: str


@dataclass(frozen=True)
class RunMatches:
    """The runs whose id starts with a prefix: the first few, by id, and how many in all."""

    runs: tuple[RunMatch, ...]
    total: int


@dataclass(frozen=True)
class LogEntry:
    """One journaled timeline row as `logs` prints it: its row id orders and resumes reads."""

    id: int
    run_id: str | None
    entry: TimelineEntry
    workflow_id: str | None = None
    """The run's workflow (None for a row of no run)."""


@dataclass(frozen=True, kw_only=True)
class EventRoute:
    """What routing one event did to one run (a row of the event's routes).

    `action` is ``started``, ``queued``, ``dropped``, ``rejected`` or ``signalled`` for a
    trigger's dispatch (`trigger_id` is that trigger), ``resumed`` or ``buffered`` for a
    waiting run (`trigger_id` is the run's).
    """

    action: str
    run_id: str
    workflow_id: str
    trigger_id: str


@dataclass(frozen=True, kw_only=True)
class EventRouting:
    """One event as the journal has it: whether the daemon has routed it, and what that did.

    Routes commit in the same transaction as the event's routed mark: once `routed`,
    `routes` is complete (empty: nothing took it).
    """

    event_id: str
    event_type: str
    routed: bool
    routes: list[EventRoute]


@dataclass(frozen=True, kw_only=True)
class EventListeners:
    """The event types the loaded workflows' triggers and the waiting runs listen to.

    Attributes:
        triggers: Event type -> the ``workflow/trigger`` names of the enabled triggers on
            it, as the daemon last registered them (kept while no daemon runs).
        disabled: Event type -> the disabled ones (a workflow's or a trigger's switch).
        waits: Event type -> how many runs wait for it (paused on it, or registered early).
    """

    triggers: dict[str, list[str]] = field(default_factory=dict)
    disabled: dict[str, list[str]] = field(default_factory=dict)
    waits: dict[str, int] = field(default_factory=dict)

    def types(self) -> set[str]:
        """Every event type something listens to (a disabled trigger's too)."""
        return {*self.triggers, *self.disabled, *self.waits}


@dataclass(frozen=True, slots=True)
class StepOffer:
    """An isolated step the active daemon offers to its standbys (a `StepJobs` row to be).

    Nothing secret: no env, no file text. A standby finds the step's file by `digest` in
    its own copy of the folder and builds the env itself.
    """

    run_id: str
    digest: str  # the version hash of the step's workflow file
    request: dict[str, Any]  # the worker request's header (engine/workers/wire.py)
    state: str  # the state the step starts from, as JSON text


@dataclass(frozen=True, slots=True)
class StepJob:
    """An offered step a standby claimed: run it, then reply with the same `attempts`."""

    id: int
    run_id: str
    digest: str
    request: dict[str, Any]
    state: str
    attempts: int  # how many times the daemons serving it stopped before this claim


@dataclass(frozen=True, slots=True)
class StepReply:
    """What a standby answered for the step job `id` (or ``{"crashed": ...}``)."""

    id: int
    reply: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunTaskOffer:
    """A segment of a run the coordinator offers to an executor (a `RunTasks` row to be).

    `request` (the trigger, the step index, the position, attempt details...) is opaque to
    the journal; `state` is the run's state as JSON text. No env, no file text.
    """

    run_row: int  # the run's `runs.id`
    run_id: str
    digest: str  # the version hash of the run's workflow file
    request: dict[str, Any]
    state: str


@dataclass(frozen=True, slots=True)
class RunTask:
    """An offered segment an executor claimed: execute it, reply with the same `attempts`."""

    id: int
    run_row: int
    run_id: str
    digest: str
    request: dict[str, Any]
    state: str
    patches: dict[str, Any]  # signals merged for it before this claim (taken with it)
    attempts: int  # how many times the executors running it were judged gone before


@dataclass(frozen=True, slots=True)
class RunTaskAnswer:
    """An executor's reply to its claim (`attempts`) of the run task `id`, to be written."""

    id: int
    attempts: int
    reply: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunTaskReply:
    """What an executor answered for the run task `id` (or ``{"crashed": ...}``)."""

    id: int
    reply: dict[str, Any]

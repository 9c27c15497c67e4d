"""Start-up recovery: runs that were not final when the journal was last open.

Runs left ``running`` wait, by workflow, until their workflow is registered; then each
continues from its last committed checkpoint. On the version it started on the next step
is found by position; on another version, by the next step's name, and a run whose next
step no longer exists keeps its status with the reason in its ``error`` field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..define.conditions import Conditions
from ..define.waits import BufferedEvent, Wait
from ..errors import TriggerNotFound
from ..journal import UnfinishedRun, WaitRecord
from ..records import RunStatus
from .parking import ParkedRun
from .registry import RegisteredWorkflow


@dataclass(frozen=True, kw_only=True)
class Resumable:
    """A run that continues from its last checkpoint once its workflow is registered.

    Found unfinished in the journal at start-up, or a parked run woken while its workflow
    is not loaded (then it is ``running``: its resume is committed).

    Attributes:
        recoveries: How often start-up recovery already continued the run at `step`; None
            for a woken run, whose step was never interrupted.
    """

    row: int
    run_id: str
    workflow_id: str
    trigger_id: str
    version: str
    status: RunStatus
    position: int
    step: str | None
    state: str
    recoveries: int | None = None

    @classmethod
    def from_journal(cls, run: UnfinishedRun) -> Resumable:
        """A run the journal has as not final (every field is the record's, by name)."""
        return cls(**{field.name: getattr(run, field.name) for field in fields(cls)})

    @classmethod
    def woken(cls, parked: ParkedRun) -> Resumable:
        """A parked run whose resume is committed: it runs its next step."""
        return cls(
            row=parked.row,
            run_id=parked.run_id,
            workflow_id=parked.workflow_id,
            trigger_id=parked.trigger_id,
            version=parked.version,
            status=RunStatus.RUNNING,
            position=parked.position,
            step=parked.next_step,
            state=parked.state_text,
        )


@dataclass(frozen=True)
class Resumption:
    """Where a recovered run continues, or why it cannot."""

    step_index: int | None
    problem: str | None = None


def plan(run: Resumable, workflow: RegisteredWorkflow) -> Resumption:
    """Find the step at which `run` continues on `workflow`'s current version."""
    try:
        steps = workflow.steps(run.trigger_id)
    except TriggerNotFound:
        return Resumption(
            None,
            f"trigger {run.trigger_id!r} no longer exists in workflow "
            f"{workflow.id!r} (version {workflow.version})",
        )
    names = [step.name for step in steps]
    if run.step is None:
        return Resumption(len(steps))
    if (
        run.version == workflow.version
        and run.position < len(steps)
        and names[run.position] == run.step
    ):
        return Resumption(run.position)
    if run.step in names:
        return Resumption(names.index(run.step))
    return Resumption(
        None,
        f"step {run.step!r} no longer exists in workflow {workflow.id!r} "
        f"(version {workflow.version}); the run waits for it to return",
    )


def crash_loop(run: Resumable, step: str, max_recoveries: int | None) -> str | None:
    """Why `run` must not start `step` again (its process keeps dying there), or None.

    A run found ``running`` at `step` was executing it when its process died: the step has
    started ``run.recoveries + 1`` times, and each recovery starts it once more.
    """
    if max_recoveries is None or run.recoveries is None or run.recoveries < max_recoveries:
        return None
    starts = run.recoveries + 1
    return (
        f"crash loop: the process died {starts} times while step {step!r} ran (it started "
        f"{starts} times; max_recoveries={max_recoveries}); it is not started again"
    )


def wait_from(record: WaitRecord) -> Wait:
    """A journaled wait, re-armed in memory with its buffered events."""
    label = f"wait {record.id} of run {record.run_id}"
    return Wait(
        id=record.id,
        row=record.row,
        run_id=record.run_id,
        event_type=record.event_type,
        conditions=Conditions.from_json(record.conditions, label=label),
        persistent=record.persistent,
        status="parked" if record.status == "parked" else "armed",
        into=record.into,
        timeout_at=record.timeout_at,
        on_timeout="fail" if record.on_timeout == "fail" else "continue",
        buffer=[BufferedEvent(seq, event_id, data) for seq, event_id, data in record.buffer],
        journaled=True,
        joins=None if record.joins is None else tuple(record.joins),
    )


def parked_from(run: UnfinishedRun, wait: Wait) -> ParkedRun:
    """A run found paused in the journal; it is not pinned to any version in memory."""
    return ParkedRun.found(run, wait)

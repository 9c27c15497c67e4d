"""Retry and fork: where a run starts again, and with what state.

A retry continues a failed or aborted run under its own id at the step it stopped at, on
its workflow's current version (found by step name, as after a restart), from its last
checkpoint with the patch merged. A fork is a new run of the same workflow and trigger
that starts at a chosen step with the state its source run had before that step.

Pure planning over journal records: what to run and what to journal. `Control` reads the
records and admits the runs (`engine/control.py`); nothing here awaits or writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

from ..errors import StepNotFound, WorkflowNotFound
from ..journal import StoredCheckpoint, StoredRun, ops
from ..state import decode_state, encode_state
from .executor import ActiveRun
from .recovery import Resumable, plan
from .registry import RegisteredWorkflow


def retried(
    stored: StoredRun, registered: RegisteredWorkflow | None, patch: dict[str, Any]
) -> ActiveRun:
    """The run `stored` made active again at the step it stopped at (not started).

    Its state is its last checkpoint's with `patch` merged; with a patch, that state is
    the next checkpoint (written by `retry_writes`).

    Raises:
        WorkflowNotFound: Its workflow is not registered now.
        TriggerNotFound: The workflow's current version has no longer its trigger.
        StepNotFound: The step it stopped at is gone from the current version.
    """
    if registered is None:
        raise WorkflowNotFound(
            f"workflow {stored.workflow_id!r} of run {stored.run_id} is not loaded (its file "
            "is gone or fails to load); fix its file, then retry the run"
        )
    steps = registered.steps(stored.trigger_id)
    resumption = plan(Resumable.from_journal(stored), registered)
    if resumption.step_index is None:
        names = [step.name for step in steps]
        raise StepNotFound(
            f"run {stored.run_id} stopped at step {stored.step!r}, which workflow "
            f"{registered.id!r} no longer has (version {registered.version}; its steps: "
            f"{', '.join(repr(name) for name in names) or 'none'}); fork the run from one "
            "of them instead"
        )
    position, state = stored.position, stored.state
    if patch:
        position, state = position + 1, encode_state({**decode_state(state), **patch})
    return ActiveRun(
        row=stored.row,
        run_id=stored.run_id,
        workflow=registered,
        trigger_id=stored.trigger_id,
        steps=steps,
        step_index=resumption.step_index,
        position=position,
        state_text=state,
        settled=asyncio.get_running_loop().create_future(),
    )


def retry_writes(
    stored: StoredRun, run: ActiveRun, patch: dict[str, Any], now: int
) -> list[ops.Op]:
    """What a retry journals before its run is admitted again (its status comes then).

    The attempt that ended keeps its end in the timeline (a ``run.failed`` or
    ``run.aborted`` row at the time it ended), then ``run.retried`` says where the run
    continues and on which version. The crash-loop count starts again.
    """
    version = run.workflow.version
    message = f"retried at step {run.next_step!r}" if run.next_step else "retried"
    if version != stored.version:
        message += f" on version {version} (it ran on {stored.version})"
    data = {
        "step": run.next_step,
        "previous_status": stored.status,
        "previous_error_code": stored.error_code,
        "from_version": stored.version,
        "to_version": version,
        "patched": sorted(patch),
    }
    ended = {"code": stored.error_code} if stored.error_code else None
    writes = [
        ops.add_timeline(
            run.row,
            stored.updated_at,
            "runtime",
            f"run.{stored.status}",
            message=stored.error,
            data=ended,
        ),
        ops.add_timeline(
            run.row,
            now,
            "runtime",
            "run.retried",
            position=run.position,
            step=run.next_step,
            message=message,
            data=data,
        ),
        ops.clear_recoveries(run.row),
    ]
    if patch:
        writes += ops.state_change(run.row, run.position, "retry", run.state_text, now)
    if version != stored.version:
        writes.append(ops.set_version(run.row, version))
    return writes


@dataclasses.dataclass(frozen=True)
class ForkPoint:
    """Where a fork starts: the step's index and name, and the state it starts with."""

    index: int
    step: str
    state: dict[str, Any]


def fork_point(
    stored: StoredRun,
    registered: RegisteredWorkflow | None,
    checkpoints: list[StoredCheckpoint],
    from_step: str | None,
    patch: dict[str, Any],
) -> ForkPoint:
    """The step a fork of `stored` starts at (default: the first) and its state.

    The state is the one checkpointed before that step ran in `stored` (its input for the
    first step), with `patch` merged.

    Raises:
        WorkflowNotFound: The workflow is not registered now.
        TriggerNotFound: Its current version no longer has the run's trigger.
        StepNotFound: The current version has no such step, or the run never reached it.
    """
    if registered is None:
        raise WorkflowNotFound(
            f"workflow {stored.workflow_id!r} of run {stored.run_id} is not loaded; "
            "a fork runs on its current version"
        )
    names = [step.name for step in registered.steps(stored.trigger_id)]
    step = names[0] if from_step is None else from_step
    if step not in names:
        raise StepNotFound.unknown(step, registered.id, stored.trigger_id, names)
    index = names.index(step)
    text = _state_before(stored, checkpoints, step) if index else checkpoints[0].state
    return ForkPoint(index, step, {**decode_state(text), **patch})


def _state_before(stored: StoredRun, checkpoints: list[StoredCheckpoint], step: str) -> str:
    """The state `stored` had before `step` ran: the checkpoint before that step's own."""
    for before, checkpoint in itertools.pairwise(checkpoints):
        if checkpoint.step == step:
            return before.state
    if stored.step == step:  # it stopped at this step (failed, aborted, or runs it now)
        return stored.state
    reached = [c.step for c in checkpoints if c.step is not None]
    if stored.step is not None:
        reached.append(stored.step)
    raise StepNotFound(
        f"run {stored.run_id} never reached step {step!r}; it has a state before: "
        f"{', '.join(repr(name) for name in reached) or 'its first step only'}"
    )

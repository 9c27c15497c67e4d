"""Admission: every dispatch passes its workflow's mode before it may run.

Triggers, `invoke`, schedules and commands all dispatch through here. The workflow's
`Gate` decides; this module journals the decision (queued, dropped, rejected, signalled,
replaced, superseded: each with the run that held the slot) and starts queued runs as
slots free up. Queued runs are ``queued`` rows, so queues survive a restart in order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..clock import Clock
from ..clock import new_id as make_id
from ..define.hooks import DispatchResult
from ..errors import RuntimeStopped
from ..journal import JournalWriter, ops
from ..records import RunResult
from ..state import decode_state
from .executor import ActiveRun
from .gate import Decision, Gate
from .parking import Parking
from .registry import RegisteredWorkflow
from .supervisor import Supervisor


@dataclass(frozen=True)
class Dispatched:
    """What one dispatch got.

    The decision, and the run it concerns (the holder's run for a signal), with a future
    that resolves when that run completes, pauses or is refused.
    """

    decision: Decision
    run_id: str
    row: int
    settled: asyncio.Future[RunResult]


class Admission:
    """The gates of the registered workflows and the runs waiting in their queues."""

    def __init__(
        self, writer: JournalWriter, clock: Clock, runs: Supervisor, parking: Parking
    ) -> None:
        self._writer, self._clock, self._runs, self._parking = writer, clock, runs, parking
        self._gates: dict[str, Gate] = {}
        self._stopping = False
        # Invariant: holds exactly the runs in some gate's `queue` or `resuming`.
        self.queued: dict[str, ActiveRun] = {}

    def gate(self, registered: RegisteredWorkflow) -> Gate:
        """The workflow's gate, under its current mode."""
        gate = self._gates.get(registered.id)
        if gate is None:
            gate = self._gates[registered.id] = Gate(registered.mode)
        gate.mode = registered.mode
        return gate

    def dispatch(
        self,
        registered: RegisteredWorkflow,
        trigger_id: str,
        data: Any,
        run_id: str | None = None,
    ) -> Dispatched:
        """Admit one dispatch under the workflow's mode. Never awaits."""
        with self._writer.together():
            dispatched = self._dispatch(registered, trigger_id, data, run_id)
        hook = registered.hooks.on_dispatch
        if hook is not None:
            result = DispatchResult(
                registered.id,
                trigger_id,
                dispatched.decision.action,
                dispatched.run_id,
                dispatched.decision.holder,
            )
            work = self._runs.hook(registered, dispatched.row, hook, result, name="on_dispatch")
            self._runs.background(work, name=f"on_dispatch-{dispatched.run_id}")
        return dispatched

    def _dispatch(
        self, registered: RegisteredWorkflow, trigger_id: str, data: Any, run_id: str | None
    ) -> Dispatched:
        steps = registered.steps(trigger_id)
        gate = self.gate(registered)
        new_id = run_id or make_id()
        decision = gate.dispatch(new_id)
        if decision.action == "signal" and decision.holder is not None:
            return self._signal(decision, data)
        status = {"start": "running", "replace": "running", "queue": "queued"}.get(
            decision.action, "dropped" if decision.action == "drop" else "rejected"
        )
        if decision.action == "replace" and decision.holder is not None:
            self._replace(decision.holder, new_id)
        run = self._runs.start_run(registered, trigger_id, steps, data, new_id, status=status)
        if decision.superseded is not None:
            self._supersede(decision.superseded, new_id)
        if status == "queued":
            self.queued[run.run_id] = run
        if decision.action != "start":
            self._record(run, decision)
        if status in ("dropped", "rejected"):
            run.settled.set_result(
                RunResult(
                    False,
                    status,
                    run.run_id,
                    decode_state(run.state_text),
                    _reason(decision),
                    status.upper(),
                )
            )
        return Dispatched(decision, run.run_id, run.row, run.settled)

    def stop(self) -> None:
        """The runtime stops: queued runs stay queued in the journal; their callers learn."""
        self._stopping = True  # slots freed from now on start nothing
        for run in self.queued.values():
            if not run.settled.done():
                run.settled.set_exception(
                    RuntimeStopped(
                        f"the runtime stopped while run {run.run_id} was queued; it stays queued "
                        "and runs when the journal is next opened"
                    )
                )
                run.settled.exception()

    def abort_queued(self, run_id: str) -> bool:
        """Take a queued run out of its queue (it is being aborted); False if not queued."""
        run = self.queued.pop(run_id, None)
        if run is None:
            return False
        gate = self._gates.get(run.workflow.id)
        if gate is not None:
            self._start(gate.ended(run_id))
        if not run.settled.done():
            run.settled.set_result(
                RunResult(
                    False,
                    "aborted",
                    run_id,
                    decode_state(run.state_text),
                    "aborted by request",
                    "ABORTED",
                )
            )
        return True

    def ended(self, workflow_id: str, run_id: str) -> None:
        """A run left its slot for good (completed, failed, aborted)."""
        gate = self._gates.get(workflow_id)
        if gate is not None:
            self._start(gate.ended(run_id))

    def paused(self, workflow_id: str, run_id: str) -> None:
        """A run paused (it keeps its slot except under `Transient`)."""
        gate = self._gates.get(workflow_id)
        if gate is not None:
            self._start(gate.paused_run(run_id))

    def resumed(self, run: ActiveRun) -> bool:
        """A paused run was resumed; False (and queued at the front) if it must wait."""
        gate = self._gates.get(run.workflow.id)
        if gate is None or gate.resumed(run.run_id):
            return True
        self.queued[run.run_id] = run
        return False

    def restore(
        self,
        registered: RegisteredWorkflow,
        queued: list[ActiveRun],
        running: list[str],
        paused: list[str],
    ) -> None:
        """Rebuild a workflow's gate from the journal after a restart (queue in order)."""
        gate = self.gate(registered)
        gate.running.update(running)
        gate.paused.update(paused)
        for run in queued:
            gate.queue.append(run.run_id)
            self.queued[run.run_id] = run
        self._start(gate.ended(""))

    def _start(self, run_ids: list[str]) -> None:
        if self._stopping:
            return
        for run_id in run_ids:
            run = self.queued.pop(run_id, None)
            if run is not None:
                self._runs.start_queued(run)

    def _signal(self, decision: Decision, data: Any) -> Dispatched:
        holder = decision.holder or ""
        patch = data if isinstance(data, dict) else {}
        parked = self._parking.paused.get(holder)
        settled: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        if parked is not None:
            self._writer.enqueue(self._parking.signal(parked, patch))
            state, status, row = parked.state_text, "paused", parked.row
        else:
            run = self._runs.active[holder]
            self._writer.enqueue(self._runs.signal_active(run, patch))
            state, status, row = run.state_text, "running", run.row
        settled.set_result(RunResult(True, status, holder, decode_state(state)))
        return Dispatched(decision, holder, row, settled)

    def _replace(self, holder: str, new_id: str) -> None:
        reason = f"replaced by run {new_id}"
        parked = self._parking.paused.get(holder)
        if parked is not None:
            self._writer.enqueue(
                self._parking.fail_parked(parked, reason, "REPLACED", status="aborted")
            )
            return
        run = self._runs.active.get(holder)
        if run is not None and not run.finishing:
            run.abort_requested, run.abort_reason = True, reason
            if run.task is not None:
                run.task.cancel()

    def _supersede(self, superseded: str, new_id: str) -> None:
        run = self.queued.pop(superseded, None)
        if run is None:
            return
        message = f"superseded by run {new_id} (latest wins)"
        now = self._clock.now_us()
        self._writer.enqueue(
            [
                ops.set_status(run.row, "dropped", now, error=message, code="SUPERSEDED"),
                ops.add_timeline(
                    run.row,
                    now,
                    "runtime",
                    "run.dropped",
                    message=message,
                    data={"superseded_by": new_id},
                ),
            ]
        )
        if not run.settled.done():
            run.settled.set_result(
                RunResult(
                    False,
                    "dropped",
                    run.run_id,
                    decode_state(run.state_text),
                    message,
                    "SUPERSEDED",
                )
            )

    def _record(self, run: ActiveRun, decision: Decision) -> None:
        now = self._clock.now_us()
        status = {"queue": "queued", "drop": "dropped", "reject": "rejected", "replace": "started"}[
            decision.action
        ]
        writes = [
            ops.add_timeline(
                run.row,
                now,
                "runtime",
                f"run.{status}",
                message=_reason(decision),
                data={"held_by": decision.holder, "mode": repr(run.workflow.mode)},
            )
        ]
        if decision.action in ("drop", "reject"):
            writes.append(
                ops.set_status(
                    run.row, f"{status}", now, error=_reason(decision), code=status.upper()
                )
            )
        self._writer.enqueue(writes)


def _reason(decision: Decision) -> str:
    held = f" (the slot is held by run {decision.holder})" if decision.holder else ""
    words = {
        "queue": "queued: the workflow is busy",
        "drop": "dropped: the workflow is busy",
        "reject": "rejected: the workflow is busy",
        "replace": "replaced the active run",
    }
    return words.get(decision.action, decision.action) + held

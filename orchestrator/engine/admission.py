"""Admission: every dispatch passes its workflow's mode before it may run.

Triggers, `invoke`, schedules and commands all dispatch through here. The workflow's
`Gate` decides; this module journals the decision (queued, dropped, rejected, signalled,
replaced, superseded: each with the run that held the slot) and starts queued runs as
slots free up. Queued runs are ``queued`` rows, so queues survive a restart in order.
What each decision journals is one table, `CONSEQUENCES`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..clock import Clock
from ..clock import new_id as make_id
from ..define.hooks import DispatchResult
from ..errors import RuntimeStopped, WorkflowBusy
from ..journal import JournalWriter, ops
from ..records import FINAL_STATUSES, RunCode, RunResult, RunStatus
from ..state import decode_state
from .executor import ActiveRun
from .gate import Action, Decision, Gate
from .parking import Parking
from .registry import RegisteredWorkflow

if TYPE_CHECKING:
    from ..define.hooks import Hook
    from ..define.model import BoundStep


@dataclass(frozen=True, kw_only=True)
class Consequence:
    """What admission journals for one `Action` of the gate, about the dispatched run.

    Attributes:
        status: The new run's status; None for a signal (no new run: the data goes to the
            run holding the slot).
        kind: The timeline entry recorded on the new run, if any (a plain start has none).
        code: The run code it ends with when the mode refuses it.
        route: What an event that dispatched it did, as its route records (``started``...).
        reason: The message of its timeline entry (and error), before who held the slot.
    """

    status: RunStatus | None
    kind: str | None
    code: RunCode | None
    route: str
    reason: str | None


CONSEQUENCES: Final[Mapping[Action, Consequence]] = {
    Action.START: Consequence(
        status=RunStatus.RUNNING, kind=None, code=None, route="started", reason=None
    ),
    Action.REPLACE: Consequence(
        status=RunStatus.RUNNING,
        kind="run.started",
        code=None,
        route="started",
        reason="replaced the active run",
    ),
    Action.QUEUE: Consequence(
        status=RunStatus.QUEUED,
        kind="run.queued",
        code=None,
        route="queued",
        reason="queued: the workflow is busy",
    ),
    Action.DROP: Consequence(
        status=RunStatus.DROPPED,
        kind="run.dropped",
        code=RunCode.DROPPED,
        route="dropped",
        reason="dropped: the workflow is busy",
    ),
    Action.REJECT: Consequence(
        status=RunStatus.REJECTED,
        kind="run.rejected",
        code=RunCode.REJECTED,
        route="rejected",
        reason="rejected: the workflow is busy",
    ),
    Action.SIGNAL: Consequence(status=None, kind=None, code=None, route="signalled", reason=None),
}
"""Each gate action's consequences for the dispatched run, in one place.

The runs it displaces are `Admission._replace`'s (a paused holder ends ``aborted`` with
``REPLACED``) and `Admission._supersede`'s (the queued run ends ``dropped`` with
``SUPERSEDED``).
"""


@dataclass(frozen=True, slots=True)
class Dispatched:
    """What one dispatch got.

    The decision, and the run it concerns (the holder's run for a signal), with a future
    that resolves when that run completes, pauses or is refused.
    """

    decision: Decision
    run_id: str
    row: int
    settled: asyncio.Future[RunResult]


@dataclass(frozen=True)
class Origin:
    """Where a forked run comes from: its source run, and the step index it starts at."""

    run_id: str
    step: str
    start: int


class Launcher(Protocol):
    """What admission needs from whoever runs the runs it admits (the supervisor)."""

    active: dict[str, ActiveRun]

    def start_run(
        self,
        registered: RegisteredWorkflow,
        trigger_id: str,
        steps: list[BoundStep],
        data: Any,
        run_id: str | None = None,
        *,
        status: RunStatus = RunStatus.RUNNING,
        origin: Origin | None = None,
        row: int | None = None,
        encoded: str | None = None,
    ) -> ActiveRun:
        """Journal a new run (or adopt its `row`); start it if ``running``."""

    def start_queued(self, run: ActiveRun) -> None:
        """A queued run got its slot."""

    def signal_active(self, run: ActiveRun, patch: dict[str, Any]) -> list[ops.Op]:
        """Merge `patch` into a running run."""

    def replace(self, run: ActiveRun, reason: str) -> None:
        """Abort a running run that a new dispatch replaces."""

    async def hook(
        self, registered: RegisteredWorkflow, row: int, hook: Hook | None, *args: Any, name: str
    ) -> None:
        """Call a hook of `registered`, recording a failure on the run."""

    def announce(self, name: str, run: ActiveRun, extra: dict[str, Any]) -> None:
        """Tell `rt.on` subscribers of `name` (in the background: admission never awaits)."""

    def background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` as an owned task."""


class Admission:
    """The gates of the registered workflows and the runs waiting in their queues."""

    def __init__(
        self, writer: JournalWriter, clock: Clock, runs: Launcher, parking: Parking
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
        origin: Origin | None = None,
        row: int | None = None,
        encoded: str | None = None,
    ) -> Dispatched:
        """Admit one dispatch under the workflow's mode (a fork: from `origin`). Never awaits.

        `row`: the run's ``queued`` row, written by the CLI while no daemon ran, to adopt.
        `encoded`: `data` encoded already (`encode_state`), so a new run need not again.
        """
        with self._writer.together():
            dispatched = self._dispatch(registered, trigger_id, data, run_id, origin, row, encoded)
        hook = registered.hooks.on_dispatch
        if hook is not None:
            result = DispatchResult(
                workflow_id=registered.id,
                trigger_id=trigger_id,
                action=dispatched.decision.action,
                run_id=dispatched.run_id,
                held_by=dispatched.decision.holder,
            )
            work = self._runs.hook(registered, dispatched.row, hook, result, name="on_dispatch")
            self._runs.background(work, name=f"on_dispatch-{dispatched.run_id}")
        return dispatched

    def _dispatch(
        self,
        registered: RegisteredWorkflow,
        trigger_id: str,
        data: Any,
        run_id: str | None,
        origin: Origin | None,
        row: int | None,
        encoded: str | None = None,
    ) -> Dispatched:
        steps = registered.steps(trigger_id)
        gate = self.gate(registered)
        new_id = run_id or make_id()
        decision = gate.dispatch(new_id)
        consequence = CONSEQUENCES[decision.action]
        status = consequence.status
        if status is None:  # a signal: the gate always names the holder
            if row is not None:  # its own row ends here: its data went to the holder
                self._signalled_instead(row, decision.holder or "")
            return self._signal(decision, data)
        if decision.action is Action.REPLACE and decision.holder is not None:
            self._replace(decision.holder, new_id)
        run = self._runs.start_run(
            registered,
            trigger_id,
            steps,
            data,
            new_id,
            status=status,
            origin=origin,
            row=row,
            encoded=encoded,
        )
        if decision.superseded is not None:
            self._supersede(decision.superseded, new_id)
        if status is RunStatus.QUEUED:
            self.queued[run.run_id] = run
        if consequence.kind is not None:
            self._record(run, decision, consequence.kind, status, consequence.code)
        if consequence.kind in _ANNOUNCED:
            self._runs.announce(
                str(consequence.kind), run, {"status": status, "error": _reason(decision)}
            )
        if status in FINAL_STATUSES:  # refused: it ends here
            run.settled.set_result(
                RunResult(
                    ok=False,
                    status=status,
                    run_id=run.run_id,
                    state=decode_state(run.state_text),
                    error=_reason(decision),
                    error_code=consequence.code,
                )
            )
        return Dispatched(decision, run.run_id, run.row, run.settled)

    def readmit(self, run: ActiveRun) -> Decision:
        """Decide for a run that ended and is retried, under its workflow's mode.

        Nothing is journaled yet (`readmitted` does it once the retry's own entries are
        enqueued). Never awaits.

        Raises:
            WorkflowBusy: The mode would drop, reject or signal it: it keeps its status.
        """
        decision = self.gate(run.workflow).dispatch(run.run_id)
        if decision.action in (Action.DROP, Action.REJECT, Action.SIGNAL):
            held = f" (the slot is held by run {decision.holder})" if decision.holder else ""
            raise WorkflowBusy(
                f"workflow {run.workflow.id!r} is busy under {run.workflow.mode!r}{held}; "
                f"run {run.run_id} keeps its status: retry it once the workflow is free"
            )
        return decision

    def readmitted(self, run: ActiveRun, decision: Decision) -> None:
        """Journal what `readmit` decided: a replaced holder, a superseded run, the queue."""
        if decision.action is Action.REPLACE and decision.holder is not None:
            self._replace(decision.holder, run.run_id)
        if decision.superseded is not None:
            self._supersede(decision.superseded, run.run_id)
        if decision.action is Action.QUEUE:
            self.queued[run.run_id] = run
            self._record(run, decision, "run.queued", RunStatus.QUEUED, None)
            self._runs.announce(
                "run.queued", run, {"status": RunStatus.QUEUED, "error": _reason(decision)}
            )

    def holds(self, workflow_id: str, run_id: str) -> bool:
        """Whether the workflow's gate still counts `run_id` (its end is being handled)."""
        gate = self._gates.get(workflow_id)
        return gate is not None and (run_id in gate.running or run_id in gate.paused)

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
                    ok=False,
                    status=RunStatus.ABORTED,
                    run_id=run_id,
                    state=decode_state(run.state_text),
                    error="aborted by request",
                    error_code=RunCode.ABORTED,
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
            self._writer.submit(self._parking.signal(parked, patch))
            state, status, row = parked.state_text, RunStatus.PAUSED, parked.row
        else:
            run = self._runs.active[holder]
            self._writer.submit(self._runs.signal_active(run, patch))
            state, status, row = run.state_text, RunStatus.RUNNING, run.row
        result = RunResult(ok=True, status=status, run_id=holder, state=decode_state(state))
        settled.set_result(result)
        return Dispatched(decision, holder, row, settled)

    def _signalled_instead(self, row: int, holder: str) -> None:
        now = self._clock.now_us()
        message = f"signalled into the active run {holder} instead (the workflow is busy)"
        self._writer.submit(
            [
                ops.set_status(row, RunStatus.DROPPED, now, error=message, code=RunCode.DROPPED),
                ops.add_timeline(row, now, "runtime", "run.dropped", message=message),
            ]
        )

    def _replace(self, holder: str, new_id: str) -> None:
        reason = f"replaced by run {new_id}"
        parked = self._parking.paused.get(holder)
        if parked is not None:
            self._writer.submit(
                self._parking.fail_parked(
                    parked, reason, RunCode.REPLACED, status=RunStatus.ABORTED
                )
            )
            return
        run = self._runs.active.get(holder)
        if run is not None:
            self._runs.replace(run, reason)

    def _supersede(self, superseded: str, new_id: str) -> None:
        run = self.queued.pop(superseded, None)
        if run is None:
            return
        message = f"superseded by run {new_id} (latest wins)"
        now = self._clock.now_us()
        self._writer.submit(
            [
                ops.set_status(
                    run.row, RunStatus.DROPPED, now, error=message, code=RunCode.SUPERSEDED
                ),
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
        self._runs.announce("run.dropped", run, {"status": RunStatus.DROPPED, "error": message})
        if not run.settled.done():
            run.settled.set_result(
                RunResult(
                    ok=False,
                    status=RunStatus.DROPPED,
                    run_id=run.run_id,
                    state=decode_state(run.state_text),
                    error=message,
                    error_code=RunCode.SUPERSEDED,
                )
            )

    def _record(
        self,
        run: ActiveRun,
        decision: Decision,
        kind: str,
        status: RunStatus,
        code: RunCode | None,
    ) -> None:
        now = self._clock.now_us()
        writes = [
            ops.add_timeline(
                run.row,
                now,
                "runtime",
                kind,
                message=_reason(decision),
                data={"held_by": decision.holder, "mode": repr(run.workflow.mode)},
            )
        ]
        if code is not None:
            writes.append(ops.set_status(run.row, status, now, error=_reason(decision), code=code))
        self._writer.submit(writes)


# The gate's decisions `rt.on` hears of at once (a start is announced as its run begins).
_ANNOUNCED = frozenset({"run.queued", "run.dropped", "run.rejected"})


def _reason(decision: Decision) -> str:
    held = f" (the slot is held by run {decision.holder})" if decision.holder else ""
    return (CONSEQUENCES[decision.action].reason or decision.action.value) + held

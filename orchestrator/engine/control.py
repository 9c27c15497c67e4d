"""Acting on runs: events, resume, signal, abort, switches and commands from other processes.

`Control` is what the runtime assembles once the journal is open: the dispatcher, the
timers, the parked runs, the supervisor of active runs, the event bus and the scheduler.
Every action is checked against the run's state here, and its writes are committed before
the public call returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..clock import Clock, new_id
from ..define.conditions import Conditions
from ..define.model import FILE_CREATED, Trigger
from ..define.services import ServiceScope
from ..errors import (
    JournalUnreachable,
    OrchestratorError,
    RunNotActive,
    RunNotFound,
    ValidationError,
    WorkflowDisabled,
)
from ..journal import (
    CommandRecord,
    DormantWait,
    JournalCommands,
    JournalQueries,
    JournalWriter,
    SwitchRecord,
    UnfinishedRun,
    ops,
)
from ..records import (
    FINAL_STATUSES,
    EventSource,
    RunCode,
    RunResult,
    RunStatus,
    event_type_problem,
)
from ..state import (
    StateBoundsError,
    StateEncodingError,
    copy_state,
    decode_state,
    encode_state,
    parse_payload,
)
from . import recovery, restart
from .admission import Dispatched, Origin
from .children import Children
from .dispatcher import Dispatcher
from .events import EventBus
from .executor import ActiveRun, ExecutorEnv, log_failed
from .keys import Keys
from .lifecycle import Lifecycle
from .parking import ParkedRun, Parking
from .registry import RegisteredWorkflow, Registry
from .scheduler import Scheduler
from .supervisor import Supervisor
from .switches import Switches
from .system_events import SystemEvents
from .timers import Timers
from .workers import StepRunner

_log = logging.getLogger("orchestrator.runtime")
T = TypeVar("T")


@dataclass(frozen=True)
class _Unstarted:
    """A run to abort that has no task or parking here: queued, or waiting for its workflow."""

    row: int
    run_id: str
    workflow_id: str
    trigger_id: str


@dataclass(frozen=True)
class Elsewhere:
    """A run with no task or parking here: queued, waiting for its workflow, or final."""

    row: int
    status: str


class Control:
    """The run machinery of a started runtime."""

    def __init__(
        self,
        *,
        writer: JournalWriter,
        reader: JournalQueries,
        clock: Clock,
        registry: Registry,
        lifecycle: Lifecycle,
        threads: Executor,
        tasks: asyncio.TaskGroup,
        max_run_row: int,
        max_wait_id: int,
        max_seq: int,
        last_ticks: dict[tuple[str, str], int],
        max_recoveries: int | None = None,
        workers: StepRunner | None = None,
        commands: JournalCommands,
        switches: list[SwitchRecord] | None = None,
    ) -> None:
        self._writer, self._reader, self._clock = writer, reader, clock
        self.switches = Switches(switches or ())
        self._registry, self._lifecycle = registry, lifecycle
        self.dispatcher = Dispatcher()
        self.timers = Timers(clock)
        # Parking calls back into the supervisor (made below) only once a run is parked.
        self.parking = Parking(
            writer,
            clock,
            self.dispatcher,
            self.timers,
            wake=self._continue,
            ended=self._parked_ended,
            max_wait_id=max_wait_id,
            max_seq=max_seq,
        )
        self.env = ExecutorEnv(
            writer=writer,
            clock=clock,
            threads=threads,
            notify=self._notify,
            wants=lifecycle.wants,
            logger=logging.getLogger("orchestrator.run"),
            waits=self.parking,
            workers=workers,
            ended=self._run_ended,
            keyed=self._keyed,
        )
        self.runs = Supervisor(
            self.env,
            tasks,
            max_run_row,
            self.lookup,
            self.parking,
            max_recoveries=max_recoveries,
        )
        self.admission = self.runs.admission
        self.bus = EventBus(
            writer, clock, self.dispatcher, self.parking, self.admission, self.lookup, self.switches
        )
        self.scheduler = Scheduler(
            writer, clock, self.timers, self._start_scheduled, last_ticks, self.switches
        )
        self.system = SystemEvents(self.dispatcher, self.bus)
        self._tasks = tasks
        self.keys = Keys(commands, reader)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.children = Children(writer, reader, self.parking, self.runs.background, self.abort)
        self.system.on_end.append(self.children.ended)
        self.parking.on_join = self.children.watch
        self.parking.readable = self._dormant_readable
        # How the runs invoked here with a key settle (a repeated `invoke` waits on them).
        self.settling: dict[str, asyncio.Future[RunResult]] = {}
        # Workflows with run-scoped services a crash left open, found once at `restore`
        # (None: not looked for; every registration then asks the journal).
        self._unclosed: set[str] | None = None

    def lookup(self, workflow_id: str) -> RegisteredWorkflow | None:
        """The registered version of a workflow, if any."""
        return self._registry.get(workflow_id) if self._registry.has(workflow_id) else None

    async def restore(self) -> None:
        """Re-arm waits, buffers, timers and parked runs; queue running runs for adoption."""
        self._unclosed = await self._reader.workflows_with_unclosed_service_scopes()
        # The dormant runs are filed while the reader runs the two other queries (they
        # hold no dormant run): with 100,000 paused runs filing them is most of a restart.
        dormant = asyncio.ensure_future(self._reader.dormant_waits())
        others = asyncio.gather(
            self._reader.live_waits(dormant=False), self._reader.unfinished_runs(dormant=False)
        )
        try:
            self.parking.adopt_dormant_many(await dormant)
        finally:
            records, unfinished_runs = await others
        for record in records:
            self.parking.adopt_wait(recovery.wait_from(record))
        for unfinished in unfinished_runs:
            if not self._readable(unfinished):
                continue
            parked_on = next(
                (w for w in self.parking.waits.get(unfinished.row, ()) if w.status == "parked"),
                None,
            )
            if unfinished.status == RunStatus.PAUSED and parked_on is not None:
                self.parking.adopt_parked(recovery.parked_from(unfinished, parked_on))
            else:
                orphan = recovery.Resumable.from_journal(unfinished)
                self.runs.orphans.setdefault(unfinished.workflow_id, []).append(orphan)

    def _dormant_readable(self, run: DormantWait) -> bool:
        """A dormant run's state, checked when it is first needed (`_readable`)."""
        if self._readable(run):
            return True
        self.admission.ended(run.workflow_id, run.run_id)  # `restore` counted it paused
        return False

    def _readable(self, run: UnfinishedRun | DormantWait) -> bool:
        """Fail a run whose state in the journal cannot be read, or say it can.

        Such a row is one no process of this version writes: it alone fails, instead of
        every start of the runtime.
        """
        try:
            parse_payload(run.state)
        except StateEncodingError as exc:
            message = f"its state in the journal cannot be read at recovery: {exc}"
            _log.error("run %s fails: %s", run.run_id, message)
            now = self._clock.now_us()
            writes = [
                ops.set_status(
                    run.row, RunStatus.FAILED, now, error=message, code=RunCode.INVALID_STATE
                ),
                *self.parking.release(run.row),
            ]
            with self._writer.together():
                self._writer.submit(writes)
                self.system.ended(
                    run.run_id,
                    run.workflow_id,
                    run.trigger_id,
                    RunStatus.FAILED,
                    message,
                    RunCode.INVALID_STATE,
                )
            return False
        return True

    # -- workflows -------------------------------------------------------------------------

    async def registered(self, registered: RegisteredWorkflow) -> None:
        """A workflow was (re)registered: index its triggers, arm its schedules, adopt runs."""
        triggers: dict[str, tuple[str, Conditions, frozenset[str] | None]] = {
            tid: (t.event, t.conditions, t.sources)
            for tid, t in registered.workflow.triggers.items()
            if isinstance(t, Trigger)
        }
        for tid, (folder, glob) in registered.file_watches().items():
            # Only the runtime's own watch: a file.created emitted by hand names any path.
            triggers[tid] = (FILE_CREATED, file_conditions(folder, glob), _FROM_FILES)
        self.dispatcher.set_triggers(registered.id, triggers)
        self.scheduler.arm(registered)
        await self.runs.adopt(registered)
        await self._clean_up_after_crash(registered)

    async def _clean_up_after_crash(self, registered: RegisteredWorkflow) -> None:
        """Build again, then clean up, run-scoped services a crash left open (at least once).

        Only runs of an earlier process can have left them open, so the journal is asked
        only for the workflows `restore` found some for (a flush and a query per
        registration would make registering N workflows cost N round trips).
        """
        if self._unclosed is not None:
            if registered.id not in self._unclosed:
                return
            self._unclosed.discard(registered.id)
        await self._writer.flush()
        services = {service.id: service for service in registered.workflow.services}
        for row, run_id, state, ids in await self._reader.unclosed_service_scopes(registered.id):
            scope = ServiceScope(
                services,
                parent=registered.service_scope,
                scope="run",
                state=decode_state(state),
                idempotency_key=f"{run_id}:services",
            )
            for service_id in dict.fromkeys(ids):
                try:
                    await scope.get(service_id)
                except OrchestratorError as exc:
                    _log.warning(
                        "run %s: cannot rebuild service %s to clean it up: %s",
                        run_id,
                        service_id,
                        exc,
                    )
            await self.runs.close_run_scope(registered, row, scope)

    def deregistered(self, workflow_id: str) -> None:
        """A workflow was deregistered: no new runs from its triggers and schedules."""
        self.dispatcher.remove_triggers(workflow_id)
        self.scheduler.disarm(workflow_id)

    def switch_writes(
        self, workflow_id: str, trigger_id: str | None, enabled: bool
    ) -> list[ops.Op]:
        """Disable or enable a workflow (or one trigger of it); the writes that record it.

        Idempotent: a switch already in that position writes nothing. A workflow that is
        not registered is fine (the switch applies when it is).

        Raises:
            TriggerNotFound: The workflow is registered and has no such trigger.
        """
        registered = self.lookup(workflow_id)
        if registered is not None and trigger_id is not None:
            registered.steps(trigger_id)
        now = self._clock.now_us()
        if not self.switches.set(workflow_id, trigger_id, enabled, now):
            return []
        what = (
            f"workflow {workflow_id}"
            if trigger_id is None
            else (f"trigger {trigger_id} of workflow {workflow_id}")
        )
        _log.info("%s %s", what, "enabled" if enabled else "disabled: it starts no runs")
        if registered is not None:  # schedules stop, or start again from the next tick
            self.scheduler.arm(registered)
        return [ops.set_switch(workflow_id, trigger_id, enabled, now)]

    def check_enabled(self, workflow_id: str, trigger_id: str) -> None:
        """Refuse to start a run of a disabled workflow or trigger.

        Raises:
            WorkflowDisabled: It is disabled.
        """
        why = self.switches.why(workflow_id, trigger_id)
        if why is not None:
            raise WorkflowDisabled(f"cannot start a run: {why}")

    # -- events and commands ---------------------------------------------------------------

    def emit(self, event_type: str, data: Any, *, source: str = "api") -> str:
        """Accept and route an event (its writes are enqueued); returns its id."""
        event_data = _checked_event(event_type, data)
        event_id = new_id()
        self.bus.accept(event_id, event_type, event_data, source=source)
        return event_id

    async def emit_committed(self, event_type: str, data: Any) -> str:
        """`emit`, returning once the event and its routing are committed.

        The runs it started or resumed get one turn of the loop first: what their first
        step enqueues before it awaits anything (a short step's checkpoint, even the run's
        end) joins the event's commit instead of waiting for a commit of its own. The
        event is still acknowledged only once committed.
        """
        spawned = self.runs.spawned
        event_id = self.emit(event_type, data)
        if self.runs.spawned != spawned:
            await asyncio.sleep(0)
        await self._writer.flush()
        return event_id

    async def emit_keyed(self, event_type: str, data: Any, *, key: str, source: str = "api") -> str:
        """Emit an event under an idempotency key, or return the id of the first one.

        The key and the event commit together (`Keys`); the event is then routed here and
        `emit_keyed` returns once its effects are committed. Shielded: a cancelled caller
        leaves no event committed but unrouted.
        """
        event_data = _checked_event(event_type, data)
        ops.checked_key(key)
        return await self._to_the_end(self._emit_keyed(event_type, event_data, source, key))

    async def _emit_keyed(
        self, event_type: str, data: dict[str, Any], source: str, key: str
    ) -> str:
        event_id, new = await self.keys.claim_event(event_type, data, source, key)
        if new:
            self.bus.accept(event_id, event_type, data, source=source, external=True)
            await self._writer.flush()
        return event_id

    async def invoke_keyed(self, workflow_id: str, trigger_id: str, data: Any, key: str) -> str:
        """Start a run under an idempotency key, or name the first one; returns its run id.

        The key and an invoke command commit together (`Keys`); the command is applied
        here at once, its run and its done mark in one batch. Shielded like `emit_keyed`.
        """
        ops.checked_key(key)
        first = await self.keys.lookup("invoke", key)
        if first is not None:
            return first
        self._registry.get(workflow_id).steps(trigger_id)  # refused before anything is written
        self.check_enabled(workflow_id, trigger_id)
        state = _json_object(data, "the run's input")
        _bounded(state, "the run's input")
        return await self._to_the_end(self._invoke_keyed(workflow_id, trigger_id, state, key))

    async def _invoke_keyed(
        self, workflow_id: str, trigger_id: str, state: dict[str, Any], key: str
    ) -> str:
        run_id, command = await self.keys.claim_invoke(workflow_id, trigger_id, state, key)
        if command is None:
            return run_id
        try:
            with self._writer.together():  # no await inside: the writer thread waits
                dispatched = self.invoke(workflow_id, trigger_id, state, run_id=run_id)
                self.settling[run_id] = dispatched.settled
                # Once settled the journal answers (`Runtime._first_run`): nothing piles up.
                dispatched.settled.add_done_callback(lambda _: self.settling.pop(run_id, None))
                self._writer.submit([ops.inbox_done(command, "ok", self._clock.now_us())])
        except OrchestratorError as exc:  # deregistered meanwhile: the command says why
            outcome = f"{exc.code}: {exc}"
            self._writer.submit([ops.inbox_done(command, outcome, self._clock.now_us())])
            raise
        return run_id

    async def _to_the_end(self, work: Coroutine[Any, Any, str]) -> str:
        """Run `work` as a task of the runtime, finished even if the caller is cancelled.

        Its error is the caller's, never the task group's (which would stop the runtime).
        """

        async def guarded() -> str | Exception:
            try:
                return await work
            except Exception as exc:  # noqa: BLE001 - handed to the caller below
                return exc

        outcome = await asyncio.shield(self._tasks.create_task(guarded(), name="keyed"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def locate(self, run_id: str) -> ParkedRun | ActiveRun | Elsewhere:
        """Where a run is: parked here, executing here, or elsewhere (as the journal says).

        Raises:
            RunNotFound: The journal has no such run.
        """
        parked = self.parking.paused.get(run_id)
        if parked is not None:
            return parked
        active = self.runs.active.get(run_id)
        if active is not None:
            return active
        row, status = await self._status(run_id)
        return Elsewhere(row, status)

    async def resume_writes(self, run_id: str, patch: Any) -> list[ops.Op]:
        """The writes that resume a paused run with `patch` merged into its state."""
        changes = _json_object(patch, "the resume patch")
        run = await self.locate(run_id)
        if isinstance(run, ActiveRun):
            raise RunNotActive(
                f"run {run_id} is running, not paused; only a paused run can be resumed"
            )
        if isinstance(run, Elsewhere):
            raise RunNotActive(f"run {run_id} is {run.status}; it cannot be resumed")
        return self.parking.wake(
            run, changes, "resumed by request", source="command", extra={"by": "resume"}
        )

    async def signal_writes(self, run_id: str, patch: Any) -> list[ops.Op]:
        """The writes that merge `patch` into an active run's state without resuming it."""
        changes = _json_object(patch, "the signal patch")
        run = await self.locate(run_id)
        if isinstance(run, ParkedRun):
            return self.parking.signal(run, changes)
        if isinstance(run, ActiveRun) and not run.finishing:
            return self.runs.signal_active(run, changes)
        _, status = await self._status(run_id)
        raise RunNotActive(f"run {run_id} is {status}; it cannot be signalled")

    async def abort(self, run_id: str) -> None:
        """End a run that is not final."""
        target = await self._abortable(run_id)
        if target is None:
            return
        with self._writer.together():  # the end and its system event: one batch
            committed = self._writer.enqueue(self._abort_now(target), urgent=True)
        await asyncio.shield(committed)

    async def _abortable(self, run_id: str) -> ParkedRun | _Unstarted | None:
        """Where the run to abort is; an active run is aborted here (None: it is done).

        Raises:
            RunNotFound: The journal has no such run.
            RunNotActive: The run is final already.
        """
        run = await self.locate(run_id)
        if isinstance(run, ActiveRun):
            await self.runs.abort(run)  # the executor records the end itself
            return None
        if isinstance(run, ParkedRun):
            return run
        if run.status in FINAL_STATUSES:
            raise RunNotActive(
                f"run {run_id} is already {run.status}; only unfinished runs can be aborted"
            )
        info = await self._reader.get_run(run_id)
        workflow_id, trigger_id = (info.workflow_id, info.trigger_id) if info else ("", "")
        return _Unstarted(run.row, run_id, workflow_id, trigger_id)

    def _abort_now(self, target: ParkedRun | _Unstarted) -> list[ops.Op]:
        """The writes that end `target` aborted; call inside `together` with their enqueue."""
        if isinstance(target, ParkedRun):
            return self.parking.fail_parked(  # `_parked_ended` announces the end
                target, "aborted by request", RunCode.ABORTED, status=RunStatus.ABORTED
            )
        # Queued, or waiting for its workflow: it has no task, only its journal row.
        self.runs.forget_orphan(target.run_id)
        self.admission.abort_queued(target.run_id)
        now = self._clock.now_us()
        error = "aborted by request"
        status, code = RunStatus.ABORTED, RunCode.ABORTED
        self.system.ended(target.run_id, target.workflow_id, target.trigger_id, status, error, code)
        return [
            ops.set_status(target.row, status, now, error=error, code=code),
            *self.parking.release(target.row),
        ]

    # -- retry and fork --------------------------------------------------------------------

    async def retry(
        self, run_id: str, patch: Any, command: CommandRecord | None = None
    ) -> asyncio.Future[RunResult]:
        """Continue a failed or aborted run at the step it stopped at; how it settles.

        On the workflow's current version, from its last checkpoint with `patch` merged,
        through the workflow's mode. With `command`, its done mark joins the retry's batch.

        Raises:
            RunNotFound: No such run.
            RunNotActive: The run is not failed or aborted.
            WorkflowNotFound, TriggerNotFound, StepNotFound: Where it stopped is gone.
            WorkflowBusy: The workflow's mode refuses it now.
        """
        changes = _json_object(patch, "the retry patch")
        ending = self.runs.active.get(run_id)
        if ending is not None and ending.finishing and ending.task is not None:
            if ending.task is asyncio.current_task():  # a hook or handler of its own end
                raise RunNotActive(
                    f"run {run_id} is still finishing: retry it from another task than its "
                    "own hooks and lifecycle handlers (e.g. asyncio.create_task)"
                )
            await asyncio.wait([ending.task])  # its end is committed; its hooks still run
        await self._writer.flush()
        stored = await self._reader.stored_run(run_id)
        if stored is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self._reader.location}")
        if stored.status not in (RunStatus.FAILED, RunStatus.ABORTED):
            raise RunNotActive(
                f"run {run_id} is {stored.status}; only a failed or aborted run can be retried"
            )
        for _ in range(ENDING_POLLS):  # a parked run's end is handled in the background
            if not self.admission.holds(stored.workflow_id, run_id):
                break
            await asyncio.sleep(0.01)
        run = _checked(lambda: restart.retried(stored, self.lookup(stored.workflow_id), changes))
        # No await from here: the checks and the admission see the same memory.
        if run_id in self.runs.active or run_id in self.admission.queued:
            raise RunNotActive(f"run {run_id} is already retried and active again")
        writes = restart.retry_writes(stored, run, changes, self._clock.now_us())
        with self._writer.together():  # no await inside: the writer thread waits
            self.runs.retry(run, writes)
            if command is not None:
                self._writer.submit([self._done(command, "ok")])
        return run.settled

    async def fork(
        self,
        run_id: str,
        from_step: str | None,
        patch: Any,
        *,
        new_run_id: str | None = None,
        command: CommandRecord | None = None,
    ) -> Dispatched:
        """Start a new run of a run's workflow and trigger at `from_step` (default: the first).

        Its state is the one the run had before that step, with `patch` merged; it runs on
        the workflow's current version, through its mode. With `command`, its done mark
        joins the new run's batch.

        Raises:
            RunNotFound: No such run.
            WorkflowNotFound, TriggerNotFound: The workflow or its trigger is gone.
            StepNotFound: No such step now, or the run never reached it.
            WorkflowDisabled: The workflow, or its trigger, is disabled.
        """
        changes = _json_object(patch, "the fork patch")
        if from_step is not None and not isinstance(from_step, str):
            raise ValidationError(f"from_step must be a step name, got {from_step!r}")
        await self._writer.flush()
        stored = await self._reader.stored_run(run_id)
        if stored is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self._reader.location}")
        checkpoints = await self._reader.stored_checkpoints(run_id)
        registered = self.lookup(stored.workflow_id)
        point = _checked(
            lambda: restart.fork_point(stored, registered, checkpoints, from_step, changes)
        )
        assert registered is not None  # fork_point refuses a missing workflow
        self.check_enabled(registered.id, stored.trigger_id)  # a new run, as by invoke
        _bounded(point.state, "the fork's state")
        origin = Origin(run_id, point.step, point.index)
        with self._writer.together():  # no await inside: the writer thread waits
            dispatched = self.admission.dispatch(
                registered, stored.trigger_id, point.state, run_id=new_run_id, origin=origin
            )
            if command is not None:
                self._writer.submit([self._done(command, "ok")])
        return dispatched

    async def _restart_command(self, command: CommandRecord) -> None:
        """Apply a ``retry`` or ``fork`` command (its done mark joins its batch)."""
        payload = command.payload if isinstance(command.payload, dict) else {}
        run_id = command.run_id or ""
        if command.command == "retry":
            await self.retry(run_id, command.payload, command)
            return
        new_run_id = payload.get("new_run_id")
        await self.fork(
            run_id,
            payload.get("from_step"),
            payload.get("patch"),
            new_run_id=new_run_id if isinstance(new_run_id, str) and new_run_id else None,
            command=command,
        )

    async def apply_command(self, command: CommandRecord) -> None:
        """Apply a command written by another process, recording how it went.

        Invariant: the command's effects and its ``done`` mark join one batch, so after a
        crash a command is applied again only if none of it was committed. A journal that
        cannot be reached (`JournalUnreachable`, a server's restart) is raised, the command
        left pending: marking it done with that error would drop an acknowledged command.
        """
        if command.command == "invoke" and command.run_id in self.keys.here:
            return  # claimed under a key by this process, which applies it itself
        try:
            if command.problem is not None:
                raise ValidationError(f"the command's payload cannot be read: {command.problem}")
            if command.command == "invoke":
                await self._apply_invoke(command)
                return
            if command.command == "abort":
                target = await self._abortable(command.run_id or "")
                with self._writer.together():  # the end, its system event and the mark
                    writes = [] if target is None else self._abort_now(target)
                    self._writer.submit([*writes, self._done(command, "ok")])
                return
            if command.command in ("retry", "fork"):
                await self._restart_command(command)
                return
            writes = await self._command_writes(command)
        except JournalUnreachable:
            raise  # not the command's fault: it stays pending, applied once the journal answers
        except OrchestratorError as exc:
            if command.command in ("retry", "fork"):  # the CLI returned before this check
                _log.warning("%s of run %s refused: %s", command.command, command.run_id, exc)
            self._writer.submit([self._done(command, f"{exc.code}: {exc}")])
            return
        self._writer.submit([*writes, self._done(command, "ok")])

    def _done(self, command: CommandRecord, outcome: str) -> ops.Op:
        return ops.inbox_done(command.id, outcome, self._clock.now_us())

    async def _command_writes(self, command: CommandRecord) -> list[ops.Op]:
        run_id = command.run_id or ""
        if command.command == "resume":
            return await self.resume_writes(run_id, command.payload or {})
        if command.command == "signal":
            return await self.signal_writes(run_id, command.payload)
        if command.command in ("disable", "enable"):
            enabled = command.command == "enable"
            return self.switch_writes(command.workflow_id or "", command.trigger_id, enabled)
        raise ValidationError(f"unknown command {command.command!r}")

    async def _apply_invoke(self, command: CommandRecord) -> None:
        """Start the run an invoke command asks for, adopting the row the CLI queued, if any.

        A queued row (written while no daemon ran) goes through the mode gate like any
        dispatch; one aborted meanwhile stays aborted; one naming a workflow or trigger
        this daemon does not have fails, with its system event.
        """
        found = await self._reader.run_status(command.run_id) if command.run_id else None
        if found is not None and found[1] != RunStatus.QUEUED:
            outcome = f"not started: run {command.run_id} is {found[1]} already"
            self._writer.submit([self._done(command, outcome)])
            return
        row = None if found is None else found[0]
        parent = await self._aborted_parent(command)
        with self._writer.together():  # no await inside: the writer thread waits
            if parent is not None:  # started by a step of a run aborted since
                why = f"not started: its parent run {parent} was aborted"
                aborted = self._refused(command, why, row, status=RunStatus.ABORTED)
                self._writer.submit([*aborted, self._done(command, why)])
                return
            try:
                self._invoke_command(command, row)
            except WorkflowDisabled as exc:  # its run ends rejected, visibly
                refused = self._refused(command, str(exc), row)
                self._writer.submit([*refused, self._done(command, f"{exc.code}: {exc}")])
                return
            except OrchestratorError as exc:
                if row is None and self._is_child(command):  # a row, so a join of it ends
                    row = self._unstartable(command)
                if row is None:
                    raise
                self._not_invocable(command, row, exc)
                self._writer.submit([self._done(command, f"{exc.code}: {exc}")])
                return
            self._writer.submit([self._done(command, "ok")])

    async def _aborted_parent(self, command: CommandRecord) -> str | None:
        """The parent of a child run's invoke (`ctx.start`), if that parent is aborted."""
        payload = command.payload if isinstance(command.payload, dict) else {}
        parent = payload.get("parent")
        if not isinstance(parent, str) or parent in self.runs.active:
            return None
        if parent in self.parking.paused:  # joining its children, most likely
            return None
        found = await self._reader.run_status(parent)
        return parent if found is not None and found[1] == RunStatus.ABORTED else None

    @staticmethod
    def _is_child(command: CommandRecord) -> bool:
        return isinstance(command.payload, dict) and isinstance(command.payload.get("parent"), str)

    def _unstartable(self, command: CommandRecord) -> int:
        """Enqueue a ``queued`` row for a child run that cannot start here; its row id."""
        payload = command.payload if isinstance(command.payload, dict) else {}
        try:
            state = encode_state(payload.get("data") or {})
        except StateEncodingError:
            state = "{}"
        row, writes = self.runs.unstartable_row(
            command.run_id or "", command.workflow_id or "", command.trigger_id or "", state
        )
        self._writer.submit(writes)
        return row

    def _keyed(self, kind: str, key: str) -> str | None:
        """What `key` made first, for ``ctx.start``/``ctx.emit``; None on the loop.

        A step on the loop cannot wait for the journal: its keyed start or emit names the
        id derived from the key, which the journal keeps if the key is new.
        """
        if threading.get_ident() == self._loop_thread:
            return None
        lookup = asyncio.run_coroutine_threadsafe(self.keys.lookup(kind, key), self._loop)
        return lookup.result(timeout=30)

    def _not_invocable(self, command: CommandRecord, row: int, exc: OrchestratorError) -> None:
        """Fail a queued run whose workflow or trigger this daemon does not have."""
        error = f"{exc}; load it (or fix the name) and invoke it again"
        code = RunCode.NOT_INVOCABLE
        now = self._clock.now_us()
        self._writer.submit([ops.set_status(row, RunStatus.FAILED, now, error=error, code=code)])
        log_failed(command.run_id or "", command.workflow_id or "", None, code, error)
        self.system.ended(
            command.run_id or "",
            command.workflow_id or "",
            command.trigger_id or "",
            RunStatus.FAILED,
            error,
            code,
        )

    def _invoke_command(self, command: CommandRecord, row: int | None) -> None:
        payload = command.payload if isinstance(command.payload, dict) else {}
        self.invoke(
            command.workflow_id or "",
            command.trigger_id or "",
            payload.get("data"),
            run_id=command.run_id or None,
            row=row,
        )

    def _refused(
        self,
        command: CommandRecord,
        why: str,
        row: int | None,
        *,
        status: RunStatus = RunStatus.REJECTED,
    ) -> list[ops.Op]:
        """An invoke queued by another process for a disabled trigger: a ``rejected`` run.

        The CLI printed its run id: `runs` and `show` know it, ended with code DISABLED. Its
        `row` exists if the CLI queued it while no daemon ran. With `status` ``aborted``: a
        child run whose parent was aborted before its start was applied (code ABORTED).
        """
        if row is None:
            registered = self._registry.get(command.workflow_id or "")
            trigger_id = command.trigger_id or ""
            payload = command.payload if isinstance(command.payload, dict) else {}
            row = self.runs.start_run(
                registered,
                trigger_id,
                registered.steps(trigger_id),
                payload.get("data") or {},
                command.run_id or None,
                status=status,
            ).row
        now = self._clock.now_us()
        code = RunCode.DISABLED if status == RunStatus.REJECTED else RunCode.ABORTED
        self.children.ended(command.run_id or "", status)  # a join of it ends
        return [
            ops.add_timeline(row, now, "runtime", f"run.{status}", message=why),
            ops.set_status(row, status, now, error=why, code=code),
        ]

    def invoke(
        self,
        workflow_id: str,
        trigger_id: str,
        data: Any,
        run_id: str | None = None,
        row: int | None = None,
    ) -> Dispatched:
        """Dispatch a run of a workflow's pipeline (bypassing trigger conditions).

        `row`: the run's ``queued`` row, written by the CLI while no daemon ran, to adopt.

        Raises:
            WorkflowNotFound: No such workflow is registered.
            TriggerNotFound: It has no such trigger.
            WorkflowDisabled: The workflow, or that trigger, is disabled.
        """
        registered = self._registry.get(workflow_id)
        registered.steps(trigger_id)  # TriggerNotFound before anything is journaled
        self.check_enabled(workflow_id, trigger_id)
        encoded = _bounded(data, "the run's input")
        return self.admission.dispatch(
            registered,
            trigger_id,
            {} if data is None else data,
            run_id=run_id,
            row=row,
            encoded=encoded,
        )

    # -- internals -------------------------------------------------------------------------

    def _run_ended(
        self,
        run_id: str,
        workflow_id: str,
        trigger_id: str,
        status: RunStatus,
        error: str | None,
        code: RunCode | None,
    ) -> None:
        # The executor's `ended`: bound before `self.system` exists (it needs the bus).
        self.system.ended(run_id, workflow_id, trigger_id, status, error, code)

    def _parked_ended(self, parked: ParkedRun, result: RunResult) -> None:
        # Called inside the `together` block that enqueues the parked run's end.
        self.system.ended(
            parked.run_id,
            parked.workflow_id,
            parked.trigger_id,
            result.status,
            result.error,
            result.error_code,
        )
        name = f"run.{result.status}"  # failed (a pause timed out), aborted, replaced
        if self._lifecycle.wants(name):
            extra = {"status": result.status, "error": result.error}
            self.runs.background(self._notify_parked(name, parked, extra), name=name)
        registered = parked.pinned or self.lookup(parked.workflow_id)
        if registered is None:
            self.admission.ended(parked.workflow_id, parked.run_id)
            return
        work = self.runs.finished(registered, parked.row, parked.run_id, result)
        self.runs.background(work, name=f"finished-{parked.run_id}")

    def _continue(self, parked: ParkedRun) -> list[ops.Op]:
        return self.runs.continue_parked(parked)

    def _start_scheduled(
        self, registered: RegisteredWorkflow, trigger_id: str, data: dict[str, Any]
    ) -> object:
        return self.admission.dispatch(registered, trigger_id, data)

    async def _notify(self, name: str, run: ActiveRun, extra: dict[str, Any]) -> None:
        await self._lifecycle.notify(
            name,
            {
                "run_id": run.run_id,
                "workflow_id": run.workflow.id,
                "trigger_id": run.trigger_id,
                **extra,
            },
        )

    async def _notify_parked(
        self, name: str, parked: ParkedRun, extra: dict[str, Any] | None = None
    ) -> None:
        if self._lifecycle.wants(name):
            await self._lifecycle.notify(
                name,
                {
                    "run_id": parked.run_id,
                    "workflow_id": parked.workflow_id,
                    "trigger_id": parked.trigger_id,
                    **(extra or {}),
                },
            )

    async def _status(self, run_id: str) -> tuple[int, RunStatus]:
        await self._writer.flush()
        found = await self._reader.run_status(run_id)
        if found is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self._reader.location}")
        return found


ENDING_POLLS = 500  # of 10 ms: how long a retry waits for a run's end to be handled here
_FROM_FILES = frozenset({EventSource.FILE.value})


def file_conditions(folder: Path, glob: str) -> Conditions:
    """What a ``file.created`` event must carry to start a `FileTrigger`'s run."""
    where = {"dir": ("==", str(folder)), "glob": ("==", glob)}
    return Conditions.parse(where, label=f"FileTrigger(dir={str(folder)!r}, glob={glob!r})")


def _checked_event(event_type: Any, data: Any) -> dict[str, Any]:
    """An event's data, once its type and data are fit to journal; else `ValidationError`."""
    problem = event_type_problem(event_type)
    if problem is not None:
        raise ValidationError(problem)
    return _json_object(data, f"the data of event {event_type!r}")


def _checked(plan: Callable[[], T]) -> T:
    """`plan()`, with a state that cannot be encoded (a patch too big) as `ValidationError`."""
    try:
        return plan()
    except StateEncodingError as exc:
        raise ValidationError(f"the run's state with the patch is refused: {exc}") from exc


def _bounded(value: Any, what: str) -> str | None:
    """`value` encoded, if it is a JSON object (its run starts from this text), else None.

    Too deep or not Unicode is refused where it enters; any other shape fails the run.
    """
    try:
        if isinstance(value, dict):
            return encode_state(value)
    except StateBoundsError as exc:
        raise ValidationError(f"{what} is refused: {exc}") from exc
    except StateEncodingError:
        pass
    return None


def _json_object(value: Any, what: str) -> dict[str, Any]:
    try:
        return copy_state({} if value is None else value)
    except StateEncodingError as exc:
        raise ValidationError(f"{what} must be a JSON object: {exc}") from exc

"""The runs this process executes: starting them, driving them, adopting recovered ones.

The supervisor owns every run task (inside the runtime's task group) and the bookkeeping
of which runs are active here and which recovered runs wait for their workflow. It does
not know what a run does (the executor does) nor the public API (the runtime does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..clock import new_id
from ..define.hooks import Hook, call_hook
from ..define.model import BoundStep
from ..define.services import ServiceScope
from ..define.waits import PauseRequest
from ..errors import JournalError, RunNotActive, RuntimeStopped
from ..journal import ops
from ..records import RunCode, RunResult, RunStatus
from ..state import StateEncodingError, decode_state, encode_state
from .admission import Admission, Origin
from .executor import (
    ActiveRun,
    Ending,
    ExecutorEnv,
    Finished,
    abort_consumed,
    aborted,
    context_for,
    end,
    execute,
    finish_aborted,
    quiet,
    result_of,
    settle,
)
from .recovery import Resumable, crash_loop, plan
from .registry import RegisteredWorkflow
from .segments.offering import ABORTED, Offering

if TYPE_CHECKING:
    from .parking import ParkedRun, Parking

_log = logging.getLogger("orchestrator.runtime")
# How many tasks `working` may hold before the first sweep of those that are done.
SWEEP_MIN = 1024


class Supervisor:
    """Active runs by id, recovered runs waiting for their workflow, and the gates.

    It owns the `Admission` that admits its runs under their workflows' modes: admission
    decides and journals decisions, the supervisor starts and stops the runs.
    """

    def __init__(
        self,
        env: ExecutorEnv,
        tasks: asyncio.TaskGroup,
        max_run_row: int,
        lookup: Callable[[str], RegisteredWorkflow | None],
        parking: Parking,
        *,
        max_recoveries: int | None = None,
    ) -> None:
        self._env = env
        self._max_recoveries = max_recoveries
        # Recovered runs adopted while start-up holds them back (see `hold_recovered`).
        self._held: list[ActiveRun] | None = None
        self._writer = env.writer
        self._tasks = tasks
        self._next_row = max_run_row
        self._lookup = lookup
        self.parking = parking
        self.admission = Admission(env.writer, env.clock, self, parking)
        self.active: dict[str, ActiveRun] = {}
        # Invariant: a run id is in at most one of `active` and `orphans`.
        self.orphans: dict[str, list[Resumable]] = {}
        # Invariant: holds every task started here (runs, hooks) that has not finished yet,
        # and maybe some that have (see `_own`).
        self.working: set[asyncio.Task[None]] = set()
        self._sweep_at = SWEEP_MIN
        # How many run tasks were started so far (so a caller can tell whether it started any).
        self.spawned = 0
        # The runs each batch settles once it commits (their tasks have ended already).
        self._settling: dict[asyncio.Future[None], list[ActiveRun]] = {}
        # On a shared journal: where segments of runs are offered to executors.
        self.offering: Offering | None = None

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
        """Journal a new run (pipelined with its first steps); start it if ``running``.

        A fork (`origin`) starts at its step, and its row says where it comes from.
        `row`: the run's row exists already (queued by the CLI while no daemon ran): it is
        adopted, moved to `status` on this version, instead of inserted. `encoded`: `data`
        as `encode_state` encoded it already (an invoke's input, checked as it came in).
        """
        if row is None:
            self._next_row += 1
        run = ActiveRun(
            row=self._next_row if row is None else row,
            run_id=run_id or new_id(),
            workflow=registered,
            trigger_id=trigger_id,
            steps=steps,
            step_index=origin.start if origin is not None else 0,
            position=0,
            state_text="{}" if encoded is None else encoded,
            settled=asyncio.get_running_loop().create_future(),
        )
        if encoded is None:
            try:
                run.state_text = encode_state(data)
            except StateEncodingError as exc:
                run.invalid_input = f"the run's input is invalid: {exc}"
        if row is not None:
            self._writer.submit(self._adopted(run, status))
        else:
            self._enqueue_new(run, status)
        if origin is not None:
            self._writer.submit(_forked(run, origin, self._env.clock.now_us()))
        if status == RunStatus.RUNNING:
            self._spawn(run)
        return run

    def unstartable_row(
        self, run_id: str, workflow_id: str, trigger_id: str, state: str
    ) -> tuple[int, list[ops.Op]]:
        """A ``queued`` row for a child run whose workflow or trigger is not here (it fails).

        Its row is then failed like a CLI-queued run's, so a join of it ends. Returns the
        row id and its writes.
        """
        self._next_row += 1
        now = self._env.clock.now_us()
        return self._next_row, ops.create_run(
            self._next_row,
            run_id,
            workflow_id,
            trigger_id,
            "",
            status=RunStatus.QUEUED,
            first_step="",
            state=state,
            at=now,
        )

    def _adopted(self, run: ActiveRun, status: RunStatus) -> list[ops.Op]:
        now = self._env.clock.now_us()
        version = run.workflow.version
        writes = [ops.set_status(run.row, status, now), ops.set_version(run.row, version)]
        if status == RunStatus.RUNNING and run.next_step is not None:
            writes.append(ops.step_started(run.row, 0, run.next_step, now))
            message = "a daemon applied its invoke"
            writes.append(ops.add_timeline(run.row, now, "runtime", "run.started", message=message))
        return writes

    def _enqueue_new(self, run: ActiveRun, status: RunStatus) -> None:
        registered = run.workflow
        self._writer.submit(
            ops.create_run(
                run.row,
                run.run_id,
                registered.id,
                run.trigger_id,
                registered.version,
                status=status,
                first_step=run.steps[run.step_index].name,
                state=run.state_text,
                at=self._env.clock.now_us(),
            )
        )

    def retry(self, run: ActiveRun, writes: list[ops.Op]) -> None:
        """Admit a retried run again under its mode, then start it (or queue it).

        `writes` (what the retry journals first) join the batch of its new status. Never
        awaits.

        Raises:
            WorkflowBusy: Its mode refuses it now; nothing was enqueued.
        """
        decision = self.admission.readmit(run)
        now = self._env.clock.now_us()
        self._writer.submit(writes)
        self.admission.readmitted(run, decision)
        if run.run_id in self.admission.queued:
            self._writer.submit([ops.set_status(run.row, RunStatus.QUEUED, now)])
            self.announce("run.retried", run, {"step": run.next_step})
            return
        started = [ops.set_status(run.row, RunStatus.RUNNING, now)]
        if run.next_step is not None:
            started.append(ops.step_started(run.row, run.position, run.next_step, now))
        self._writer.submit(started)
        self._spawn(run, lifecycle="run.retried")

    def signal_active(self, run: ActiveRun, patch: dict[str, Any]) -> list[ops.Op]:
        """Merge `patch` into a running run: journaled now, and it wins over the step's result.

        A run executed elsewhere gets it from its executor, which journals it.
        """
        if self.offering is not None and self.offering.signal(run, patch):
            return []
        run.pending_patch = {**(run.pending_patch or {}), **patch}
        return self.parking.signal(run, patch)

    def start_queued(self, run: ActiveRun) -> None:
        """A queued run got its slot: journal that it runs and start it."""
        now = self._env.clock.now_us()
        writes = [
            ops.set_status(run.row, RunStatus.RUNNING, now),
            # Its timeline says when it really started (it was created queued).
            ops.add_timeline(run.row, now, "runtime", "run.started", message="its turn came"),
        ]
        if run.next_step is not None:
            writes.append(ops.step_started(run.row, run.position, run.next_step, now))
        self._writer.submit(writes)
        self._spawn(run, lifecycle="run.started")

    def replace(self, run: ActiveRun, reason: str) -> None:
        """Abort an active run that a new dispatch replaces; its task records the end."""
        if run.finishing:
            return
        run.abort_requested, run.abort_reason = True, reason
        run.abort_code = RunCode.REPLACED  # as a paused run it replaces ends
        if run.task is not None:
            run.task.cancel()

    async def abort(self, run: ActiveRun) -> None:
        """Abort an active run and wait until its end is recorded."""
        if run.finishing:
            raise RunNotActive(f"run {run.run_id} is already finishing; it cannot be aborted")
        run.abort_requested = True
        if run.task is not None:
            run.task.cancel()
            await asyncio.wait([run.task])
        if run.run_id in self.active and not run.finishing:  # held before its first step
            result = await finish_aborted(run, self._env)
            self.active.pop(run.run_id, None)
            if not run.settled.done():
                run.settled.set_result(result)
            await self.finished(run.workflow, run.row, run.run_id, result)
        else:  # its task may have left its end to its batch to settle (`_committed`)
            await self._writer.flush()

    def note_missing(self, registered: Callable[[str], bool]) -> None:
        """Give recovered runs whose workflow is not registered the reason they wait."""
        now = self._env.clock.now_us()
        for workflow_id, waiting in self.orphans.items():
            if registered(workflow_id):
                continue
            reason = _missing(workflow_id)
            self._writer.submit(
                [
                    ops.set_status(
                        run.row, run.status, now, error=reason, code=RunCode.WORKFLOW_MISSING
                    )
                    for run in waiting
                ]
            )

    def forget_orphan(self, run_id: str) -> None:
        """Drop a recovered run from the waiting list (it was aborted)."""
        for waiting in self.orphans.values():
            waiting[:] = [orphan for orphan in waiting if orphan.run_id != run_id]

    async def stop(self, grace: float) -> None:
        """Let running steps finish for up to `grace` seconds, then cancel the rest.

        A run cancelled in a step stays ``running`` for the next start-up's recovery, which
        must not count it as a crash: its count for that step is lowered by one first.
        """
        running = [run.task for run in self.active.values() if run.task is not None]
        if running:
            await asyncio.wait(running, timeout=grace)
        interrupted = [
            run
            for run in self.active.values()
            if run.task is not None and not run.task.done() and not run.finishing
        ]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        uncounted = [_not_a_crash(run, step) for run in interrupted if (step := run.next_step)]
        if uncounted:
            try:
                self._writer.submit(uncounted)
            except JournalError as exc:  # the journal failed: recovery counts them as crashes
                _log.warning("cannot record that stopping interrupted runs: %s", exc)

    def hold_recovered(self) -> None:
        """Until `release_recovered`, adopted runs are made active but their steps wait.

        Start-up holds them while it applies the commands other processes wrote while no
        process ran, so an abort written then ends a run before its step starts again.
        """
        self._held = []

    def release_recovered(self) -> None:
        """Start the recovered runs held since `hold_recovered` (those still to start)."""
        held, self._held = self._held or [], None
        self._start_recovered(held)

    async def adopt(self, registered: RegisteredWorkflow) -> None:
        """Continue the recovered runs of a workflow that has just been registered."""
        kept: list[Resumable] = []
        queued: list[ActiveRun] = []
        recovered: list[ActiveRun] = []
        for unfinished in self.orphans.pop(registered.id, []):
            resumption = plan(unfinished, registered)
            now = self._env.clock.now_us()
            if resumption.step_index is not None and unfinished.status == RunStatus.QUEUED:
                queued.append(_active_from(unfinished, registered, resumption.step_index))
            elif resumption.step_index is None:
                kept.append(unfinished)
                self._writer.submit(
                    [
                        ops.set_status(
                            unfinished.row,
                            unfinished.status,
                            now,
                            error=resumption.problem,
                            code=RunCode.STEP_MISSING,
                        )
                    ]
                )
            else:
                recovered.append(self._continue(unfinished, registered, resumption.step_index, now))
        if kept:
            self.orphans[registered.id] = kept
        paused = self.parking.paused_of(registered.id)
        running = [run.run_id for run in recovered]
        self.admission.restore(registered, queued, running, paused)
        # Invariant: a recovery is committed before its step starts again, so no crash can
        # let a step start more often than `max_recoveries` allows. (Only then: a flush per
        # registration would make registering N workflows cost N commits.)
        if recovered:
            await self._writer.flush()
        if self._held is not None:
            self._held.extend(recovered)
        else:
            self._start_recovered(recovered)

    def _start_recovered(self, recovered: list[ActiveRun]) -> None:
        for run in recovered:
            # An abort may have ended it while its recovery was being committed or held.
            if self.active.get(run.run_id) is run and run.task is None and not run.finishing:
                self._spawn(run, lifecycle="run.recovered")

    def _continue(
        self, unfinished: Resumable, registered: RegisteredWorkflow, step_index: int, now: int
    ) -> ActiveRun:
        """Make a recovered run active at `step_index` and enqueue its recovery (not started)."""
        run = _active_from(unfinished, registered, step_index)
        writes = [
            ops.set_status(run.row, RunStatus.RUNNING, now),
            ops.set_version(run.row, registered.version),
        ]
        step = run.next_step
        if step is not None:
            run.crash_loop = crash_loop(unfinished, step, self._max_recoveries)
        if step is not None and run.crash_loop is not None:
            writes.append(
                ops.add_timeline(
                    run.row,
                    now,
                    "runtime",
                    "run.crash_loop",
                    position=run.position,
                    step=step,
                    message=run.crash_loop,
                    data={"recoveries": unfinished.recoveries},
                )
            )
        else:
            writes += self._recovery_writes(unfinished, run, now)
        self._writer.submit(writes)
        self.active[run.run_id] = run
        return run

    def _recovery_writes(self, unfinished: Resumable, run: ActiveRun, now: int) -> list[ops.Op]:
        message = f"recovered after a restart; continuing from checkpoint {unfinished.position}"
        if unfinished.version != run.workflow.version:
            message += f" on version {run.workflow.version} (started on {unfinished.version})"
        data = None
        writes = []
        if run.next_step is not None:
            writes.append(ops.step_started(run.row, run.position, run.next_step, now))
            if unfinished.recoveries is not None:  # it was in this step when its process died
                count = unfinished.recoveries + 1
                data = {"recoveries": count}
                run.commit_next_checkpoint = True
                run.recovered_at = (run.next_step, count)
                writes.append(ops.set_recoveries(run.row, run.next_step, count))
        timeline = ops.add_timeline(
            run.row,
            now,
            "runtime",
            "run.recovered",
            position=run.position,
            step=run.next_step,
            message=message,
            data=data,
        )
        return [timeline, *writes]

    def continue_parked(self, parked: ParkedRun) -> list[ops.Op]:
        """A parked run was resumed: run its next step, on its pinned version if held."""
        unfinished = Resumable.woken(parked)
        registered = parked.pinned or self._lookup(parked.workflow_id)
        resumption = plan(unfinished, registered) if registered else None
        if registered is None or resumption is None or resumption.step_index is None:
            self.orphans.setdefault(parked.workflow_id, []).append(unfinished)
            if resumption is not None and resumption.problem is not None:
                reason, code = resumption.problem, RunCode.STEP_MISSING
            else:
                reason, code = _missing(parked.workflow_id), RunCode.WORKFLOW_MISSING
            now = self._env.clock.now_us()
            return [ops.set_status(parked.row, RunStatus.RUNNING, now, error=reason, code=code)]
        run = _active_from(unfinished, registered, resumption.step_index)
        writes = []
        if registered.version != parked.version:
            writes.append(ops.set_version(run.row, registered.version))
        if not self.admission.resumed(run):
            writes.append(ops.set_status(run.row, RunStatus.QUEUED, self._env.clock.now_us()))
            return writes
        self._spawn(run, lifecycle="run.resumed")
        return writes

    def _spawn(self, run: ActiveRun, lifecycle: str = "run.started") -> None:
        self.spawned += 1
        self.active[run.run_id] = run
        run.task = self._own(self._drive(run, lifecycle), name=f"run-{run.run_id}")

    async def _drive(self, run: ActiveRun, lifecycle: str) -> None:
        later = False  # its batch settles it (`_committed`), after this task has ended
        try:
            await self._begin(run, lifecycle)
            result = await self._execute(run)
            later = result is None
        except asyncio.CancelledError:
            if not run.settled.done():
                _fail(
                    run.settled,
                    RuntimeStopped(
                        f"the runtime stopped before run {run.run_id} finished; it continues "
                        "from its last checkpoint when the journal is next opened"
                    ),
                )
            raise
        except Exception as exc:  # noqa: BLE001 - a journal failure or a bug: keep serving
            self._not_driven(run, exc)
        else:
            if result is not None:
                await self._settled(run, result)
        finally:
            if later:  # it stays active until settled; its task is done and can go
                run.task = None
            elif self.active.get(run.run_id) is run:  # a resumed run may have taken its place
                del self.active[run.run_id]
            if run.service_scope is not None:
                await self._close_services(run)
            self.working.discard(asyncio.current_task())

    async def _settled(self, run: ActiveRun, result: RunResult) -> None:
        """Tell `run`'s caller how it ended up; if it ended, free its slot (with its hooks)."""
        if not run.settled.done():  # an `invoke` caller that was cancelled cancels it
            run.settled.set_result(result)
        if result.status != RunStatus.PAUSED:
            try:
                await self.finished(run.workflow, run.row, run.run_id, result)
            except JournalError as exc:  # stopping: the end is committed, the rest waits
                _log.warning("run %s: bookkeeping after its end failed: %s", run.run_id, exc)

    def _not_driven(self, run: ActiveRun, exc: Exception) -> None:
        if self._writer.failure is None:  # else the runtime reports it, once, not per run
            _log.error("run %s could not be driven", run.run_id, exc_info=exc)
        if not run.settled.done():
            _fail(run.settled, exc)

    async def finished(
        self, registered: RegisteredWorkflow, row: int, run_id: str, result: RunResult
    ) -> None:
        """A run ended: `on_complete`, then the slot is freed, then `on_cleanup`."""
        hooks = registered.hooks
        if hooks.on_complete is not None:  # awaited only if there is one: most have none
            await self.hook(registered, row, hooks.on_complete, result, name="on_complete")
        self.admission.ended(registered.id, run_id)
        if hooks.on_cleanup is not None:
            await self.hook(registered, row, hooks.on_cleanup, name="on_cleanup")

    def announce(self, name: str, run: ActiveRun, extra: dict[str, Any]) -> None:
        """Tell `rt.on` subscribers of `name` about `run`, from a task of the runtime's."""
        if self._env.wants(name):
            self.background(self._env.notify(name, run, extra), name=f"{name}-{run.run_id}")

    def background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` as a task of the runtime's task group (owned, cancelled at stop)."""
        self._own(work, name=name)

    def _own(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self._tasks.create_task(work, name=name)
        # A run's task leaves `working` as it ends; other tasks are swept here, now and
        # then: a done callback per task costs about 5% of throughput at 10,000 runs.
        if len(self.working) >= self._sweep_at:
            self.working = {t for t in self.working if not t.done()}
            self._sweep_at = 2 * len(self.working) + SWEEP_MIN
        self.working.add(task)
        return task

    async def _close_services(self, run: ActiveRun) -> None:
        scope, run.service_scope = run.service_scope, None
        if scope is None:
            return
        await self.close_run_scope(run.workflow, run.row, scope)

    async def close_run_scope(
        self, registered: RegisteredWorkflow, row: int, scope: ServiceScope
    ) -> None:
        """Run a run scope's cleanups, record failures, and journal that it is closed."""
        writes = []
        now = self._env.clock.now_us()
        for error in await scope.close():
            message = registered.redactor.redact(f"a service cleanup failed: {error!r}")
            writes.append(ops.add_timeline(row, now, "runtime", "cleanup.failed", message=message))
        writes.append(ops.add_timeline(row, now, "runtime", "services.closed"))
        if self._writer.failure is None:  # else recovery closes them again, at least once
            self._writer.submit(writes)

    async def _begin(self, run: ActiveRun, lifecycle: str) -> None:
        if run.crash_loop is not None:  # recovery fails it: it neither prepares nor resumes
            return
        if self._env.wants(lifecycle):
            await self._env.notify(lifecycle, run, {})
        hooks = run.workflow.hooks
        name, hook = (
            ("on_prepare", hooks.on_prepare)
            if lifecycle == "run.started"
            else ("on_resume", hooks.on_resume)
        )
        if hook is not None:
            ctx = context_for(run, self._env)
            await self.hook(run.workflow, run.row, hook, ctx, name=name)

    async def hook(
        self, registered: RegisteredWorkflow, row: int, hook: Hook | None, *args: Any, name: str
    ) -> None:
        """Call a hook of `registered`; a failure is logged and recorded on the run."""
        failure = await call_hook(hook, *args, name=name, where=f"workflow {registered.id!r}")
        if failure is not None:
            message = registered.redactor.redact(failure)
            self._writer.submit(
                [
                    ops.add_timeline(
                        row, self._env.clock.now_us(), "runtime", "hook.failed", message=message
                    )
                ]
            )

    async def _execute(self, run: ActiveRun) -> RunResult | None:
        """How `run` ended or paused, once committed; None: its batch settles it later.

        Most runs need nothing once their end (or pause) commits but to be settled: no
        hook, no ``rt.on`` listener, no run services to close. Such a run's task ends as
        soon as its last writes are enqueued; a callback on their batch settles it
        (`_committed`), and until then it stays active, as if its task still waited.
        """
        outcome = await self._segment(run)
        while isinstance(outcome, PauseRequest):
            paused = self.parking.park_or_drain(run, outcome)
            if paused is None:  # a buffered event was waiting: go on at once
                outcome = await self._segment(run)
                continue
            # Before any await: a resume may come next.
            self.admission.paused(run.workflow.id, run.run_id)
            # `invoke` returns "paused" only once it is durable (its pause's own commit).
            if run.service_scope is None and not self._env.wants("run.paused"):
                ending = Ending(paused.committed, RunStatus.PAUSED, None, None, None)
                self._settle_later(run, ending)
                return None
            await asyncio.shield(paused.committed)
            result = RunResult(
                ok=True,
                status=RunStatus.PAUSED,
                run_id=run.run_id,
                state=decode_state(run.state_text),
            )
            if self._env.wants("run.paused"):
                await self._env.notify("run.paused", run, {"wait": paused.waiting})
            return result
        hooks = run.workflow.hooks
        if (
            run.service_scope is None
            and hooks.on_complete is None
            and hooks.on_cleanup is None
            and quiet(outcome, self._env)
        ):
            self._settle_later(run, outcome)
            return None
        return await settle(run, self._env, outcome)

    async def _segment(self, run: ActiveRun) -> Ending | PauseRequest:
        """Execute `run` until it pauses or ends: here, or offered to an executor."""
        offering = self.offering
        if offering is not None and not offering.takes(run, len(self.active)):
            try:
                await offering.sent()  # the offers queued before it go out first
            except asyncio.CancelledError:
                if not abort_consumed(run):
                    raise
                return aborted(run, self._env)
        elif offering is not None:
            outcome = await offering.run_elsewhere(run)
            if isinstance(outcome, PauseRequest):
                return outcome
            if isinstance(outcome, Finished):
                return end(run, self._env, outcome)
            if outcome is ABORTED or run.abort_requested:
                return aborted(run, self._env)
        return await execute(run, self._env)

    @property
    def settling(self) -> int:
        """How many runs ended (or paused) and wait for their batch's callback to settle."""
        return sum(len(runs) for runs in self._settling.values())

    def _settle_later(self, run: ActiveRun, ending: Ending) -> None:
        """Settle `run` as `ending` says once its batch commits (`_committed`).

        One callback per batch for all its runs: per run, no callback, closure or context.
        """
        run.ending = ending
        runs = self._settling.get(ending.batch)
        if runs is None:
            runs = self._settling[ending.batch] = []
            ending.batch.add_done_callback(self._batch_settled)
        runs.append(run)

    def _batch_settled(self, batch: asyncio.Future[None]) -> None:
        for run in self._settling.pop(batch, ()):
            try:
                self._committed(run, batch)
            except Exception:  # noqa: BLE001 - a bug: the batch's other runs still settle
                _log.exception("run %s could not be settled", run.run_id)

    def _committed(self, run: ActiveRun, batch: asyncio.Future[None]) -> None:
        """Settle a run whose task ended before its end (or pause) committed in `batch`.

        What `_drive` does after awaiting `settle` (or the flush of a pause), in a callback.
        """
        ending, run.ending = run.ending, None
        if ending is None:  # settled already
            return
        try:
            failure = None if batch.cancelled() else batch.exception()
            if batch.cancelled() or failure is not None:
                stopped = JournalError("the journal writer stopped")
                self._not_driven(run, failure if isinstance(failure, Exception) else stopped)
                return
            if not run.settled.done():  # an `invoke` caller that was cancelled cancels it
                run.settled.set_result(result_of(run, ending))
            if ending.status != RunStatus.PAUSED:
                try:
                    self.admission.ended(run.workflow.id, run.run_id)
                except JournalError as exc:  # stopping: the end is committed, the rest waits
                    _log.warning("run %s: bookkeeping after its end failed: %s", run.run_id, exc)
        finally:
            if self.active.get(run.run_id) is run:  # a resumed run may have taken its place
                del self.active[run.run_id]


def _fail(settled: asyncio.Future[RunResult], error: BaseException) -> None:
    settled.set_exception(error)
    settled.exception()  # runs started by events or recovery have no one awaiting them


def _active_from(unfinished: Resumable, registered: RegisteredWorkflow, index: int) -> ActiveRun:
    """A journaled run made active again, at step `index` of `registered`."""
    return ActiveRun(
        row=unfinished.row,
        run_id=unfinished.run_id,
        workflow=registered,
        trigger_id=unfinished.trigger_id,
        steps=registered.steps(unfinished.trigger_id),
        step_index=index,
        position=unfinished.position,
        state_text=unfinished.state,
        settled=asyncio.get_running_loop().create_future(),
    )


def _forked(run: ActiveRun, origin: Origin, now: int) -> list[ops.Op]:
    """What a fork journals besides its run: where it comes from (row and timeline)."""
    message = f"forked from run {origin.run_id} at step {origin.step!r}"
    data = {"run_id": origin.run_id, "step": origin.step}
    return [
        ops.set_forked(run.row, origin.run_id, origin.step),
        ops.add_timeline(run.row, now, "runtime", "run.forked", message=message, data=data),
    ]


def _not_a_crash(run: ActiveRun, step: str) -> ops.Op:
    """The count that makes the next recovery of `run` at `step` leave it as it was.

    The count may go to -1 (a step never recovered before): that recovery brings it to 0.
    """
    at = run.recovered_at
    count = at[1] if at is not None and at[0] == step else 0
    return ops.set_recoveries(run.row, step, count - 1)


def _missing(workflow_id: str) -> str:
    return (
        f"workflow {workflow_id!r} is not loaded (its file is gone or fails to load); "
        "the run continues when it returns"
    )

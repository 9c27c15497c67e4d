"""The composition root: `Runtime` wires the journal, registry, executor and recovery.

It owns one task group: the writer loop, the lease heartbeat and every run are its tasks,
so nothing outlives `stop()`. Runs are driven here; what a run does is the executor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import recovery
from .clock import Clock
from .errors import (
    JournalError,
    RunNotActive,
    RunNotFound,
    RuntimeNotStarted,
    RuntimeStopped,
)
from .executor import ActiveRun, ExecutorEnv, execute, finish_aborted
from .journal import FaultPoints, GroupCommitWriter, JournalReader, Synchronous, UnfinishedRun, ops
from .lifecycle import Handler, Lifecycle
from .model import Workflow
from .records import FINAL_STATUSES, RunInfo, RunResult, TimelineEntry, is_ok
from .registry import RegisteredWorkflow, Registry, register
from .state import StateEncodingError, encode_state

HEARTBEAT_SECONDS = 1.0
_log = logging.getLogger("orchestrator.runtime")


class Runtime:
    """A durable runtime over one journal file; use it as ``async with Runtime(db) as rt``.

    Args:
        db: The journal file (created 0600 if missing).
        synchronous: SQLite durability: ``"FULL"`` (the default: a commit survives power
            loss) or ``"NORMAL"`` (survives a process crash; the last commits may be lost
            on power loss).
        clock: The clock (tests pass a `FakeClock`).
        shutdown_grace: Seconds `stop()` lets running steps finish before cancelling them.
        max_threads: Worker threads for sync steps.
        faults: Fault points for crash tests.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] = "orchestrator.db",
        *,
        synchronous: Synchronous = "FULL",
        clock: Clock | None = None,
        shutdown_grace: float = 10.0,
        max_threads: int = 32,
        faults: FaultPoints | None = None,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.db = Path(db)
        self._clock = clock or Clock()
        self._grace = shutdown_grace
        self._writer = GroupCommitWriter(self.db, synchronous=synchronous, faults=faults)
        self._threads = ThreadPoolExecutor(max_threads, thread_name_prefix="orchestrator-step")
        self._registry = Registry()
        self._lifecycle = Lifecycle()
        self._active: dict[str, ActiveRun] = {}
        self._orphans: dict[str, list[UnfinishedRun]] = {}
        self._reader: JournalReader | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._next_row = 0
        self._state = "new"
        self._env = ExecutorEnv(
            self._writer,
            self._clock,
            self._threads,
            self._notify,
            self._lifecycle.wants,
            logging.getLogger("orchestrator.run"),
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the journal under its lease and recover unfinished runs."""
        if self._state != "new":
            raise RuntimeNotStarted("a Runtime can be started once; create a new one")
        opened = await self._writer.open()
        self._next_row = opened.max_run_row
        self._stack = contextlib.AsyncExitStack()
        try:
            self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tasks.create_task(self._writer.run(), name="journal-writer")
            self._heartbeat_task = self._tasks.create_task(self._heartbeat(), name="heartbeat")
            self._reader = await JournalReader.open(self.db)
            self._orphans = recovery.by_workflow(await self._reader.unfinished_runs())
            await self._writer.mark_ready()
        except BaseException:
            self._state = "started"
            await self.stop()
            raise
        self._state = "started"

    async def stop(self) -> None:
        """Stop: let running steps finish (up to the grace period), checkpoint, close."""
        if self._state != "started":
            return
        self._state = "stopping"
        running = [run.task for run in self._active.values() if run.task is not None]
        if running:
            await asyncio.wait(running, timeout=self._grace)
        for run in list(self._active.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._stack is not None:
            await self._stack.aclose()
        self._state = "stopped"

    async def _heartbeat(self) -> None:
        # Real time on purpose: other processes judge the lease by the wall clock.
        while self._writer.failure is None:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._writer.write([])
            except JournalError as exc:
                _log.error("journal heartbeat failed, runs cannot be recorded: %s", exc)
                return

    # -- workflows -------------------------------------------------------------------------

    async def register(self, workflow: Workflow) -> RegisteredWorkflow:
        """Register (or replace) a workflow; its unfinished runs from the journal continue."""
        self._require_started()
        if not isinstance(workflow, Workflow):
            raise TypeError(f"register() takes a Workflow, got {type(workflow).__name__}")
        registered = register(workflow)
        await self._writer.write(
            [
                ops.add_version(
                    registered.id,
                    registered.version,
                    registered.file,
                    registered.definition,
                    self._clock.now_us(),
                )
            ]
        )
        self._registry.add(registered)
        await self._adopt(registered)
        return registered

    async def deregister(self, workflow_id: str) -> None:
        """Stop new runs of a workflow; runs in progress finish on their version."""
        self._registry.remove(workflow_id)

    def has_workflow(self, workflow_id: str) -> bool:
        """Whether a workflow with that id is registered."""
        return self._registry.has(workflow_id)

    def list_workflows(self) -> list[str]:
        """Ids of the registered workflows, sorted."""
        return self._registry.ids()

    def registry(self, workflow_id: str) -> RegisteredWorkflow:
        """The registered version of a workflow: its pipelines and version."""
        return self._registry.get(workflow_id)

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(name, payload)` on a lifecycle event; returns an unsubscribe function."""
        return self._lifecycle.on(name, handler)

    # -- runs ------------------------------------------------------------------------------

    async def invoke(self, workflow_id: str, trigger_id: str, data: Any = None) -> RunResult:
        """Start a run of a workflow's pipeline with `data` as its state; wait for its end.

        Returns when the run completes or fails (or is aborted). The run belongs to the
        runtime: cancelling this call does not cancel the run.
        """
        self._require_started()
        registered = self._registry.get(workflow_id)
        steps = registered.steps(trigger_id)
        run = self._create_run(registered, trigger_id, steps, {} if data is None else data)
        return await asyncio.shield(run.settled)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:  # noqa: ASYNC109
        """Wait until a run is final (or paused) and return how it ended up."""
        self._require_started()
        async with asyncio.timeout(timeout):
            run = self._active.get(run_id)
            if run is not None:
                return await asyncio.shield(run.settled)
            while True:
                info = await self._get(run_id)
                if info.status in FINAL_STATUSES or info.status == "paused":
                    return _result_of(info)
                await asyncio.sleep(0.05)

    async def abort(self, run_id: str) -> None:
        """End a run that is not final; its status becomes ``aborted``."""
        self._require_started()
        run = self._active.get(run_id)
        if run is None:
            await self._abort_inactive(run_id)
            return
        if run.finishing:
            raise RunNotActive(f"run {run_id} is already finishing; it cannot be aborted")
        run.abort_requested = True
        if run.task is not None:
            run.task.cancel()
            await asyncio.wait([run.task])
        if not run.settled.done():  # cancelled before its first step began
            run.settled.set_result(await finish_aborted(run, self._env))

    async def _abort_inactive(self, run_id: str) -> None:
        found = await (await self._read()).run_status(run_id)
        if found is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.db}")
        row, status = found
        if status in FINAL_STATUSES:
            raise RunNotActive(
                f"run {run_id} is already {status}; only unfinished runs can be aborted"
            )
        for runs in self._orphans.values():
            runs[:] = [orphan for orphan in runs if orphan.run_id != run_id]
        await self._writer.write(
            [
                ops.set_status(
                    row, "aborted", self._clock.now_us(), error="aborted by request", code="ABORTED"
                )
            ]
        )

    async def watch(self, workflow_id: str, run_id: str) -> RunInfo | None:
        """The run as the journal has it now, or None if there is no such run."""
        self._require_started()
        info = await (await self._read()).get_run(run_id)
        return info if info is not None and info.workflow_id == workflow_id else None

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs, newest first."""
        self._require_started()
        return await (await self._read()).list_runs(status=status, workflow=workflow, limit=limit)

    async def list_all_runs(self) -> list[RunInfo]:
        """Every run in the journal, newest first."""
        return await self.list_runs(limit=-1)

    async def timeline(self, run_id: str) -> list[TimelineEntry]:
        """Everything a run did, in order."""
        self._require_started()
        entries = await (await self._read()).timeline(run_id)
        if entries is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.db}")
        return entries

    # -- internals -------------------------------------------------------------------------

    def _create_run(
        self, registered: RegisteredWorkflow, trigger_id: str, steps: list[Any], data: Any
    ) -> ActiveRun:
        self._next_row += 1
        now = self._clock.now_us()
        run = ActiveRun(
            self._next_row,
            os.urandom(16).hex(),
            registered,
            trigger_id,
            steps,
            0,
            0,
            "{}",
            asyncio.get_running_loop().create_future(),
        )
        try:
            run.state_text = encode_state(data)
        except StateEncodingError as exc:
            self._writer.enqueue(
                ops.create_run(
                    run.row,
                    run.run_id,
                    registered.id,
                    trigger_id,
                    registered.version,
                    status="running",
                    first_step=steps[0].name,
                    state="{}",
                    at=now,
                )
            )
            self._spawn(run, invalid_input=f"the run's input is invalid: {exc}")
            return run
        self._writer.enqueue(
            ops.create_run(
                run.row,
                run.run_id,
                registered.id,
                trigger_id,
                registered.version,
                status="running",
                first_step=steps[0].name,
                state=run.state_text,
                at=now,
            )
        )
        self._spawn(run)
        return run

    def _spawn(self, run: ActiveRun, invalid_input: str | None = None) -> None:
        if self._tasks is None:
            raise RuntimeNotStarted("the runtime is not started")
        self._active[run.run_id] = run
        run.task = self._tasks.create_task(
            self._drive(run, invalid_input), name=f"run-{run.run_id}"
        )
        run.task.add_done_callback(lambda _: self._active.pop(run.run_id, None))

    async def _drive(self, run: ActiveRun, invalid_input: str | None) -> None:
        try:
            if self._lifecycle.wants("run.started"):
                await self._notify("run.started", run, {})
            result = await execute(run, self._env, invalid_input=invalid_input)
        except asyncio.CancelledError:
            if not run.settled.done():
                run.settled.set_exception(
                    RuntimeStopped(
                        f"the runtime stopped before run {run.run_id} finished; it continues "
                        "from its last checkpoint when the journal is next opened"
                    )
                )
            raise
        except Exception as exc:  # noqa: BLE001 - a journal failure or a bug: keep serving
            _log.exception("run %s could not be driven", run.run_id)
            if not run.settled.done():
                run.settled.set_exception(exc)
        else:
            run.settled.set_result(result)

    async def _adopt(self, registered: RegisteredWorkflow) -> None:
        waiting = self._orphans.pop(registered.id, [])
        kept: list[UnfinishedRun] = []
        for unfinished in waiting:
            resumption = recovery.plan(unfinished, registered)
            now = self._clock.now_us()
            if resumption.step_index is None:
                kept.append(unfinished)
                self._writer.enqueue(
                    [
                        ops.set_status(
                            unfinished.row,
                            unfinished.status,
                            now,
                            error=resumption.problem,
                            code="STEP_MISSING",
                        )
                    ]
                )
                continue
            self._resume_recovered(unfinished, registered, resumption.step_index, now)
        if kept:
            self._orphans[registered.id] = kept
        await self._writer.write([])

    def _resume_recovered(
        self, unfinished: UnfinishedRun, registered: RegisteredWorkflow, step_index: int, now: int
    ) -> None:
        steps = registered.steps(unfinished.trigger_id)
        run = ActiveRun(
            unfinished.row,
            unfinished.run_id,
            registered,
            unfinished.trigger_id,
            steps,
            step_index,
            unfinished.position,
            unfinished.state,
            asyncio.get_running_loop().create_future(),
        )
        message = f"recovered after a restart; continuing from checkpoint {unfinished.position}"
        if unfinished.version != registered.version:
            message += f" on version {registered.version} (started on {unfinished.version})"
        writes = [
            ops.set_status(run.row, "running", now),
            ops.set_version(run.row, registered.version),
            ops.add_timeline(
                run.row,
                now,
                "runtime",
                "run.recovered",
                position=run.position,
                step=run.next_step,
                message=message,
            ),
        ]
        if run.next_step is not None:
            writes.append(ops.step_started(run.row, run.position, run.next_step, now))
        self._writer.enqueue(writes)
        self._spawn(run)

    async def _notify(self, name: str, run: ActiveRun, extra: dict[str, Any]) -> None:
        payload = {
            "run_id": run.run_id,
            "workflow_id": run.workflow.id,
            "trigger_id": run.trigger_id,
            **extra,
        }
        await self._lifecycle.notify(name, payload)

    async def _get(self, run_id: str) -> RunInfo:
        info = await (await self._read()).get_run(run_id)
        if info is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.db}")
        return info

    async def _read(self) -> JournalReader:
        """The reader, once this process's own writes so far have committed."""
        if self._reader is None:
            raise RuntimeNotStarted("the runtime is not started")
        await self._writer.flush()
        return self._reader

    def _require_started(self) -> None:
        if self._state != "started":
            raise RuntimeNotStarted(
                "the runtime is not running; use it inside `async with Runtime(db) as rt:`"
            )


def _result_of(info: RunInfo) -> RunResult:
    return RunResult(
        ok=is_ok(info.status),
        status=info.status,
        run_id=info.run_id,
        state=info.state,
        error=info.error,
        error_code=info.error_code,
    )

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
)
from .executor import ActiveRun, ExecutorEnv
from .journal import FaultPoints, GroupCommitWriter, JournalReader, Synchronous, ops
from .lifecycle import Handler, Lifecycle
from .model import Workflow
from .records import FINAL_STATUSES, RunInfo, RunResult, TimelineEntry, is_ok
from .registry import RegisteredWorkflow, Registry, register
from .supervisor import Supervisor

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
        self._runs: Supervisor | None = None
        self._reader: JournalReader | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
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
        try:
            opened = await self._writer.open()
        except BaseException:
            await self._writer.close()  # ends its thread; it holds no lease
            self._threads.shutdown(wait=False)
            raise
        self._stack = contextlib.AsyncExitStack()
        try:
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            tasks.create_task(self._writer.run(), name="journal-writer")
            self._heartbeat_task = tasks.create_task(self._heartbeat(), name="heartbeat")
            self._runs = Supervisor(self._env, tasks, opened.max_run_row)
            self._reader = await JournalReader.open(self.db)
            self._runs.orphans = recovery.by_workflow(await self._reader.unfinished_runs())
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
        if self._runs is not None:
            await self._runs.stop(self._grace)
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
        await self._supervisor().adopt(registered)
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
        run = self._supervisor().start_run(
            registered, trigger_id, steps, {} if data is None else data
        )
        # Not shielded: `settled` is this call's own future, and cancelling this call only
        # cancels the wait; the run itself goes on (saves a shield per run).
        return await run.settled

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:  # noqa: ASYNC109
        """Wait until a run is final (or paused) and return how it ended up."""
        self._require_started()
        async with asyncio.timeout(timeout):
            run = self._supervisor().active.get(run_id)
            if run is not None and not run.settled.cancelled():
                return await asyncio.shield(run.settled)
            while True:
                info = await self._get(run_id)
                if info.status in FINAL_STATUSES or info.status == "paused":
                    return _result_of(info)
                await asyncio.sleep(0.05)

    async def abort(self, run_id: str) -> None:
        """End a run that is not final; its status becomes ``aborted``."""
        self._require_started()
        run = self._supervisor().active.get(run_id)
        if run is None:
            await self._abort_inactive(run_id)
        else:
            await self._supervisor().abort(run)

    async def _abort_inactive(self, run_id: str) -> None:
        found = await (await self._read()).run_status(run_id)
        if found is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.db}")
        row, status = found
        if status in FINAL_STATUSES:
            raise RunNotActive(
                f"run {run_id} is already {status}; only unfinished runs can be aborted"
            )
        self._supervisor().forget_orphan(run_id)
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

    def _supervisor(self) -> Supervisor:
        if self._runs is None:
            raise RuntimeNotStarted("the runtime is not started")
        return self._runs

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

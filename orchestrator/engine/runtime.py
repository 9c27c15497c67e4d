"""The public `Runtime`: opens the journal, assembles the engine, and answers the API.

It owns one task group: the writer loop, the lease heartbeat and every run are its tasks,
so nothing outlives `stop()`. A journal that fails for good (a damaged file, a lost lease)
stops the runtime's work at once: `failure` says why, and `failed()` returns it. `Control`
holds the assembled machinery; runs are driven by the supervisor, and what a run does is
the executor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..clock import Clock
from ..define.env import Redactor
from ..define.hooks import Hook
from ..define.model import Workflow
from ..define.modes import Mode, describe
from ..define.services import Service, ServiceScope, check_graph, runtime_services
from ..errors import (
    JournalError,
    RunNotFound,
    RuntimeNotStarted,
    ValidationError,
)
from ..folder.loader import FileSource
from ..folder.names import shown
from ..folder.sync import WorkflowFolder
from ..folder.watcher import watch_folder
from ..journal import (
    FaultPoints,
    JournalQueries,
    JournalWriter,
    Opened,
    Synchronous,
    open_journal,
    ops,
)
from ..journal.retention import cutoffs_for
from ..pipeline.steps import StepThreads
from ..records import (
    FINAL_STATUSES,
    RunInfo,
    RunResult,
    RunStatus,
    TimelineEntry,
    id_problem,
    is_ok,
)
from ..redaction import SECRETS, guard_handlers
from .control import Control
from .file_events import FileEvents, JournalFileLedger
from .idle import Idleness
from .inbox import InboxPoller
from .lifecycle import Handler, Lifecycle
from .registry import RegisteredWorkflow, Registry, register
from .retention import Pruner
from .segments.offering import Offering
from .segments.serving import RunServer
from .workers import SpreadPool, StepRunner, StepServer, WorkerPool, Workers, plan_isolation
from .workers.serve import FolderIndex

HEARTBEAT_SECONDS = 1.0
STEP_THREADS = "orchestrator-step"  # the name prefix of the worker threads of sync steps
_log = logging.getLogger("orchestrator.runtime")


class Runtime:
    """A durable runtime over one journal file; use it as ``async with Runtime(db) as rt``.

    Args:
        db: The journal file (created 0600 if missing); a ``postgresql://`` URL raises
            `JournalBackendUnavailable` until that backend exists.
        synchronous: SQLite durability: ``"FULL"`` (the default: a commit survives power
            loss) or ``"NORMAL"`` (survives a process crash; the last commits may be lost
            on power loss).
        clock: The clock (tests pass a `FakeClock`).
        shutdown_grace: Seconds `stop()` lets running steps finish before cancelling them.
        max_threads: Worker threads for sync steps.
        faults: Fault points for crash tests.
        workflows_dir: A folder of workflow files to load now and reload as they change.
        max_recoveries: How often start-up recovery continues a run at the step its process
            died in (so that step starts at most ``1 + max_recoveries`` times across
            crashes); the next recovery fails the run with code ``CRASH_LOOP`` instead.
            None: no limit.
        isolate: Run sync steps in worker processes unless a step, its workflow or its
            folder's ``orchestrator.toml`` says otherwise (``orchestrator up`` passes True).
        workers: How the worker processes of isolated steps are kept (`Workers`).
        standby: On a journal several daemons share (PostgreSQL), wait in `start` while
            another daemon runs it, and take over once it stops or its heartbeat goes stale,
            instead of failing with `JournalLocked` (``orchestrator up`` passes True there).
        run_segments: On such a journal, whole runs past the active daemon's share execute
            on the daemons standing by (run segments). False: this daemon neither offers
            them when active nor executes them standing by; isolated steps still spread.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] = "orchestrator.db",
        *,
        workflows: Iterable[Workflow] = (),
        env: Mapping[str, str] | None = None,
        services: Sequence[Service] = (),
        secrets: Iterable[str] = (),
        synchronous: Synchronous = "FULL",
        clock: Clock | None = None,
        shutdown_grace: float = 10.0,
        max_threads: int = 32,
        faults: FaultPoints | None = None,
        workflows_dir: str | os.PathLike[str] | None = None,
        max_recoveries: int | None = 3,
        isolate: bool = False,
        workers: Workers | None = None,
        standby: bool = False,
        run_segments: bool = True,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if max_recoveries is not None and (
            isinstance(max_recoveries, bool)
            or not isinstance(max_recoveries, int)
            or max_recoveries < 0
        ):
            raise ValueError(f"max_recoveries must be an int >= 0 or None, got {max_recoveries!r}")
        self._max_recoveries = max_recoveries
        self._journal = open_journal(db)  # a backend that is not available fails here
        if not isinstance(standby, bool) or (standby and not self._journal.shared):
            raise ValueError(
                f"standby takes True only on a journal several daemons share (a postgresql://"
                f" URL); got {standby!r} for {self._journal.location}"
            )
        self._standby = standby
        if not isinstance(run_segments, bool):
            raise ValueError(f"run_segments takes True or False, got {run_segments!r}")
        self._run_segments = run_segments
        self.db = Path(db)
        self._initial = list(workflows)
        # Read once: later changes to os.environ do not move a running runtime's env.
        self._runtime_env = dict(os.environ if env is None else env)
        self._secrets = tuple(secrets)
        # What this runtime added to `SECRETS` (each set once: reloads add nothing new).
        self._secret_tokens: dict[frozenset[str], int] = {}
        self._global_services = ServiceScope(
            runtime_services(services), parent=None, scope="global"
        )
        self._workflow_scopes: dict[str, ServiceScope] = {}
        self._clock = clock or Clock()
        self._grace = shutdown_grace
        self._writer: JournalWriter = self._journal.writer(synchronous=synchronous, faults=faults)
        self._threads = StepThreads(max_threads, STEP_THREADS)
        if not isinstance(isolate, bool):
            raise ValueError(f"isolate must be True or False, got {isolate!r}")
        if workers is not None and not isinstance(workers, Workers):
            raise ValueError(f"workers takes Workers(...), got {workers!r}")
        self._isolate = isolate
        self._workers = WorkerPool(workers or Workers())
        self._pruner = Pruner(self._journal, self._clock)
        self._registry = Registry()
        self._lifecycle = Lifecycle()
        self._control: Control | None = None
        self._reader: JournalQueries | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._background: list[asyncio.Task[None]] = []
        # Stopped after the runs (the grace period): the lease's heartbeat, or a standby
        # takes the runs over while their steps still run here; the loop of steps offered.
        self._after_runs: list[asyncio.Task[None]] = []
        self._offering: asyncio.Task[None] | None = None
        self._state = "new"
        self._folder = None if workflows_dir is None else WorkflowFolder(Path(workflows_dir), self)
        self._file_events: FileEvents | None = None
        self._idleness: Idleness | None = None
        self._detach_clock: Callable[[], None] | None = None
        self._failure: JournalError | None = None
        self._failed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the journal under its lease, recover, register `workflows`, start routing.

        With ``standby=True``, first wait while another daemon runs the journal.
        """
        if self._state != "new":
            raise RuntimeNotStarted("a Runtime can be started once; create a new one")
        self._know_secrets(Redactor(self._runtime_env, extra_keys=self._secrets).values)
        guard_handlers(logging.getLogger("orchestrator"))
        try:
            opened = await self._open_writer()
        except BaseException:
            await self._writer.close()  # ends its thread; it holds no lease
            self._threads.shutdown(wait=False)
            self._forget_secrets()
            raise
        self._stack = contextlib.AsyncExitStack()
        self._state = "started"
        try:
            await self._assemble(opened.max_run_row)
        except BaseException:
            await self.stop()
            raise

    async def _open_writer(self) -> Opened:
        """Open the writer; a standby serves offered steps and segments while it waits."""
        step_jobs = self._journal.step_jobs() if self._standby else None
        run_tasks = self._journal.run_tasks() if self._standby and self._run_segments else None
        identity = self._writer.identity
        if step_jobs is None or identity is None or self._folder is None:
            return await self._writer.open(standby=self._standby)
        index = FolderIndex(self._folder.path, self._runtime_env, self._secrets)
        servers = [
            StepServer(
                step_jobs,
                self._folder.path,
                self._workers,
                token=identity.token,
                runtime_env=self._runtime_env,
                clock=self._clock,
                secret_keys=self._secrets,
                index=index,
            ).run()
        ]
        scopes: dict[str, ServiceScope] = {}
        if run_tasks is not None:
            prepare = functools.partial(self._prepare_elsewhere, scopes)
            server = RunServer(
                run_tasks,
                index,
                writer_for=self._journal.executor_writer,
                prepare=prepare,
                standby_token=identity.token,
                clock=self._clock,
                threads=self._threads,
                workers=self._workers,
            )
            servers.append(server.run())
        # Owned here, not by a task group: a group would wrap the writer's own error
        # (an unreachable server, a newer schema) in an exception group.
        serving = [asyncio.create_task(work, name="serve-standby") for work in servers]
        try:
            return await self._writer.open(standby=True)
        finally:
            for task in serving:
                task.cancel()
            for ended in await asyncio.gather(*serving, return_exceptions=True):
                if isinstance(ended, Exception):  # a bug: serving stopped, standing by did not
                    _log.error("serving the active daemon failed", exc_info=ended)
            index.close()
            for scope in scopes.values():
                for error in await scope.close():
                    _log.error("a service cleanup failed: %r", error)

    def _prepare_elsewhere(
        self, scopes: dict[str, ServiceScope], source: FileSource, workflow: Workflow
    ) -> RegisteredWorkflow:
        """A workflow of a file as an executor runs its segments (its own service scope)."""
        registered = self._prepare(workflow, source=source)
        scope = scopes.setdefault(
            f"{workflow.id}@{source.digest}",
            ServiceScope(
                {service.id: service for service in workflow.services},
                parent=self._global_services,
                scope="workflow",
            ),
        )
        return dataclasses.replace(registered, service_scope=scope)

    def _step_runner(self) -> StepRunner:
        """This daemon's workers; on a shared journal, and the standbys' too."""
        step_jobs = self._journal.step_jobs()
        if step_jobs is None:
            return self._workers
        return SpreadPool(
            self._workers, step_jobs, identity=lambda: self._writer.identity, clock=self._clock
        )

    async def _assemble(self, max_run_row: int) -> None:
        assert self._stack is not None
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        tasks.create_task(self._write(), name="journal-writer")
        self._after_runs.append(tasks.create_task(self._heartbeat(), name="heartbeat"))
        reader = self._reader = await self._journal.open_reader()
        max_wait, max_seq = await reader.max_ids()
        workers = self._step_runner()
        if isinstance(workers, SpreadPool):
            self._after_runs.append(tasks.create_task(workers.run(), name="spread-steps"))
        run_tasks = self._journal.run_tasks() if self._folder is not None else None
        control = self._control = Control(
            writer=self._writer,
            reader=reader,
            clock=self._clock,
            registry=self._registry,
            lifecycle=self._lifecycle,
            threads=self._threads,
            tasks=tasks,
            max_run_row=max_run_row,
            max_wait_id=max_wait,
            max_seq=max_seq,
            last_ticks=await reader.schedule_ticks(),
            max_recoveries=self._max_recoveries,
            workers=workers,
            commands=self._journal.commands,
            switches=await reader.switches(),
        )
        if run_tasks is not None:
            offering = control.runs.offering = Offering(
                run_tasks,
                writer=self._writer,
                reader=reader,
                clock=self._clock,
                identity=lambda: self._writer.identity,
                wants=control.env.wants,
                offers=self._run_segments,  # without, it still fences an old one's executors
            )
            # Not in `_background`: it stops after the runs do (their executors answer).
            self._offering = tasks.create_task(offering.run(), name="offer-segments")
        self._writer.enqueue(ops.reset_workflows())
        await self._apply_switches(control, reader)
        await control.restore()
        control.runs.hold_recovered()
        self._background.append(tasks.create_task(control.timers.run(), name="timers"))
        ledger = JournalFileLedger(self._writer, reader, self._file_created, self._clock.now_us)
        self._file_events = FileEvents(ledger)
        self._background.append(tasks.create_task(self._file_events.run(), name="file-events"))
        for workflow in self._initial:
            await self._register(control, workflow)
        await self._writer.flush()  # one commit for all their versions and triggers
        if self._folder is not None:
            await self._load_folder(self._folder, tasks)
            control.runs.note_missing(self._registry.has)
        poller = InboxPoller(
            reader,
            control.bus,
            control.apply_command,
            on_corrupt=self._fail,
            here=control.keys.here,
        )
        await self._apply_inbox(poller)
        await self._fenced_before()
        control.runs.release_recovered()
        self._background.append(tasks.create_task(poller.run(), name="inbox"))
        self._idleness = Idleness(control, poller, self._file_events, self._writer, self._clock)
        self._detach_clock = self._clock.attach(self.idle)  # a fake clock's advance settles us
        if self._isolate or self._registry.isolates():
            self._background.append(tasks.create_task(self._workers.warm(), name="warm-workers"))
        self._background.append(tasks.create_task(self._workers.tend(), name="tend-workers"))
        if self._folder is not None:
            folder = self._folder
            keep = self._pruner.keep(lambda: folder.retention)
            self._background.append(tasks.create_task(keep, name="retention"))
        await self._writer.mark_ready()

    async def _fenced_before(self) -> None:
        """Wait until the executors of the daemon before this one are fenced (or none).

        A run recovered from it may still execute on one of them, its writes landing,
        until the offering's start fences them (`Offering.fenced_before`).
        """
        offering = None if self._control is None else self._control.runs.offering
        task = self._offering
        if offering is None or task is None or offering.fenced_before.is_set():
            return
        _log.warning(
            "run segments: recovered runs wait until the executors of the daemon before"
            " this one are fenced"
        )
        fenced = asyncio.ensure_future(offering.fenced_before.wait())
        try:
            await asyncio.wait([fenced, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            fenced.cancel()

    async def _apply_inbox(self, poller: InboxPoller) -> None:
        """Route events and apply commands written while no process held the journal.

        Recovered runs are held until then: an abort written while the daemon was down ends
        its run before that run's step starts again.
        """
        try:
            await poller.drain()
        except JournalError as exc:  # the poller takes what is left on its first tick
            _log.warning("reading the inbox at start failed, retrying later: %s", exc)

    async def _apply_switches(self, control: Control, reader: JournalQueries) -> None:
        """Apply the disables and enables written while no process held the journal.

        Before any workflow is registered: a workflow disabled while the daemon was down
        starts nothing once it loads (no schedule catch-up, no run from the events written
        meanwhile, even those written before the disable).
        """
        for command in await reader.pending_switches():
            await control.apply_command(command)
        await self._writer.flush()

    async def _load_folder(self, folder: WorkflowFolder, tasks: asyncio.TaskGroup) -> None:
        if not folder.path.is_dir():
            raise ValidationError(
                f"workflows folder {folder.path} does not exist or is not a folder; "
                "create it or pass another folder"
            )
        # Watch first, so a change made while the folder loads is not missed.
        watch = tasks.create_task(watch_folder(folder.given, folder.sync), name="watch-folder")
        self._background.append(watch)
        await folder.sync()

    def _file_created(self, event_type: str, data: dict[str, Any]) -> bool:
        if self._control is None or self._state != "started":
            return False
        self._control.emit(event_type, data, source="file")
        return True

    async def stop(self) -> None:
        """Stop: let running steps finish (up to the grace period), checkpoint, close."""
        if self._state != "started":
            return
        self._state = "stopping"
        self._halt()
        if self._control is not None:
            # After a journal failure nothing a step does can be recorded: no grace.
            await self._control.runs.stop(self._grace if self._failure is None else 0)
        if self._offering is not None:
            self._offering.cancel()
            await asyncio.gather(self._offering, return_exceptions=True)
        for task in self._after_runs:
            task.cancel()
        await asyncio.gather(*self._after_runs, return_exceptions=True)
        for scope in [*self._workflow_scopes.values(), self._global_services]:
            for error in await scope.close():
                _log.error("a service cleanup failed at stop: %r", error)
        await self._workers.close()
        await self._writer.close()
        if self._failure is None and self._writer.failure is not None:
            self._failure = self._writer.failure  # the last writes could not be committed
        if self._reader is not None:
            await self._reader.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._stack is not None:
            await self._stack.aclose()
        self._forget_secrets()
        self._state = "stopped"

    def _know_secrets(self, values: frozenset[str]) -> None:
        """Mask `values` everywhere (journal, logs) while this runtime runs."""
        if values and values not in self._secret_tokens:
            self._secret_tokens[values] = SECRETS.add(values)

    def _forget_secrets(self) -> None:
        for token in self._secret_tokens.values():
            SECRETS.discard(token)
        self._secret_tokens.clear()

    def _halt(self) -> None:
        """Start nothing more: no new events, commands, timers or queued runs."""
        if self._detach_clock is not None:
            self._detach_clock()
            self._detach_clock = None
        for task in self._background:
            task.cancel()
        self._pruner.stop()
        if self._control is not None:
            self._control.admission.stop()

    @property
    def failure(self) -> JournalError | None:
        """Why the journal failed for good (this runtime then stops working), or None."""
        return self._failure

    async def failed(self) -> JournalError:
        """Wait until the journal fails for good (a damaged file, a lost lease); say why."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    def _fail(self, error: JournalError) -> None:
        """The journal failed for good: start no step, cancel running ones; `stop` follows."""
        if self._failure is not None:
            return
        self._failure = error
        self._failed.set()
        if self._state != "started":
            return
        self._halt()
        if self._control is not None:
            for run in list(self._control.runs.active.values()):
                if run.task is not None:
                    run.task.cancel()

    async def _write(self) -> None:
        await self._writer.run()
        if self._writer.failure is not None:
            self._fail(self._writer.failure)

    async def _heartbeat(self) -> None:
        # Real time on purpose: other processes judge the lease by the wall clock.
        while self._writer.failure is None:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._writer.write([])
            except JournalError:
                return  # the writer has failed: `_write` reports it

    # -- workflows -------------------------------------------------------------------------

    async def register(
        self,
        workflow: Workflow,
        *,
        mode: Mode | None = None,
        on_prepare: Hook | None = None,
        on_complete: Hook | None = None,
        on_resume: Hook | None = None,
        on_cleanup: Hook | None = None,
        on_dispatch: Hook | None = None,
    ) -> RegisteredWorkflow:
        """Register (or replace) a workflow; its unfinished runs from the journal continue.

        Events written by other processes are routed from the moment the runtime starts:
        pass workflows as ``Runtime(workflows=[...])`` to have their triggers in place then.
        """
        hooks = {
            "on_prepare": on_prepare,
            "on_complete": on_complete,
            "on_resume": on_resume,
            "on_cleanup": on_cleanup,
            "on_dispatch": on_dispatch,
        }
        registered = await self._register(self._require_control(), workflow, mode, hooks)
        await self._writer.flush()  # its version and triggers are in the journal
        return registered

    async def _register(
        self,
        control: Control,
        workflow: Workflow,
        mode: Mode | None = None,
        hooks: Mapping[str, Hook | None] | None = None,
    ) -> RegisteredWorkflow:
        """Register a workflow; its writes are enqueued, not yet committed."""
        if not isinstance(workflow, Workflow):
            raise TypeError(f"register() takes a Workflow, got {type(workflow).__name__}")
        registered = self._prepare(workflow, mode=mode, hooks=hooks)
        await self._activate(control, registered)
        return registered

    def _prepare(
        self,
        workflow: Workflow,
        *,
        mode: Mode | None = None,
        hooks: Mapping[str, Hook | None] | None = None,
        source: FileSource | None = None,
    ) -> RegisteredWorkflow:
        """Check and describe a workflow for registration; nothing changes yet."""
        registered = register(
            workflow,
            mode=mode,
            runtime_env=self._runtime_env,
            secrets=self._secrets,
            hooks=hooks,
            file=None if source is None else str(source.path),
            version=None if source is None else source.digest,
        )
        self._know_secrets(registered.redactor.values)  # before anything about it is written
        isolated = plan_isolation(
            workflow,
            version=registered.version,
            env=registered.env,
            source=source,
            default=self._isolate,
        )
        registered = dataclasses.replace(registered, isolated=isolated)
        check_graph(
            workflow.services,
            available=self._global_services.ids(),
            label=f"workflow {workflow.id!r}",
        )
        return registered

    async def _activate(self, control: Control, registered: RegisteredWorkflow) -> None:
        workflow = registered.workflow
        scope = self._workflow_scopes.setdefault(
            workflow.id,
            ServiceScope(
                {service.id: service for service in workflow.services},
                parent=self._global_services,
                scope="workflow",
            ),
        )
        registered = dataclasses.replace(registered, service_scope=scope)
        now = self._clock.now_us()
        self._writer.enqueue(
            [
                ops.add_version(
                    registered.id, registered.version, registered.file, registered.definition, now
                ),
                ops.workflow_loaded(
                    registered.id,
                    registered.version,
                    registered.file,
                    json.dumps(registered.describe_triggers()),
                    registered.redactor.redact(describe(registered.mode)),
                    now,
                ),
            ]
        )
        previous = control.lookup(registered.id)
        self._registry.add(registered)
        if self._file_events is not None:  # the new version's watches first: a kept one stays
            self._file_events.watch(registered.file_watches().values())
            if previous is not None:
                self._file_events.unwatch(previous.file_watches().values())
        await control.registered(registered)

    async def register_file(self, source: FileSource, workflows: list[Workflow]) -> None:
        """Register every workflow of one version of a file, or none (raising why)."""
        control = self._require_control()
        prepared = [self._prepare(w, source=source) for w in workflows]
        for registered in prepared:
            await self._activate(control, registered)
        await self._writer.flush()  # one commit for the file's versions and triggers

    def report_load(self, path: Path, line: int | None, message: str | None) -> None:
        """Journal that a file failed to load (or, `message` None, that it loads again)."""
        text = None if message is None else SECRETS.redact(message)
        self._writer.enqueue([ops.load_error(shown(path), line, text, self._clock.now_us())])

    async def deregister(self, workflow_id: str) -> None:
        """Stop new runs of a workflow; runs in progress finish on their version."""
        control = self._require_control()
        removed = self._registry.remove(workflow_id)
        control.deregistered(workflow_id)
        self._writer.enqueue([ops.workflow_removed(workflow_id, self._clock.now_us())])
        if self._file_events is not None:
            self._file_events.unwatch(removed.file_watches().values())
        scope = self._workflow_scopes.pop(workflow_id, None)
        if scope is not None:
            for error in await scope.close():
                _log.error("a cleanup of workflow %s's services failed: %r", workflow_id, error)

    def has_workflow(self, workflow_id: str) -> bool:
        """Whether a workflow with that id is registered."""
        return self._registry.has(workflow_id)

    def list_workflows(self) -> list[str]:
        """Ids of the registered workflows, sorted."""
        return self._registry.ids()

    def registry(self, workflow_id: str) -> RegisteredWorkflow:
        """The registered version of a workflow: its pipelines, triggers and version."""
        return self._registry.get(workflow_id)

    def active_runs(self) -> int:
        """How many runs this runtime is executing now (not paused or queued ones)."""
        return len(self._control.runs.active) if self._control is not None else 0

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(name, payload)` on a lifecycle event; returns an unsubscribe function."""
        return self._lifecycle.on(name, handler)

    async def disable(self, workflow_id: str, trigger: str | None = None) -> None:
        """Stop a workflow (or one trigger of it) from starting runs, until `enable`.

        Journaled: it holds across restarts and reloads of the workflow's file, and a
        workflow not registered (yet) may be disabled. While disabled, events still are
        journaled but start no run of it (not even later), schedule ticks are skipped, and
        `invoke` raises `WorkflowDisabled`. Paused runs still resume, and runs already
        queued behind the workflow's mode still run. Disabling twice is fine.

        Raises:
            TriggerNotFound: The workflow is registered and has no trigger `trigger`.
        """
        await self._switch(workflow_id, trigger, enabled=False)

    async def enable(self, workflow_id: str, trigger: str | None = None) -> None:
        """Let a disabled workflow (or one trigger of it) start runs again.

        A schedule resumes at its next tick after now: ticks missed while disabled are not
        caught up. Enabling what is enabled is fine.

        Raises:
            TriggerNotFound: The workflow is registered and has no trigger `trigger`.
        """
        await self._switch(workflow_id, trigger, enabled=True)

    async def _switch(self, workflow_id: str, trigger: str | None, *, enabled: bool) -> None:
        control = self._require_control()
        for value, what in ((workflow_id, "workflow"), (trigger, "trigger")):
            problem = None if value is None and what == "trigger" else id_problem(value, what)
            if problem is not None:
                raise ValidationError(problem)
        await self._writer.write(control.switch_writes(workflow_id, trigger, enabled))

    # -- runs and events -------------------------------------------------------------------

    async def invoke(
        self, workflow_id: str, trigger_id: str, data: Any = None, *, key: str | None = None
    ) -> RunResult:
        """Start a run of a workflow's pipeline with `data` as its state; wait for it.

        Returns when the run completes, fails, pauses or is aborted. A trigger's `where`
        does not apply (it filters events). The run belongs to the runtime: cancelling
        this call does not cancel the run.

        With an idempotency `key` (at most 256 characters) that an earlier `invoke` used,
        here, in another process or before a restart, no run starts: this waits for the
        first run and returns its result. The key is journaled with the run it started.
        """
        control = self._require_control()
        if key is not None:
            return await self._invoke_keyed(control, workflow_id, trigger_id, data, key)
        # Not shielded: `settled` is this call's own future, and cancelling this call only
        # cancels the wait; the run itself goes on (saves a shield per run).
        return await control.invoke(workflow_id, trigger_id, data).settled

    async def _invoke_keyed(
        self, control: Control, workflow_id: str, trigger_id: str, data: Any, key: str
    ) -> RunResult:
        """`invoke` with a key: the first run's result, or a new run's if it was pruned."""
        pruned = None
        while True:
            run_id = await control.invoke_keyed(workflow_id, trigger_id, data, key)
            result = await self._first_run(control, run_id)
            if result is not None:
                return result
            if run_id == pruned:  # a key left by an older prune, without its run
                raise ValidationError(
                    f"idempotency key {key!r} names run {run_id}, which is no longer in the "
                    "journal; use another key"
                )
            pruned = run_id  # the prune took the key with its run: claim it again

    async def _first_run(self, control: Control, run_id: str) -> RunResult | None:
        """How the run an idempotency key named settles, wherever it was invoked.

        None when the run was pruned meanwhile (it ended, and neither it nor its
        command is left).
        """
        settling = control.settling.get(run_id)
        if settling is not None and not settling.cancelled():
            # Shared by every call with the key: one caller's cancel is not the others'.
            return await asyncio.shield(settling)
        reader = await self._read()
        while await reader.get_run(run_id) is None:  # queued by another process, not applied
            command = await reader.command_outcome(run_id)
            if command is None or command.outcome == "ok":
                return None
            if command.outcome is not None:
                raise ValidationError(f"run {run_id} was never started: {command.outcome}")
            await asyncio.sleep(0.05)
        return await self.wait(run_id)

    async def emit(self, event_type: str, data: Any = None, *, key: str | None = None) -> str:
        """Journal an event and route it; returns its id once it is committed.

        One event can start runs (matching triggers) and resume paused runs (matching
        waits); events matching waits registered early are buffered for them.

        With an idempotency `key` (at most 256 characters) that an earlier `emit` used,
        here, in another process or before a restart, nothing is emitted: the first
        event's id is returned. The key is journaled with its event.
        """
        control = self._require_control()
        if key is not None:
            return await control.emit_keyed(event_type, data, key=key)
        return await control.emit_committed(event_type, data)

    async def resume(self, run_id: str, patch: Any = None) -> None:
        """Merge `patch` into a paused run's state and continue with its next step."""
        writes = await self._require_control().resume_writes(_checked_run_id(run_id), patch)
        await self._writer.write(writes)

    async def signal(self, run_id: str, patch: Any) -> None:
        """Merge `patch` into an active (running or paused) run without resuming it."""
        writes = await self._require_control().signal_writes(_checked_run_id(run_id), patch)
        await self._writer.write(writes)

    async def abort(self, run_id: str) -> None:
        """End a run that is not final; its status becomes ``aborted``."""
        await self._require_control().abort(_checked_run_id(run_id))

    async def retry(self, run_id: str, patch: Any = None) -> RunResult:
        """Continue a failed or aborted run at the step it stopped at; wait for it.

        The same run goes on from its last checkpoint (`patch` merged into its state) on
        the workflow's current version, so a run that failed on a bug finishes on the
        fixed file; the steps before are not run again. It passes through the workflow's
        mode like any start (it may be queued), its crash-loop count starts again, and its
        timeline keeps the attempt that ended, then ``run.retried``. Returns as `invoke`
        does: when the run completes, fails, pauses or is aborted. It first waits until
        this runtime has handled the end of the run (its hooks), so a hook or an `on`
        handler of that end must call it from a task of its own (`asyncio.create_task`).

        Raises:
            RunNotFound: No such run.
            RunNotActive: The run is not ``failed`` or ``aborted`` (or, called from its own
                end's hook or handler, still finishing).
            WorkflowNotFound: Its workflow is not loaded now.
            StepNotFound: Its workflow no longer has the step it stopped at.
            WorkflowBusy: The workflow's mode would drop, reject or signal it now.
        """
        control = self._require_control()
        settled = await control.retry(_checked_run_id(run_id), patch)
        return await settled

    async def fork(self, run_id: str, from_step: str | None = None, patch: Any = None) -> str:
        """Start a new run from a run's state before `from_step`; returns the new run's id.

        The new run has the same workflow and trigger, starts at `from_step` (a step name;
        default the first step) with the state the run had before that step (`patch`
        merged), runs on the workflow's current version through its mode, and records
        ``forked_from`` (``{"run_id", "step"}``). Any run may be forked, in any status.
        Returns once the new run is journaled (under ``SingletonLoop(on_busy="signal")`` a
        busy workflow takes the state as a signal instead: the active run's id is returned).

        Raises:
            RunNotFound: No such run.
            WorkflowNotFound: Its workflow is not loaded now.
            StepNotFound: The pipeline has no such step (the message lists its steps), or
                the run never reached it.
        """
        control = self._require_control()
        dispatched = await control.fork(_checked_run_id(run_id), from_step, patch)
        await self._writer.flush()
        return dispatched.run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:  # noqa: ASYNC109
        """Wait until a run is final or paused and return how it ended up."""
        control, run_id = self._require_control(), _checked_run_id(run_id)
        async with asyncio.timeout(timeout):
            while True:
                run = control.runs.active.get(run_id)
                if run is not None and not run.settled.cancelled():
                    result = await asyncio.shield(run.settled)
                    if result.status != RunStatus.PAUSED or run_id in control.parking.paused:
                        return result
                    continue
                info = await self._get(run_id)
                if info.status in FINAL_STATUSES or info.status == RunStatus.PAUSED:
                    return _result_of(info)
                await asyncio.sleep(0.05)

    async def idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once this runtime has nothing left to do until something outside happens.

        Idle means: no step or hook is running (one asleep on a `FakeClock` waits for the
        test to move time, so it counts as idle), every journal write is committed, no
        timer is due, and every event or command written by another process has been
        routed or applied. Paused runs, runs queued behind their mode and recovered runs
        waiting for their workflow are idle. Watched files (workflow files, `FileTrigger`
        folders) are outside this: a file written a moment ago may not have been seen yet;
        but a `FileTrigger` watch that has just started has scanned its folder.

        Raises:
            TimeoutError: Still busy after `timeout` seconds; the message says with what.
        """
        self._require_control()
        assert self._idleness is not None  # set before the runtime is ready
        await self._idleness.wait(timeout)

    async def watch(self, workflow_id: str, run_id: str) -> RunInfo | None:
        """The run as the journal has it now, or None if there is no such run."""
        self._require_started()
        info = await (await self._read()).get_run(_checked_run_id(run_id))
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
        entries = await (await self._read()).timeline(_checked_run_id(run_id))
        if entries is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.db}")
        return entries

    async def prune(
        self,
        older_than: float | str,
        statuses: Iterable[str] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, int]:
        """Delete final runs that ended more than `older_than` seconds ago; the counts.

        `older_than` is seconds, or a duration such as ``"30d"``. `statuses` limits it to
        some final statuses (default: all; events routed to no run, commands other
        processes wrote that were applied, and timeline rows of no run are then swept too).
        With each run go its checkpoints, timeline, waits, routes, its idempotency key
        (which may then start a new run) and the events no remaining run needs; runs that
        have not ended are never touched. It deletes in small transactions beside this
        runtime's writer, then gives the space back. Returns counts: ``runs``,
        ``events``, ``checkpoints``, ``timeline``, ``waits``, ``wait_buffer``, ``routes``,
        ``recoveries``, ``keys``, ``commands`` (and ``pages_freed``).

        Raises:
            ValidationError: A bad duration, or a status that is not final.
        """
        self._require_started()
        try:
            cutoffs, events = cutoffs_for(self._clock.now_us(), older_than, statuses)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        await self._writer.flush()  # what this runtime ended so far is in the journal
        return await self._pruner.prune(cutoffs, events, dry_run=dry_run)

    # -- internals -------------------------------------------------------------------------

    async def _get(self, run_id: str) -> RunInfo:
        info = await (await self._read()).get_run(run_id)
        if info is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.db}")
        return info

    async def _read(self) -> JournalQueries:
        """The reader, once this process's own writes so far have committed."""
        if self._reader is None:
            raise RuntimeNotStarted("the runtime is not started")
        await self._writer.flush()
        return self._reader

    def _require_control(self) -> Control:
        if self._state != "started" or self._control is None:
            raise RuntimeNotStarted(
                "the runtime is not running; use it inside `async with Runtime(db) as rt:`"
            )
        return self._control

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


def _checked_run_id(run_id: object) -> str:
    """A run id, or a `ValidationError` that says what to pass instead."""
    if isinstance(run_id, str):
        return run_id
    if isinstance(run_id, RunResult | RunInfo):
        hint = f"; pass its .run_id ({run_id.run_id!r})"
    else:
        hint = " (the run_id of what invoke returns, or of list_runs)"
    raise ValidationError(f"a run id must be a string, got {type(run_id).__name__}{hint}")

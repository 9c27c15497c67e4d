"""An executor's side: a daemon standing by executes the run segments it claims.

While it stands by, a daemon enlists as an executor (a row of its own in `standbys`, under
a new token each time), claims offered run tasks of the files its folder loads (by
digest), rebuilds each run from its task and executes the segment with the same
`executor.run_segment` the coordinator uses, its own services and workers, and its own
writer (`JournalBackend.executor_writer`: every batch fenced by the executor's row). How
the segment came out is the task's reply, written once its last checkpoint committed.

Signals and aborts arrive as patches of its task. A step that registers a wait ahead
(``ctx.pause_service``, whose waits only the coordinator routes to) is stopped
(`StepElsewhere`) and the run handed back, that step to run again there. A task
withdrawn (cancelled, or taken by a new coordinator) is stopped without a reply. Fenced
(its row judged gone), the executor stops every segment and enlists anew; journal trouble
never stops a standby: it waits and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ...clock import Clock
from ...define.conditions import Conditions
from ...define.model import Workflow
from ...define.waits import PauseRequest, Wait
from ...errors import JournalError, JournalLocked
from ...folder.loader import FileSource
from ...journal import JournalWriter, RunTask, RunTasks, ops
from ...journal.liveness import HOST
from ...pipeline.steps import StepElsewhere
from ..executor import ActiveRun, ExecutorEnv, Finished, abort_consumed, run_segment
from ..parking import signalled
from ..registry import RegisteredWorkflow
from ..workers import StepRunner
from ..workers.pacing import Backoff, news_or
from ..workers.serve import FolderIndex
from . import wire
from .replying import Replier

_log = logging.getLogger("orchestrator.runtime")

BY = f"pid {os.getpid()} on {HOST}"
NEWS_WAIT = 0.5  # seconds between looks at the journal without a notification
RENEW_EVERY = 0.5  # seconds between renewals of the executor's row
SEGMENTS = 1000  # segments an executor runs at once at most
REPLY_PATIENCE = 5.0  # seconds a stopping executor spends handing its runs back

Prepare = Callable[[FileSource, Workflow], RegisteredWorkflow]


@dataclass(eq=False)
class _Served:
    task: RunTask
    run: ActiveRun
    worker: asyncio.Task[None] | None = None
    back: bool = False  # a step needs the coordinator: hand the run back
    signals: int = 0  # the highest signal number merged
    reply: dict[str, Any] | None = None  # made, not written yet


class _NoWaitsHere:
    """The pause service of a run executed here: a wait ahead hands the run back."""

    def __init__(self, served: dict[int, _Served]) -> None:
        self._served = served  # by run row

    def register_wait(self, row: int, run_id: str, event: str, conditions: Conditions) -> Wait:
        served = self._served.get(row)
        if served is not None:
            served.back = True
        raise StepElsewhere(f"run {run_id}: waits ahead are registered on the coordinator")

    def cancel_wait(self, wait: Wait) -> None:
        del wait  # never registered here

    def release(self, row: int) -> list[ops.Op]:
        del row
        return []


class RunServer:
    """Claims run tasks, executes their segments, replies; until cancelled."""

    def __init__(
        self,
        tasks: RunTasks,
        index: FolderIndex,
        *,
        writer_for: Callable[[str], JournalWriter | None],
        prepare: Prepare,
        standby_token: str,
        clock: Clock,
        threads: Executor,
        workers: StepRunner | None,
        capacity: int = SEGMENTS,
    ) -> None:
        self._tasks = tasks
        self._index = index
        self._writer_for = writer_for
        self._prepare = prepare
        self._standby_token = standby_token
        self._clock = clock
        self._threads = threads
        self._workers = workers
        self._capacity = capacity
        self._served: dict[int, _Served] = {}  # by task id
        self._by_row: dict[int, _Served] = {}
        self._registered: dict[tuple[str, str], RegisteredWorkflow] = {}
        self._room = asyncio.Event()
        self._waits = _NoWaitsHere(self._by_row)
        self._writer: JournalWriter | None = None  # while enlisted
        self.executed = 0  # segments replied to (for tests and the bench)

    async def run(self) -> None:
        """Serve until cancelled, enlisting anew after each fence."""
        backoff = Backoff()
        try:
            while True:
                try:
                    await self._tasks.open()
                    await self._serve_enlisted(backoff)
                except JournalError as exc:
                    # Once is quiet: a new journal's schema may be migrating.
                    if isinstance(exc, JournalLocked) or backoff.failures == 1:
                        _log.warning("executing run segments: %s; trying again", exc)
                    await self._tasks.close()
                    await backoff.pause()
        finally:
            await self._tasks.close()

    async def _serve_enlisted(self, backoff: Backoff) -> None:
        """Enlist under a new token, open a writer, serve until fenced or cancelled.

        Its tasks (the writer's, one per segment) are owned here, not by a task group: a
        group would wrap the fence's `JournalLocked` in an exception group.
        """
        token = uuid.uuid4().hex
        writer = self._writer_for(token)
        if writer is None:  # a journal without executors: nothing to serve, ever
            await asyncio.Event().wait()
            return
        await self._tasks.enlist(token=token, executes_for=self._standby_token)
        writing: asyncio.Task[None] | None = None
        replier = Replier(self._tasks, writer, token, self._clock)
        try:
            await writer.open()
            self._writer = writer
            writing = asyncio.create_task(writer.run(), name="executor-writer")
            try:
                await self._serve(token, writer, backoff, replier)
            finally:
                await self._stop_all(writer, replier)
        finally:
            self._writer = None
            if writing is not None:
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
            with contextlib.suppress(Exception):
                await writer.close()
            with contextlib.suppress(JournalError):
                await self._tasks.leave(token)

    async def _serve(
        self, token: str, writer: JournalWriter, backoff: Backoff, replier: Replier
    ) -> None:
        renewed = 0.0
        while True:
            if writer.failure is not None:
                raise writer.failure
            if time.monotonic() - renewed >= RENEW_EVERY:
                if not await self._tasks.renew(token):
                    raise JournalLocked("this executor was fenced (judged gone); enlisting anew")
                renewed = time.monotonic()
            await self._stop_withdrawn(token)
            await self._take_patches(token)
            await self._claim(token, writer, replier)
            backoff.reset()
            await news_or(self._room, self._tasks, NEWS_WAIT)

    async def _stop_withdrawn(self, token: str) -> None:
        if not self._served:
            return
        for task_id in await self._tasks.withdrawn(list(self._served), token=token):
            served = self._served.get(task_id)
            if served is not None and served.worker is not None:
                served.worker.cancel()

    async def _take_patches(self, token: str) -> None:
        if not self._served:
            return
        patches = await self._tasks.take_patches(list(self._served), token=token)
        for task_id, patch in patches.items():
            served = self._served.get(task_id)
            if served is not None:
                self._patched(served, patch)

    def _patched(self, served: _Served, patch: dict[str, Any]) -> None:
        """Apply a task's patches: signals in their order, then an abort.

        None once its outcome is made: cancelling the segment then (while its last writes
        commit, or its reply is written) would leave its task unanswered, its run stuck.
        """
        signals = sorted(
            (int(key.removeprefix(wire.SIGNAL_PREFIX)), value)
            for key, value in patch.items()
            if key.startswith(wire.SIGNAL_PREFIX) and isinstance(value, dict)
        )
        run = served.run
        if served.reply is not None:
            # Its outcome is made, its reply coming: the coordinator merges the signals
            # the reply does not count, and acts on the abort once it has the outcome.
            return
        for number, changes in signals:
            if number <= served.signals or run.finishing:
                continue
            served.signals = number
            run.pending_patch = {**(run.pending_patch or {}), **changes}
            if self._writer is not None:
                self._writer.submit(signalled(run, changes, self._clock.now_us()))
        reason = patch.get(wire.ABORT)
        if isinstance(reason, str) and not run.abort_requested:
            run.abort_requested, run.abort_reason = True, reason
            if served.worker is not None:
                served.worker.cancel()

    async def _claim(self, token: str, writer: JournalWriter, replier: Replier) -> None:
        room = self._capacity - len(self._served)
        digests = await self._index.digests()
        if room <= 0 or not digests:
            return
        claimed = await self._tasks.claim(
            token=token, digests=digests, limit=room, now=self._clock.now_us()
        )
        for task in claimed:
            served = self._served_of(task)
            if served is None:
                await replier.reply(task, _unservable(task, "its workflow is not here"))
                continue
            self._served[task.id] = served
            self._by_row[task.run_row] = served
            if task.patches:
                self._patched(served, task.patches)
            served.worker = asyncio.create_task(
                self._execute(served, writer, replier), name=f"run-task-{task.id}"
            )

    def _served_of(self, task: RunTask) -> _Served | None:
        """The run of `task`, rebuilt here; None if its workflow does not load here."""
        request = task.request
        try:
            registered = self._registered_of(task.digest, str(request["workflow"]))
            if registered is None:
                return None
            trigger = str(request["trigger"])
            recovered = request.get("recovered_at")
            run = ActiveRun(
                row=task.run_row,
                run_id=task.run_id,
                workflow=registered,
                trigger_id=trigger,
                steps=registered.steps(trigger),
                step_index=int(request["step_index"]),
                position=int(request["position"]),
                state_text=task.state,
                settled=asyncio.get_running_loop().create_future(),
                commit_next_checkpoint=bool(request.get("commit_next")),
                recovered_at=None if recovered is None else (str(recovered[0]), int(recovered[1])),
            )
        except Exception as exc:  # noqa: BLE001 - a request or a workflow it cannot take
            _log.warning("run task %d cannot be executed here: %r", task.id, exc)
            return None
        return _Served(task, run)

    def _registered_of(self, digest: str, workflow_id: str) -> RegisteredWorkflow | None:
        known = self._registered.get((digest, workflow_id))
        if known is not None:
            return known
        loaded = self._index.loaded(digest)
        if loaded is None:
            return None
        for workflow, _ in loaded.workflows:
            if workflow.id == workflow_id:
                registered = self._registered[(digest, workflow_id)] = self._prepare(
                    loaded.source, workflow
                )
                return registered
        return None

    async def _execute(self, served: _Served, writer: JournalWriter, replier: Replier) -> None:
        run = served.run
        try:
            writer.submit([_executing_here(run, self._clock.now_us())])
            reply: dict[str, Any] | None
            if run.abort_requested:  # aborted before it was claimed: the claim brought it
                reply = wire.stopped_reply(run, back=False, signals=served.signals)
            else:
                reply = await self._segment(served, writer)
            served.reply = reply
            if reply is None:
                return  # withdrawn: no reply
            if await replier.reply(served.task, reply):
                self.executed += 1
        except JournalError as exc:
            _log.warning("run %s: its segment stopped: %s", run.run_id, exc)
        except Exception:  # noqa: BLE001 - a bug here must not stop the other segments
            _log.exception("run %s: its segment failed here", run.run_id)
        finally:
            await self._close_services(run, writer)
            if self._served.get(served.task.id) is served:
                del self._served[served.task.id]
            if self._by_row.get(run.row) is served:
                del self._by_row[run.row]
            self._room.set()

    async def _segment(self, served: _Served, writer: JournalWriter) -> dict[str, Any] | None:
        """Execute the segment; its reply (None: withdrawn, no reply)."""
        run = served.run
        env = ExecutorEnv(
            writer=writer,
            clock=self._clock,
            threads=self._threads,
            notify=_no_notify,
            wants=_nothing,
            logger=_log,
            waits=self._waits,
            workers=self._workers,
        )
        try:
            outcome: Finished | PauseRequest = await run_segment(run, env)
        except StepElsewhere:
            return wire.stopped_reply(run, back=True, signals=served.signals, coordinator=True)
        except asyncio.CancelledError:
            if not abort_consumed(run):
                raise
            return wire.stopped_reply(run, back=False, signals=served.signals)
        if served.back:  # the step caught StepElsewhere: it runs again on the coordinator
            return wire.stopped_reply(run, back=True, signals=served.signals, coordinator=True)
        if isinstance(outcome, PauseRequest):
            # The step's checkpoint, if it carried it, commits with the pause, on the
            # coordinator: lost with this executor, the step runs again, the pause is kept.
            carried, run.carried = run.carried, None
            return wire.pause_reply(run, outcome, served.signals, carried)
        return wire.end_reply(run, outcome, served.signals)

    async def _close_services(self, run: ActiveRun, writer: JournalWriter) -> None:
        scope, run.service_scope = run.service_scope, None
        if scope is None:
            return
        now = self._clock.now_us()
        writes = [
            ops.add_timeline(
                run.row,
                now,
                "runtime",
                "cleanup.failed",
                message=run.workflow.redactor.redact(f"a service cleanup failed: {error!r}"),
            )
            for error in await scope.close()
        ]
        writes.append(ops.add_timeline(run.row, now, "runtime", "services.closed"))
        if writer.failure is None:
            writer.submit(writes)

    async def _stop_all(self, writer: JournalWriter, replier: Replier) -> None:
        """Stop every segment; hand back what can be, once its checkpoints committed."""
        served = list(self._served.values())
        for each in served:
            if each.worker is not None:
                each.worker.cancel()
        workers = [each.worker for each in served if each.worker is not None]
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        if writer.failure is not None or not served:
            return
        with contextlib.suppress(JournalError, TimeoutError):
            async with asyncio.timeout(REPLY_PATIENCE):
                await asyncio.gather(
                    *(
                        replier.reply(
                            each.task,
                            each.reply
                            or wire.stopped_reply(each.run, back=True, signals=each.signals),
                        )
                        for each in served
                    )
                )


def _executing_here(run: ActiveRun, now: int) -> ops.Op:
    """The timeline's note of where the run's segment executes (`orchestrator logs`)."""
    return ops.add_timeline(
        run.row,
        now,
        "runtime",
        "run.elsewhere",
        position=run.position,
        step=run.next_step,
        message=f"executing on a daemon standing by: {BY}",
    )


def _unservable(task: RunTask, why: str) -> dict[str, Any]:
    """The reply to a task this executor cannot run: back to the coordinator, untouched."""
    progress = {
        "step_index": task.request.get("step_index", 0),
        "position": task.request.get("position", 0),
        "state": task.state,
    }
    _log.warning("run task %d: %s; handed back", task.id, why)
    return {"progress": progress, "back": True}


async def _no_notify(name: str, run: ActiveRun, extra: dict[str, Any]) -> None:
    del name, run, extra  # `rt.on` listeners are the coordinator's


def _nothing(name: str) -> bool:
    del name
    return False

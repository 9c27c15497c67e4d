"""One run: its steps in series, a checkpoint after each, and how it ends.

Checkpoints are pipelined: a step's checkpoint joins the writer's next batch and the next
step starts at once, without waiting for the fsync. Only what is acknowledged to the
outside (a run's end, which `invoke` returns) waits for its commit; after a crash the run
continues from its last *committed* checkpoint, so a step whose checkpoint was lost runs
again (steps are at-least-once; `ctx.idempotency_key` is stable across such re-runs).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from threading import get_ident
from typing import Any

from ..clock import Clock
from ..define.model import BoundStep
from ..define.services import ServiceScope
from ..define.waits import PauseRequest, PauseService, WaitRegistry
from ..errors import describe_exception, format_traceback
from ..journal import JournalWriter, ops
from ..pipeline.steps import StepFailed, StepTimedOut, run_step
from ..records import RunCode, RunResult, RunStatus, is_ok
from ..state import EncodedState, StateEncodingError, Unencodable, decode_state, encode_state
from .context import RunLogger, StepContext
from .registry import RegisteredWorkflow
from .workers import StepRunner, WorkerCrashed

_log = logging.getLogger("orchestrator.runtime")

# Past this many ops waiting for the writer, a step waits for its own checkpoint to commit.
HIGH_WATER = 100_000

Notify = Callable[[str, "ActiveRun", dict[str, Any]], Coroutine[Any, Any, None]]
# A run ended: (run id, workflow id, trigger id, status, error, code); its system event.
Ended = Callable[[str, str, str, RunStatus, str | None, RunCode | None], object]


@dataclass(eq=False, kw_only=True, slots=True)
class ActiveRun:
    """A run this process is executing (or about to); slots: one per run in flight."""

    row: int
    run_id: str
    workflow: RegisteredWorkflow
    trigger_id: str
    steps: list[BoundStep]
    step_index: int
    position: int
    state_text: str
    settled: asyncio.Future[RunResult]
    abort_requested: bool = False
    finishing: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Signals received while a step runs: merged into what it returns (the signal is newer).
    pending_patch: dict[str, Any] | None = None
    # Why the run fails before its first step (its input is not a JSON object).
    invalid_input: str | None = None
    # Why a recovered run fails instead of starting its next step (its process kept dying).
    crash_loop: str | None = None
    # A recovered step's checkpoint commits before the next step starts: a crash in that
    # next step must not count as one more crash of the recovered step.
    commit_next_checkpoint: bool = False
    # The step start-up recovery continued this run at, and its count of recoveries then.
    recovered_at: tuple[str, int] | None = None
    abort_reason: str = "aborted by request"
    abort_code: RunCode = RunCode.ABORTED
    # Secrets found in its state and warned of (made on the first: most runs have none).
    warned: set[str] | None = field(default=None, repr=False)
    # Instances of its "run" services, made on first use, closed when its task ends.
    service_scope: ServiceScope | None = field(default=None, repr=False)
    # How it ended (or paused), while its batch commits, when that batch is to settle it.
    ending: Ending | None = field(default=None, repr=False)
    # A pausing step's checkpoint, not enqueued yet: its pause enqueues it (one caller).
    carried: list[ops.Op] | None = field(default=None, repr=False)

    @property
    def next_step(self) -> str | None:
        """Name of the step that runs next, or None when all have run."""
        return self.steps[self.step_index].name if self.step_index < len(self.steps) else None


@dataclass(frozen=True, kw_only=True)
class ExecutorEnv:
    """What the executor needs from the runtime."""

    writer: JournalWriter
    clock: Clock
    threads: Executor
    notify: Notify
    wants: Callable[[str], bool]
    logger: logging.Logger
    waits: WaitRegistry | None = None
    workers: StepRunner | None = None
    # Called in the batch of each run's end (the system events); None: none are emitted.
    ended: Ended | None = None
    # What a key of a kind made first, as far as this process can tell without waiting.
    keyed: Callable[[str, str], str | None] | None = None


class _RunFailed(Exception):
    def __init__(
        self, message: str, code: RunCode, step: str | None, trace: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.step, self.trace = message, code, step, trace


@dataclass(frozen=True, slots=True)
class Ending:
    """A run's end, enqueued: the batch it commits in, and what the run ended with.

    `settle` waits for that batch and makes the run's `RunResult`; a caller with nothing
    to do after the commit (no hook, no listener) may settle the run from a callback on
    `batch` instead, without a task waiting.
    """

    batch: asyncio.Future[None]
    status: RunStatus
    error: str | None
    code: RunCode | None
    # The step it failed in, for the ``step.failed`` notification (None: no step failed).
    failed_step: str | None


@dataclass(frozen=True, slots=True)
class Finished:
    """How a segment ended its run, decided and not journaled yet (`end` journals it)."""

    status: RunStatus
    error: str | None = None
    code: RunCode | None = None
    # The step it failed in (None: before any step), and the traceback of what it raised.
    step: str | None = None
    trace: str | None = None


async def execute(run: ActiveRun, env: ExecutorEnv) -> Ending | PauseRequest:
    """Run the remaining steps of `run` and enqueue how it ends, or how it wants to pause.

    A run with `invalid_input` fails before any step: its input was not a JSON object; one
    with `crash_loop`, before its next step: its process kept dying in that step. A
    returned `PauseRequest` means a step asked to park the run at its boundary; the
    step's checkpoint is already enqueued, and parking is the caller's job. A returned
    `Ending` is enqueued, not yet committed (`settle`).

    Raises:
        asyncio.CancelledError: On shutdown; the run stays ``running`` in the journal and
            continues from its last committed checkpoint when the journal is next opened.
    """
    try:
        outcome = await run_segment(run, env)
    except asyncio.CancelledError:
        if run.finishing or not abort_consumed(run):
            raise
        return _aborted(run, env)
    return outcome if isinstance(outcome, PauseRequest) else end(run, env, outcome)


def abort_consumed(run: ActiveRun) -> bool:
    """In ``except CancelledError``: whether the cancel is `run`'s abort (then consumed).

    False: another cancel (shutdown), for the caller to re-raise.
    """
    if not run.abort_requested:
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return True


async def run_segment(run: ActiveRun, env: ExecutorEnv) -> Finished | PauseRequest:
    """Run the remaining steps of `run` until it pauses or ends; journal its checkpoints.

    How it ends is returned, not journaled (`end` journals it): an executor of a shared
    journal replies with it, and its coordinator journals the end.

    Raises:
        asyncio.CancelledError: Shutdown or an abort (`execute` tells them apart).
    """
    try:
        if run.invalid_input is not None:
            raise _RunFailed(run.invalid_input, RunCode.INVALID_STATE, None)
        if run.crash_loop is not None:
            raise _RunFailed(run.crash_loop, RunCode.CRASH_LOOP, run.next_step)
        while run.step_index < len(run.steps):
            pause = await _run_step(run, run.steps[run.step_index], env)
            if pause is not None:
                return pause
        return Finished(RunStatus.COMPLETED)
    except _RunFailed as failure:
        return Finished(
            RunStatus.FAILED, failure.message, failure.code, failure.step, failure.trace
        )


def end(run: ActiveRun, env: ExecutorEnv, finished: Finished) -> Ending:
    """Enqueue the end of `run` as `finished` says (`settle` waits for its commit)."""
    failure = None
    if finished.code is not None:
        message = finished.error or finished.status
        failure = _RunFailed(message, finished.code, finished.step, finished.trace)
    return _finish(run, env, finished.status, failure)


def aborted(run: ActiveRun, env: ExecutorEnv) -> Ending:
    """Enqueue the end of `run`, aborted (by request, or replaced: `run.abort_code`)."""
    return _aborted(run, env)


async def finish_aborted(run: ActiveRun, env: ExecutorEnv) -> RunResult:
    """Record that `run` was aborted."""
    return await settle(run, env, _aborted(run, env))


def _aborted(run: ActiveRun, env: ExecutorEnv) -> Ending:
    failure = _RunFailed(run.abort_reason, run.abort_code, None)
    return _finish(run, env, RunStatus.ABORTED, failure)


async def _run_step(run: ActiveRun, bound: BoundStep, env: ExecutorEnv) -> PauseRequest | None:
    started = env.clock.now_us()
    if env.wants("step.started"):
        await env.notify("step.started", run, {"step": bound.name})
    while not env.writer.lease_fresh():
        # Not renewed within its timeout (this process was frozen, or the journal cannot
        # be written): another process may own the runs now. Start nothing until a
        # renewal commits; if another process took the lease, this raises.
        await env.writer.write([])
    isolated = run.workflow.isolated.get((run.trigger_id, bound.index))
    # The ctx of each attempt: the last one's outbox commits with the checkpoint.
    made: list[StepContext] = []
    try:
        # Closures only where a step needs them: fewer objects per step for the GC.
        result = await run_step(
            bound,
            run.state_text,
            functools.partial(_context, run, bound, env=env, made=made)
            if bound.takes_ctx
            else None,
            clock=env.clock,
            threads=env.threads,
            on_retry=functools.partial(_record_retry, run, bound, env=env)
            if bound.step.retries
            else None,
            isolated=None
            if isolated is None or env.workers is None
            else functools.partial(env.workers.call, isolated),
        )
    except StepFailed as failed:
        code = _code_of(failed)
        # A timeout or a crash has no user frames to show: only what the step raised has.
        trace = format_traceback(failed.cause) if code is RunCode.STEP_FAILED else None
        message = _failure_message(bound, code, failed)
        raise _RunFailed(message, code, bound.name, trace) from failed
    pause = result if isinstance(result, PauseRequest) else None
    # A pausing step leaves the state as it was.
    text = _state_text(run, bound, EncodedState(run.state_text) if pause is not None else result)
    run.position += 1
    run.step_index += 1
    run.state_text = text
    if run.workflow.redactor:
        _warn_of_secrets(run, bound, text, env)
    ended = env.clock.now_us()
    writes = ops.checkpoint(
        run.row,
        run.position,
        bound.name,
        started_at=started,
        ended_at=ended,
        state=text,
        next_step=run.next_step,
    )
    outbox = made[-1].sent() if made else None
    # What the step started and emitted: in the checkpoint's batch, exactly once.
    if outbox is not None:
        writes += outbox.writes(run.run_id, ended)
    if (
        pause is not None
        and not run.commit_next_checkpoint
        and not env.wants("step.completed")
        and env.writer.backlog <= HIGH_WATER
    ):
        # Enqueued with its pause, which follows at once (`Parking.park_or_drain`): one
        # caller, and the step's progress and the pause one update of the run's row.
        run.carried = writes
        return pause
    env.writer.submit(writes)
    if run.commit_next_checkpoint or env.writer.backlog > HIGH_WATER:
        run.commit_next_checkpoint = False
        await env.writer.flush()
    if env.wants("step.completed"):
        await env.notify("step.completed", run, {"step": bound.name})
    return pause


def _failure_message(bound: BoundStep, code: RunCode, failed: StepFailed) -> str:
    """The run's error, in words: ``step 'charge' timed out after 30 s (timeout=30)``."""
    if code is RunCode.STEP_TIMEOUT:
        tries = f", on its last attempt of {failed.attempts}" if failed.attempts > 1 else ""
        return f"{failed}{tries}"
    what = f"crashed: {failed.cause}" if code is RunCode.STEP_CRASHED else f"failed: {failed}"
    return f"step {bound.name!r} {what}"


def _code_of(failed: StepFailed) -> RunCode:
    if failed.timed_out:
        return RunCode.STEP_TIMEOUT
    if isinstance(failed.cause, WorkerCrashed):
        return RunCode.STEP_CRASHED
    return RunCode.STEP_FAILED


def _state_text(run: ActiveRun, bound: BoundStep, result: object) -> str:
    """The new state as journaled: what the step returned, with signals merged in."""
    if isinstance(result, EncodedState) and run.pending_patch is None:
        return result.text  # a worker process encoded it already
    if isinstance(result, Unencodable):
        raise _invalid_state(bound, result.message)
    if isinstance(result, EncodedState):
        result = decode_state(result.text)  # decoded again only to merge a signal in
    if run.pending_patch is not None:
        result = {**result, **run.pending_patch} if isinstance(result, dict) else result
        run.pending_patch = None
    try:
        return encode_state(result)
    except StateEncodingError as exc:
        raise _invalid_state(bound, str(exc)) from exc


def _invalid_state(bound: BoundStep, why: str) -> _RunFailed:
    message = f"step {bound.name!r} returned an invalid state: {why}"
    return _RunFailed(message, RunCode.INVALID_STATE, bound.name)


def _warn_of_secrets(run: ActiveRun, bound: BoundStep, text: str, env: ExecutorEnv) -> None:
    """State is journaled as returned (documented); say so once per run and key."""
    warned = run.warned or set()
    found = [key for key in run.workflow.redactor.find_in(text) if key not in warned]
    if not found:
        return
    run.warned = warned | set(found)
    message = (
        f"step {bound.name!r} put the value of secret {', '.join(found)} in the run's "
        "state, which is journaled as is: keep secrets out of state"
    )
    env.logger.warning("run %s: %s", run.run_id, message)
    _note(run, bound, env, "warning", message)


def run_scope(run: ActiveRun, env: ExecutorEnv) -> ServiceScope:
    """The run's service scope, made on first use (its state is the run's current state)."""
    if run.service_scope is None:
        services = {service.id: service for service in run.workflow.workflow.services}
        run.service_scope = ServiceScope(
            services,
            parent=run.workflow.service_scope,
            scope="run",
            state=decode_state(run.state_text),
            idempotency_key=f"{run.run_id}:services",
            on_create=functools.partial(_service_opened, run, env),
        )
    return run.service_scope


def _service_opened(run: ActiveRun, env: ExecutorEnv, service_id: str) -> None:
    # Journaled so that, if the process dies before the run's scope is closed, recovery
    # builds the service again and runs its cleanups: run-scoped cleanup is at least once.
    env.writer.submit(
        [
            ops.add_timeline(
                run.row, env.clock.now_us(), "runtime", "service.opened", message=service_id
            )
        ]
    )


def context_for(run: ActiveRun, env: ExecutorEnv) -> StepContext | None:
    """The ctx a hook gets: that of the run's next step (None once all have run)."""
    if run.step_index >= len(run.steps):
        return None
    return _context(run, run.steps[run.step_index], 1, env=env)


def _context(
    run: ActiveRun,
    bound: BoundStep,
    attempt: int,
    *,
    env: ExecutorEnv,
    made: list[StepContext] | None = None,
) -> StepContext:
    ctx = StepContext(
        run_id=run.run_id,
        workflow_id=run.workflow.id,
        trigger_id=run.trigger_id,
        step_name=bound.name,
        step_index=bound.index,
        attempt=attempt,
        # Made on first use (most steps log nothing), knowing the loop's thread from here.
        log=functools.partial(
            _logger,
            run,
            bound,
            env,
            run.position,
            asyncio.get_running_loop(),
            get_ident(),
        ),
        pause_service=PauseService(env.waits, run.row, run.run_id) if env.waits else None,
        env=run.workflow.env,
        scope=functools.partial(run_scope, run, env),
        keyed=env.keyed,
    )
    if made is not None:
        made.append(ctx)
    return ctx


def _logger(
    run: ActiveRun,
    bound: BoundStep,
    env: ExecutorEnv,
    position: int,
    loop: asyncio.AbstractEventLoop,
    loop_thread: int,
) -> RunLogger:
    """The ``ctx.log`` of step `bound` of `run`, at `position` (made on its first use).

    Its first use may be in a worker thread (a sync step): the loop and its thread come
    from where the step's ctx was made.
    """
    return RunLogger(
        writer=env.writer,
        clock=env.clock,
        loop=loop,
        row=run.row,
        position=position,
        step=bound.name,
        logger=env.logger,
        redact=run.workflow.redactor.redact,
        loop_thread=loop_thread,
    )


def _record_retry(
    run: ActiveRun,
    bound: BoundStep,
    attempt: int,
    exc: BaseException,
    delay: float,
    *,
    env: ExecutorEnv,
) -> Awaitable[None] | None:
    what = (
        f"timed out after {exc.seconds:g} s (timeout={exc.seconds:g})"
        if isinstance(exc, StepTimedOut)
        else f"failed: {describe_exception(exc)}"
    )
    message = run.workflow.redactor.redact(f"attempt {attempt} {what}; retrying in {delay:g}s")
    data = {"attempt": attempt, "retry": True}
    _note(run, bound, env, "step.failed", message, data)
    if not env.wants("step.failed"):
        return None
    return env.notify("step.failed", run, {"step": bound.name, "error": message, **data})


def _note(
    run: ActiveRun,
    bound: BoundStep,
    env: ExecutorEnv,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    """A timeline entry about the step `bound` of `run` (not awaited: it is not an answer)."""
    env.writer.submit(
        [
            ops.add_timeline(
                run.row,
                env.clock.now_us(),
                "runtime",
                kind,
                position=run.position,
                step=bound.name,
                message=message,
                data=data,
            )
        ]
    )


def _relay(waiter: asyncio.Future[None], batch: asyncio.Future[None]) -> None:
    """Settle `waiter` as its batch settled, unless its run's task gave it up meanwhile."""
    if waiter.done():
        return
    if batch.cancelled():
        waiter.cancel()
        return
    error = batch.exception()
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)


def log_failed(
    run_id: str, workflow_id: str, step: str | None, code: RunCode, error: str | None
) -> None:
    """The daemon log's one line for a failed run (`error` redacted by the caller)."""
    _log.warning(
        "run %s of %s failed at step %s: %s: %s", run_id, workflow_id, step or "-", code, error
    )


def _finish(
    run: ActiveRun, env: ExecutorEnv, status: RunStatus, failure: _RunFailed | None = None
) -> Ending:
    run.finishing = True
    now = env.clock.now_us()
    # As journaled: a huge message is cut, a lone surrogate escaped.
    error = ops.valid_text(run.workflow.redactor.redact(failure.message)) if failure else None
    code = failure.code if failure is not None else None
    writes = [ops.set_status(run.row, status, now, error=error, code=code)]
    if env.waits is not None:
        writes += env.waits.release(run.row)
    if failure is not None and failure.step is not None:
        trace = failure.trace and run.workflow.redactor.redact(failure.trace)
        writes.append(
            ops.add_timeline(
                run.row,
                now,
                "runtime",
                "step.failed",
                position=run.position,
                step=failure.step,
                message=error,
                data={"traceback": trace} if trace else None,
            )
        )
    if failure is not None:
        log_failed(run.run_id, run.workflow.id, failure.step, failure.code, error)
    with env.writer.together():  # the end and its system event commit in one batch
        committed = env.writer.enqueue(writes, urgent=True)
        if env.ended is not None:
            env.ended(run.run_id, run.workflow.id, run.trigger_id, status, error, code)
    return Ending(committed, status, error, code, failure.step if failure is not None else None)


def quiet(ending: Ending, env: ExecutorEnv) -> bool:
    """Whether no ``rt.on`` listener waits to hear of `ending` (nothing to notify)."""
    if ending.failed_step is not None and env.wants("step.failed"):
        return False
    return not env.wants(f"run.{ending.status}")


def result_of(run: ActiveRun, ending: Ending) -> RunResult:
    """The `RunResult` of a run that ended as `ending` says (once its batch committed)."""
    return RunResult(
        ok=is_ok(ending.status),
        status=ending.status,
        run_id=run.run_id,
        state=decode_state(run.state_text),
        error=ending.error,
        error_code=ending.code,
    )


async def settle(run: ActiveRun, env: ExecutorEnv, ending: Ending) -> RunResult:
    """Wait for `ending` to commit, tell the listeners, and return the run's result."""
    # Shielded: once the end is decided, an abort or shutdown must not split it. Cancelling
    # the task cancels `waiter`, never the batch (`asyncio.shield`, lighter: one callback
    # a run instead of two and their closures).
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ending.batch.add_done_callback(functools.partial(_relay, waiter))
    await waiter
    result = result_of(run, ending)
    if ending.failed_step is not None and env.wants("step.failed"):
        extra = {"step": ending.failed_step, "error": ending.error, "retry": False}
        await env.notify("step.failed", run, extra)
    status = ending.status
    if env.wants(f"run.{status}"):
        await env.notify(f"run.{status}", run, {"status": status, "error": result.error})
    return result

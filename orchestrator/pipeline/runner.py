"""The pipeline runner: operations in series, isolated state, lifecycle events.

`run` takes a list of operations (or source text binding ``pipeline``), runs each through
`steps.run_step` and hands the next one a fresh copy decoded from the previous result's
JSON text. It starts no processes and, beyond importing a job's adaptors, does no disk
I/O; it knows nothing of journals.

Bad arguments (source text that breaks the policy, a pipeline that is not a list of
callables, an initial state that is not a JSON object) raise before ``job.started``;
every later failure emits ``step.failed`` and ``job.failed`` and raises `PipelineError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import Clock
from ..define.model import BoundStep, Step, StepFn, bind_pipeline
from ..errors import InvalidState, PipelineError, StepTimeout, describe_exception
from ..state import State, StateEncodingError, decode_state, encode_state
from .sources import load_pipeline_source
from .steps import StepFailed, StepTimedOut, run_step
from .validation import ImportPolicy

EventHandler = Callable[[str, dict[str, Any]], object]
log = logging.getLogger("orchestrator.pipeline")


@dataclass(frozen=True, slots=True)
class PipelineContext:
    """The ``ctx`` a ``(state, ctx)`` operation gets from `run`.

    It has the attributes of the runtime's `StepContext` that make sense without a durable
    run, so a step written for one runs under the other.

    Attributes:
        step_name: The step's unique name in its pipeline.
        step_index: The step's position (0-based).
        attempt: 1 for the first attempt, 2 for the first retry, and so on.
        log: The ``orchestrator.pipeline`` logger.
        idempotency_key: Always ``None`` here: the runner has no durable run to key on.
    """

    step_name: str
    step_index: int
    attempt: int
    log: logging.Logger = log
    idempotency_key: str | None = None


async def run(
    pipeline: Sequence[StepFn | Step] | str,
    state: object,
    *,
    on_event: EventHandler | None = None,
    allow: Sequence[str] | None = None,
    block: Sequence[str] | None = None,
    module_home: str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
) -> State:
    """Run `pipeline`'s operations in series on `state` and return the final state.

    Args:
        pipeline: Operations (functions or `Step`), or module source text binding
            ``pipeline`` to a list of them. Source text is validated before any of it runs.
        state: The initial state, a JSON object.
        on_event: ``on_event(name, payload)``, sync or async, for each lifecycle event. An
            exception it raises propagates and ends the job.
        allow: Regular expressions; source text may import only matching modules.
        block: Modules source text may not import, in addition to the default list.
        module_home: A folder that source text imports adaptor modules from, for this job.
            `allow`, `block` and `module_home` apply to source text only.
        clock: The clock that backoff sleeps on.

    Raises:
        ValidationError: The source text breaks the import policy or fails to load.
        DefinitionError: The pipeline is not a list of callables or `Step`s.
        InvalidState: `state` is not a JSON object (``step_index`` -1, ``step_name``
            ``"<input>"``), or a step returned one that is not.
        StepTimeout: A step's last attempt timed out.
        PipelineError: A step's last attempt raised (even `SystemExit`).
    """
    steps = await _bind(pipeline, ImportPolicy.build(allow=allow, block=block), module_home)
    text = _input_text(state)
    job = _Job(on_event, clock or Clock())
    await job.emit("job.started", {"steps": [b.name for b in steps], "state": decode_state(text)})
    for bound in steps:
        text = await job.step(bound, text)
    await job.emit("job.completed", {"state": decode_state(text)})
    return decode_state(text)


async def _bind(
    pipeline: Sequence[StepFn | Step] | str,
    policy: ImportPolicy,
    module_home: str | os.PathLike[str] | None,
) -> list[BoundStep]:
    if not isinstance(pipeline, str):
        return bind_pipeline(pipeline)
    # In a thread: module-level code of the source may block, the loop must not.
    load = load_pipeline_source
    ops = await asyncio.to_thread(load, pipeline, policy=policy, module_home=module_home)
    return bind_pipeline(ops)


def _input_text(state: object) -> str:
    try:
        return encode_state(state)
    except StateEncodingError as exc:
        message = f"the initial state is not a JSON object: {exc}"
        raise InvalidState(message, step_index=-1, step_name="<input>", state={}) from exc


class _Job:
    """One call of `run`: delivers events in order and runs one step at a time."""

    def __init__(self, on_event: EventHandler | None, clock: Clock) -> None:
        self._on_event = on_event
        self._clock = _RetryClock(self, clock)
        self.pending: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Deliver one event; await the handler if it returned an awaitable."""
        if self._on_event is None:
            return
        result = self._on_event(event, payload)
        if inspect.isawaitable(result):
            await result

    async def step(self, bound: BoundStep, text: str) -> str:
        """Run `bound` on the state in `text`; return the new state's text."""
        at: dict[str, Any] = {"index": bound.index, "name": bound.name}
        attempts = [1]  # run_step calls on_retry once before each further attempt

        def make_ctx(attempt: int) -> PipelineContext:
            return PipelineContext(bound.name, bound.index, attempt)

        def on_retry(attempt: int, error: BaseException, delay: float) -> None:
            attempts[0] = attempt + 1
            error_text = describe_exception(error)
            failed = {**at, "attempt": attempt, "error": error_text, "retry_in": delay}
            self.pending.append(("step.failed", failed))

        await self.emit("step.started", {**at, "state": decode_state(text)})
        try:
            result = await run_step(bound, text, make_ctx, clock=self._clock, on_retry=on_retry)
            new_text = encode_state(result)
        except (StepFailed, StateEncodingError) as exc:
            raise await self._failed(bound, text, attempts[0], exc) from _cause(exc)
        done = {**at, "attempt": attempts[0], "state": decode_state(new_text)}
        await self.emit("step.completed", done)
        return new_text

    async def _failed(
        self, bound: BoundStep, text: str, attempt: int, exc: StepFailed | StateEncodingError
    ) -> PipelineError:
        attempt = exc.attempts if isinstance(exc, StepFailed) else attempt
        error = describe_exception(_cause(exc))
        at: dict[str, Any] = {"index": bound.index, "name": bound.name, "error": error}
        await self.emit("step.failed", {**at, "attempt": attempt, "retry_in": None})
        await self.emit("job.failed", {**at, "state": decode_state(text)})
        kind, message = _describe_failure(bound, exc, error)
        return kind(message, step_index=bound.index, step_name=bound.name, state=decode_state(text))


def _describe_failure(
    bound: BoundStep, exc: StepFailed | StateEncodingError, error: str
) -> tuple[type[PipelineError], str]:
    step = f"step {bound.index} {bound.name!r}"
    if isinstance(exc, StateEncodingError):
        return InvalidState, f"{step} returned bad state: {exc}"
    tries = f" after {exc.attempts} attempts" if exc.attempts > 1 else ""
    if isinstance(exc.cause, StepTimedOut):  # in words: timed out after 30 s (timeout=30)
        seconds = exc.cause.seconds
        return StepTimeout, f"{step} timed out after {seconds:g} s (timeout={seconds:g}){tries}"
    return PipelineError, f"{step} failed{tries}: {error}"


def _cause(exc: StepFailed | StateEncodingError) -> BaseException:
    return exc.cause if isinstance(exc, StepFailed) else exc


class _RetryClock(Clock):
    """The job's clock: delivers queued ``step.failed`` events before each backoff sleep.

    `run_step`'s retry hook is synchronous, so it only queues the event; `run_step` always
    sleeps (perhaps 0s) right after it, and this is where an async `on_event` is awaited.
    """

    def __init__(self, job: _Job, clock: Clock) -> None:
        super().__init__()
        self._job = job
        self._clock = clock

    def now_us(self) -> int:
        """The wrapped clock's time."""
        return self._clock.now_us()

    async def sleep(self, seconds: float) -> None:
        """Deliver queued events, then sleep on the wrapped clock."""
        while self._job.pending:
            event, payload = self._job.pending.pop(0)
            await self._job.emit(event, payload)
        await self._clock.sleep(seconds)

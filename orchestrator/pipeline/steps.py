"""Calling one step under its policy: sync or async, thread or inline, timeout, retries.

Shared by the pipeline runner and the runtime's executor, so a step behaves the same in
both. This module knows nothing of journals or runs; callers pass callbacks to record.

Whatever a step raises (a `BaseException` subclass, `KeyboardInterrupt`, `SystemExit`, a
`CancelledError` of its own) is that step's failure; only the cancellation of the task
that awaits the step (an abort, a replace, shutdown) propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from ..clock import Clock
from ..define.model import BoundStep
from ..errors import describe_exception, raise_if_cancelled
from ..state import decode_state

RetryHook = Callable[[int, BaseException, float], object]
# One attempt of a step in another process: (state text, ctx or None, timeout) -> what it
# returned; `TimeoutError` once it ran for `timeout` seconds (waiting for a process to
# run in does not count).
Isolated = Callable[[str, Any, float | None], Awaitable[object]]


class StepTimedOut(TimeoutError):
    """An attempt of a step ran for its whole `timeout` and was given up.

    Its message says so in words (``step 'charge' timed out after 30 s (timeout=30)``);
    a `TimeoutError` the step raised itself stays a failure of that step.
    """

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(f"step {step!r} timed out after {seconds:g} s (timeout={seconds:g})")
        self.step, self.seconds = step, seconds


class StepFailed(Exception):
    """A step's last attempt failed; `cause` is what it raised (or `StepTimedOut`)."""

    def __init__(self, cause: BaseException, *, attempts: int, timed_out: bool) -> None:
        super().__init__(str(cause) if timed_out else describe_exception(cause))
        self.cause = cause
        self.attempts = attempts
        self.timed_out = timed_out


async def run_step(
    bound: BoundStep,
    state_text: str,
    make_ctx: Callable[[int], Any] | None,
    *,
    clock: Clock,
    threads: Executor | None = None,
    on_retry: RetryHook | None = None,
    isolated: Isolated | None = None,
) -> object:
    """Run `bound` until an attempt succeeds or its retries are spent.

    Each attempt gets a fresh state decoded from `state_text`, so a failed attempt's
    mutations never reach the next. Returns what the step returned (not yet validated).
    With `isolated`, each attempt is that call instead (a worker process decodes there).

    Raises:
        StepFailed: The last attempt raised, or timed out.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            ctx = make_ctx(attempt) if make_ctx is not None and bound.takes_ctx else None
            if isolated is not None:
                return await _isolated(bound, isolated, state_text, ctx)
            state = decode_state(state_text)
            args = (state,) if ctx is None else (state, ctx)
            if bound.step.timeout is not None:
                return await _with_timeout(bound, _call(bound, args, threads), bound.step.timeout)
            if bound.is_async:  # awaited here: one coroutine less per run in flight
                result = await bound.step.fn(*args)
                return (await result) if _awaitable(result) else result
            return await _call(bound, args, threads)
        except _Timeout as exc:
            failure: BaseException = exc.cause
            timed_out = True
        except BaseException as exc:  # noqa: BLE001 - user code: whatever it raises fails it
            # SystemExit, KeyboardInterrupt, a CancelledError of its own: that run's failure,
            # never the process's exit nor the end of the loop.
            _raise_if_not_its_failure(exc)
            failure, timed_out = exc, False
        if attempt > bound.step.retries:
            raise StepFailed(failure, attempts=attempt, timed_out=timed_out) from failure
        delay = bound.step.backoff * 2 ** (attempt - 1)
        if on_retry is not None:
            announced = on_retry(attempt, failure, delay)
            if inspect.isawaitable(announced):
                await announced
        await clock.sleep(delay)


def _awaitable(result: object) -> bool:
    """Whether what an async step returned is to be awaited once more."""
    # A dict first: `isawaitable` ends in an ABC check, and nearly every step returns one.
    return type(result) is not dict and inspect.isawaitable(result)


class StepElsewhere(BaseException):
    """Raised into a step that needs what only another process has: it runs there instead.

    A `BaseException`, so that a step's ``except Exception`` lets it through; never
    retried, never a failure of the run (an executor of a shared journal hands the run
    back to its coordinator, where the step runs again from its start).
    """


def _raise_if_not_its_failure(exc: BaseException) -> None:
    """Raise `exc` again if it is no failure of the step: a cancel, or `StepElsewhere`."""
    raise_if_cancelled(exc)
    if isinstance(exc, StepElsewhere):
        raise exc


class _Timeout(Exception):
    def __init__(self, cause: StepTimedOut) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _isolated(bound: BoundStep, isolated: Isolated, state_text: str, ctx: Any) -> object:
    seconds = bound.step.timeout
    try:
        return await isolated(state_text, ctx, seconds)
    except TimeoutError as exc:
        raise _Timeout(_timed_out(bound, seconds or 0)) from exc


def _timed_out(bound: BoundStep, seconds: float) -> StepTimedOut:
    return StepTimedOut(bound.name, seconds)


async def _with_timeout(bound: BoundStep, call: Awaitable[object], seconds: float) -> object:
    try:
        async with asyncio.timeout(seconds) as scope:
            return await call
    except TimeoutError as exc:
        if scope.expired():
            raise _Timeout(_timed_out(bound, seconds)) from exc
        raise


async def _call(bound: BoundStep, args: tuple[Any, ...], threads: Executor | None) -> object:
    fn = bound.step.fn
    if bound.is_async:
        result = await fn(*args)
    elif bound.step.inline:
        result = fn(*args)
    else:
        result = await _in_thread(fn, args, threads)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _in_thread(
    fn: Callable[..., object], args: tuple[Any, ...], threads: Executor | None
) -> object:
    call = functools.partial(_guarded, contextvars.copy_context().run, fn, *args)
    try:
        if not isinstance(threads, StepThreads):
            return await asyncio.get_running_loop().run_in_executor(threads, call)
        return await threads.run(call)
    except _Carried as carried:
        raise carried.exc from None


class _Carried(Exception):
    """Carries out of a worker thread what a future must not hold."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(describe_exception(exc))
        self.exc = exc


def _guarded(run: Callable[..., object], fn: Callable[..., object], *args: Any) -> object:
    # A future holding GeneratorExit would close the awaiting coroutine instead of raising
    # in it, and one holding StopIteration never resolves: carry them out wrapped.
    try:
        return run(fn, *args)
    except (GeneratorExit, StopIteration) as exc:
        raise _Carried(exc) from None


class StepThreads(ThreadPoolExecutor):
    """The threads of sync steps: at most `max_threads` of them run steps still awaited.

    A thread cannot be killed. When the step it runs is given up (a timeout, an abort,
    shutdown), the thread runs on, abandoned, and the pool may start one more thread in
    its place until it returns: steps that overrun never starve the others. A step that
    is never given up costs nothing more than in a plain `ThreadPoolExecutor`.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        super().__init__(max_threads, thread_name_prefix=name)

    async def run(self, call: Callable[[], object]) -> object:
        """`call()` in one of the threads; what it returns or raises.

        One hop each way: the thread hands its future back to the loop with a single
        `call_soon_threadsafe` (no chain of futures, as `asyncio.wrap_future` makes).
        Cancelled, the call is dropped if no thread took it yet, else abandoned.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        future = self.submit(call)
        future.add_done_callback(functools.partial(_hand_back, loop, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            # The thread cannot be interrupted: its result is discarded and it is abandoned.
            if not future.cancel():
                self.abandon(future)
            raise

    def abandon(self, future: Future[Any]) -> None:
        """`future`'s step is no longer awaited: one more thread until it returns."""
        with self._shutdown_lock:
            self._max_workers += 1
            if not self._shutdown and not self._work_queue.empty():
                self._adjust_thread_count()  # steps already queued need not wait for it
        future.add_done_callback(self._returned)

    def _returned(self, _future: Future[Any]) -> None:
        with self._shutdown_lock:
            self._max_workers -= 1


def _hand_back(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[object], future: Future[Any]
) -> None:
    """In the thread that ran a step: wake the loop with its outcome (unless cancelled)."""
    if future.cancelled():
        return  # the waiter was cancelled first: nobody waits
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
        loop.call_soon_threadsafe(_settle, waiter, future)


def _settle(waiter: asyncio.Future[object], future: Future[Any]) -> None:
    if waiter.done():
        return
    exc = future.exception()
    if exc is None:
        waiter.set_result(future.result())
    else:
        waiter.set_exception(exc)

"""What tests of workflows need: a clock moved by hand, and waits on signals, not sleeps.

- `FakeClock`: pass it as ``Runtime(clock=...)``; ``await clock.advance(seconds)`` returns
  once every timer due by then has been handled (the runtime is idle again).
- `Runtime.idle` (``await rt.idle()``): wait until a runtime has nothing left to do until
  something outside happens. Use it before asserting that something did *not* happen.
- `eventually` (async) and `eventually_blocking`: poll a condition, with a clear failure,
  for what no signal reaches this process: another process, a file watcher, a screen.
- `harness` (``async with harness("workflows/orders.py") as h:``): workflow files or
  workflows in a runtime on a temporary journal and a `FakeClock`; `Harness` is what it
  gives. Imported on first use: it brings the whole runtime.

A sleep in a test either waits too long or, on a busy machine, not long enough; the
helpers here wait exactly as long as needed and fail with what was awaited. This module
imports no more than the clock (the harness comes on first use), so a test's helper
processes can use it cheaply.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .clock import FakeClock

if TYPE_CHECKING:
    from .harness import Harness, harness

__all__ = ["FakeClock", "Harness", "eventually", "eventually_blocking", "harness"]
_HARNESS = ("Harness", "harness")

T = TypeVar("T")
INTERVAL_SECONDS = 0.02


def __getattr__(name: str) -> Any:
    """`harness` and `Harness`, imported on first use (PEP 562)."""
    if name not in _HARNESS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import harness as module

    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    timeout: float = ...,  # noqa: ASYNC109 - a bound in real time
    interval: float = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = ...,  # noqa: ASYNC109 - a bound in real time
    interval: float = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


async def eventually(
    check: Callable[[], object],
    *,
    what: str,
    timeout: float = 10.0,  # noqa: ASYNC109 - a bound in real time
    interval: float = INTERVAL_SECONDS,
    details: Callable[[], str] | None = None,
) -> object:
    """Poll `check` until it returns something truthy, and return that.

    For what no signal reaches this process: another process's work, a file watcher, the
    dashboard's screen. Where there is a signal, wait on it instead: `Runtime.idle`,
    `Runtime.wait`, a future, an event.

    Args:
        check: Called every `interval` seconds (and awaited, if it returns an awaitable).
            It may raise to fail at once, e.g. when a process it waits on has exited.
        what: What is awaited, for the failure message ("the run to pause").
        timeout: Seconds before giving up.
        interval: Seconds between two calls of `check`.
        details: Called on failure; what it returns ends the message (a log, say).

    Returns:
        The first truthy value `check` returned.

    Raises:
        AssertionError: `check` returned nothing truthy for `timeout` seconds; the message
            names `what` and the last value.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(_failure(what, timeout, result, details))
        await asyncio.sleep(interval)


def eventually_blocking(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = INTERVAL_SECONDS,
    details: Callable[[], str] | None = None,
) -> T:
    """`eventually` for code without an event loop: blocks the thread between calls.

    Raises:
        AssertionError: As `eventually`.
        TypeError: `check` returned an awaitable: use ``await eventually(...)``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: no warning about it
            raise TypeError(f"waiting for {what}: check returned an awaitable; await eventually()")
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(what, timeout, result, details))
        time.sleep(interval)


def _failure(what: str, timeout: float, last: object, details: Callable[[], str] | None) -> str:
    shown = repr(last)
    if len(shown) > 300:
        shown = shown[:300] + "..."
    message = f"timed out after {timeout:g} s waiting for {what} (the last check gave {shown})"
    return f"{message}\n{details()}" if details is not None else message

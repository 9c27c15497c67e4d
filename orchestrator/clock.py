"""The only reader of wall time, the only place that sleeps on it, and the id source.

Everything that needs the time or a delay takes a `Clock`, so tests pass a `FakeClock`
they advance by hand: timer, backoff and timeout tests take milliseconds and never flake.
Timestamps in the journal are integer microseconds since the Unix epoch.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

# asyncio is imported where it is used: the CLI's small commands read the clock and never
# need an event loop, and importing asyncio is most of their start-up time.
if TYPE_CHECKING:
    import asyncio

# Called with a timeout after time was moved by hand; returns once its owner has settled.
Settle = Callable[[float], Awaitable[None]]
# How often `FakeClock.advance` looks again at a woken task that neither ended nor slept.
SETTLE_POLL_SECONDS = 0.002


class Clock:
    """Real time. `now_us` never goes backwards within a process."""

    def __init__(self) -> None:
        self._last_us = 0

    def now_us(self) -> int:
        """Microseconds since the epoch, never less than the previous reading."""
        # Invariant: timeline order follows timestamps, so a wall clock stepped back by NTP
        # must not reorder what one process wrote.
        now = time.time_ns() // 1000
        if now <= self._last_us:
            now = self._last_us + 1
        self._last_us = now
        return now

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        import asyncio

        await asyncio.sleep(max(0.0, seconds))

    def waiting(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` sleeps on this clock until time is moved by hand.

        Real time moves by itself, so a task sleeping on it is busy: always False here.
        """
        return False

    def attach(self, settle: Settle) -> Callable[[], None]:
        """Have moving time by hand wait for `settle`; returns the function that detaches it.

        Real time is never moved by hand, so this does nothing here (see `FakeClock`).
        """
        return _nothing


class FakeClock(Clock):
    """A clock that moves only when `advance` is called.

    Its public home is `orchestrator.testing`. It is defined here, beside `Clock`, so that
    ``orchestrator.clock.FakeClock`` keeps working: this module may not import the layers
    above it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__()
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._now_us = int(start.timestamp() * 1_000_000)
        self._sleepers: list[tuple[int, int, asyncio.Future[None], asyncio.Task[Any] | None]] = []
        # Invariant: a task is here while it is blocked in `sleep` and not yet woken.
        self._asleep: dict[asyncio.Task[Any], asyncio.Future[None]] = {}
        self._order = itertools.count()
        self._settlers: dict[int, Settle] = {}

    def now_us(self) -> int:
        """The fake time, in microseconds since the epoch."""
        return self._now_us

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake time has been advanced past now + `seconds`."""
        import asyncio

        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        due = self._now_us + int(seconds * 1_000_000)
        task = asyncio.current_task()
        heapq.heappush(self._sleepers, (due, next(self._order), waiter, task))
        if task is not None:
            self._asleep[task] = waiter
        try:
            await waiter
        finally:
            if task is not None and self._asleep.get(task) is waiter:
                del self._asleep[task]

    def waiting(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` is asleep on this clock until `advance` moves time past its end."""
        return task in self._asleep

    def attach(self, settle: Settle) -> Callable[[], None]:
        """Have `advance` await `settle(timeout)` before it returns; returns the detacher."""
        key = next(self._order)
        self._settlers[key] = settle

        def detach() -> None:
            self._settlers.pop(key, None)

        return detach

    async def advance(self, seconds: float, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Move time forward; return once everything that fell due has been handled.

        First, at the current time, the tasks that are ready run, and each runtime on this
        clock becomes idle (see `Runtime.idle`): a run just started reaches its sleep before
        time moves. Then every sleeper due by the new time is woken, and `advance` returns
        once each task it woke has finished or sleeps on this clock again, and each runtime
        is idle again: the timers due by now have fired, and the runs they resumed or
        started have gone as far as they can without more time, an event or a free slot.

        Raises:
            TimeoutError: Something was still busy after `timeout` seconds of real time;
                the message says what.
        """
        import asyncio

        await asyncio.sleep(0)  # a checkpoint: what is ready runs before time moves
        await self._settle_runtimes(timeout)
        self._now_us += int(seconds * 1_000_000)
        woken: list[asyncio.Task[Any]] = []
        while self._sleepers and self._sleepers[0][0] <= self._now_us:
            _, _, waiter, task = heapq.heappop(self._sleepers)
            if waiter.done():  # its sleep was cancelled
                continue
            if task is not None and self._asleep.pop(task, None) is waiter:
                woken.append(task)
            waiter.set_result(None)
        await self._settle_woken(woken, timeout)
        await self._settle_runtimes(timeout)

    async def _settle_runtimes(self, timeout: float) -> None:  # noqa: ASYNC109
        for settle in list(self._settlers.values()):
            await settle(timeout)

    async def _settle_woken(self, woken: list[asyncio.Task[Any]], limit: float) -> None:
        """Wait until every task in `woken` is done or asleep on this clock again."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while busy := [t for t in woken if not t.done() and t not in self._asleep]:
            if loop.time() >= deadline:
                names = ", ".join(sorted(task.get_name() for task in busy))
                raise TimeoutError(f"tasks advance() woke still busy after {limit:g} s: {names}")
            # Bounded polling: a woken task may go back to sleep here without finishing.
            await asyncio.wait(busy, timeout=SETTLE_POLL_SECONDS)


def _nothing() -> None:
    return None


# The first 3 hex digits of an id count 16 ms ticks of wall time (wrapping every 65.5 s).
_ID_TICK_NS = 16_000_000
_ID_TICKS = 1 << 12


def new_id() -> str:
    """A fresh id for a run or an event: 32 hex digits, the last 29 random.

    The first 3 count 16 ms ticks of wall time, wrapping every 65.5 seconds: ids made close
    in time sort close together, so each index of ids (runs, events) takes a batch's new
    ones on a few pages, where random ids put each on a page of its own (at 1,000,000 runs
    in the journal, a page written per run). The first 8 digits still tell runs made at
    once apart (5 random), and a prefix of 4 is as selective as a random one. Nothing
    reads the time back: ids stay opaque, and older journals' random ids work the same.
    """
    tick = (time.time_ns() // _ID_TICK_NS) % _ID_TICKS
    return f"{tick:03x}{os.urandom(15).hex()[1:]}"


def to_datetime(us: int) -> datetime:
    """Journal timestamp to an aware UTC datetime."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def to_iso(us: int) -> str:
    """Journal timestamp to ISO-8601 (UTC, millisecond precision)."""
    return to_datetime(us).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_DURATION_SECONDS = 1000 * 365 * 86_400
"""The longest duration `parse_duration` takes: a thousand years."""


def parse_duration(text: str | float) -> float:
    """Seconds from ``45s``, ``90m``, ``12h``, ``30d`` or a number of seconds (>= 0).

    At most `MAX_DURATION_SECONDS` (a thousand years).

    Raises:
        ValueError: Anything else, with what is accepted.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        value = text.strip().lower()
        unit = _UNITS.get(value[-1:], 0) if value else 0
        number = value[:-1] if unit else value
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            seconds = -1.0
    else:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):  # NaN, negative, junk
        raise ValueError(
            f"invalid duration {text!r}: use 45s, 90m, 12h, 30d or a number of seconds >= 0"
        )
    if seconds > MAX_DURATION_SECONDS:  # its cutoff would not fit a 64-bit microsecond time
        raise ValueError(
            f"invalid duration {text!r}: at most {MAX_DURATION_SECONDS:,} s (a thousand years)"
        )
    return seconds

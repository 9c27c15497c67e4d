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
from datetime import UTC, datetime
from typing import TYPE_CHECKING

# asyncio is imported where it is used: the CLI's small commands read the clock and never
# need an event loop, and importing asyncio is most of their start-up time.
if TYPE_CHECKING:
    import asyncio


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


class FakeClock(Clock):
    """A clock that moves only when a test calls `advance`."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__()
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._now_us = int(start.timestamp() * 1_000_000)
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

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
        heapq.heappush(self._sleepers, (due, next(self._order), waiter))
        await waiter

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every sleeper that is now due run."""
        import asyncio

        self._now_us += int(seconds * 1_000_000)
        while self._sleepers and self._sleepers[0][0] <= self._now_us:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)


def new_id() -> str:
    """A fresh id for a run or an event: 32 hex digits, random."""
    return os.urandom(16).hex()


def to_datetime(us: int) -> datetime:
    """Journal timestamp to an aware UTC datetime."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def to_iso(us: int) -> str:
    """Journal timestamp to ISO-8601 (UTC, millisecond precision)."""
    return to_datetime(us).isoformat(timespec="milliseconds").replace("+00:00", "Z")

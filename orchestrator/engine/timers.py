"""Durable deadlines in memory: sleeps, pause timeouts and schedule ticks.

The deadlines themselves are journaled by their owners (a wait's ``timeout_at``, a
schedule's last tick); this queue only wakes the runtime when the earliest one is due,
on the injected clock, so tests drive it with a `FakeClock`. An overdue deadline (after
downtime) fires at once, once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Hashable

from ..clock import Clock

_log = logging.getLogger("orchestrator.timers")


class Timers:
    """A keyed set of deadlines; setting a key again replaces its deadline."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, Hashable]] = []
        # Invariant: a heap entry is live only if `_due[key]` is its (due, seq).
        self._due: dict[Hashable, tuple[int, int, Callable[[], None]]] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    def set(self, key: Hashable, due_us: int, fire: Callable[[], None]) -> None:
        """Call `fire()` once at `due_us` (replacing any deadline under `key`)."""
        seq = next(self._seq)
        self._due[key] = (due_us, seq, fire)
        heapq.heappush(self._heap, (due_us, seq, key))
        if self._heap[0][1] == seq:
            self._changed.set()

    def cancel(self, key: Hashable) -> None:
        """Forget the deadline under `key`, if any."""
        self._due.pop(key, None)

    def next_due(self) -> int | None:
        """When the earliest deadline falls due (microseconds), or None if there is none."""
        while self._heap:
            due, seq, key = self._heap[0]
            entry = self._due.get(key)
            if entry is not None and entry[1] == seq:
                return due
            heapq.heappop(self._heap)  # replaced or cancelled
        return None

    async def run(self) -> None:
        """Fire deadlines as they fall due, for ever (cancel to stop)."""
        while True:
            self._fire_due()
            await self._sleep_until_next()

    def _fire_due(self) -> None:
        now = self._clock.now_us()
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._due.get(key)
            if entry is None or entry[1] != seq:
                continue
            del self._due[key]
            try:
                entry[2]()
            except Exception:  # noqa: BLE001 - one deadline's failure must not stop the others
                _log.exception("timer %r failed", key)

    async def _sleep_until_next(self) -> None:
        self._changed.clear()
        while self._heap and self._heap[0][2] not in self._due:
            heapq.heappop(self._heap)
        if not self._heap:
            await self._changed.wait()
            return
        delay = (self._heap[0][0] - self._clock.now_us()) / 1_000_000
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

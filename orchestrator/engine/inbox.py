"""What other processes write into the journal: events to route and commands to apply.

The CLI and the dashboard never reach into the daemon's memory: they commit an event or a
command row, and this poller picks it up. It asks the journal's change feed (on SQLite,
``PRAGMA data_version``), which moves only when a commit lands (this process's own writer's
included), so an idle journal costs one tiny query per tick and a busy one two. Everything
still pending when the runtime starts is picked up on its first tick.

Ticks are 10 ms apart while rows arrive; each tick that finds nothing to take stretches the
gap by a quarter, up to 50 ms, and the next row found brings it back to 10 ms. So an event
or command from another process waits at most about 50 ms (plus its own handling) before
it is routed, and an idle daemon wakes 20 times a second instead of 100.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import JournalCorrupt, JournalError
from ..journal import CommandRecord, EventRecord, JournalQueries
from .events import EventBus

POLL_SECONDS = 0.01  # between ticks while rows arrive
IDLE_POLL_SECONDS = 0.05  # the longest gap, reached after a few quiet ticks
_STRETCH = 1.25
BATCH = 1000
_log = logging.getLogger("orchestrator.inbox")


class InboxPoller:
    """Routes events and applies commands written by other processes, in order."""

    def __init__(
        self,
        reader: JournalQueries,
        bus: EventBus,
        apply: Callable[[CommandRecord], Awaitable[None]],
        *,
        interval: float = POLL_SECONDS,
        idle_interval: float = IDLE_POLL_SECONDS,
        on_corrupt: Callable[[JournalError], None] | None = None,
        here: set[str] | None = None,
    ) -> None:
        self._reader, self._bus, self._apply = reader, bus, apply
        # Events this process wrote under an idempotency key and routes itself (`Keys`).
        self._here = set() if here is None else here
        self._on_corrupt = on_corrupt
        self._interval = interval
        self._idle_interval = max(interval, idle_interval)
        # Invariant: rows up to these ids have been handed on (their writes may still be
        # pending in the writer), so none is taken twice by this process.
        self._last_event = 0
        self._last_command = 0
        self._draining = False

    async def run(self) -> None:
        """Poll for ever (cancel to stop)."""
        seen: int | None = None
        failing: str | None = None  # logged once per change, not once per tick
        gap = self._interval
        while True:
            try:
                version = await self._reader.data_version()
                # data_version also moves on this process's own commits: one cheap query
                # tells whether anything is really pending before reading rows.
                if version != seen:
                    seen = version
                    if await self._reader.has_pending(self._last_event, self._last_command):
                        gap = self._interval / _STRETCH  # stretched back to the interval below
                        self._draining = True
                        try:
                            await self.drain()
                        finally:
                            self._draining = False
            except JournalCorrupt as exc:  # no retry will help: the runtime stops
                if self._on_corrupt is None:
                    raise
                self._on_corrupt(exc)
                return
            except JournalError as exc:  # a locked or busy journal: try again next tick
                if str(exc) != failing:
                    _log.warning("reading the inbox failed, retrying: %s", exc)
                failing = str(exc)
            else:
                if failing is not None:
                    _log.warning("reading the inbox works again")
                failing = None
            gap = min(self._idle_interval, gap * _STRETCH)
            await asyncio.sleep(gap)

    async def pending(self) -> bool:
        """Whether events or commands from other processes wait to be routed or applied."""
        waiting = await self._reader.has_pending(self._last_event, self._last_command)
        return waiting or self._draining  # read after the query: a drain begun meanwhile counts

    async def drain(self) -> None:
        """Take every pending event and command once, in the order they were committed.

        Events and commands are two tables; a signal written before an event must be
        applied before that event resumes the run, so both are merged by commit time
        (taken inside each writer's ``BEGIN IMMEDIATE``, so later commits have later times).
        """
        while True:
            # One snapshot of both: merged by commit time, they are in commit order.
            events, commands = await self._reader.inbox(self._last_event, self._last_command, BATCH)
            if not events and not commands:
                return
            # A full batch may have more rows behind it: go no further than its last one.
            full = [batch[-1].created_at for batch in (events, commands) if len(batch) == BATCH]
            horizon = min(full, default=None)
            merged: list[EventRecord | CommandRecord] = [*events, *commands]
            merged.sort(key=lambda row: row.created_at)
            for row in merged:
                if horizon is not None and row.created_at > horizon:
                    break
                await self._hand_on(row)
            if horizon is None:
                return  # neither batch was full; rows committed since move data_version

    async def _hand_on(self, row: EventRecord | CommandRecord) -> None:
        if isinstance(row, EventRecord):
            self._last_event = max(self._last_event, row.id)  # rows come in time order
            if row.event_id in self._here:
                return
            if row.problem is not None:
                _log.error("event %s (%s) is skipped: %s", row.event_id, row.type, row.problem)
                self._bus.skip(row.event_id)
                return
            self._bus.accept(row.event_id, row.type, row.data, source=row.source, external=True)
        else:
            await self._apply(row)  # raised (the journal unreachable): taken again next tick
            self._last_command = max(self._last_command, row.id)

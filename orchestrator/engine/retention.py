"""Pruning old final runs: `Runtime.prune`, and the daemon's ``[retention]`` applied every minute.

The deleting itself is the journal's (`JournalCommands.prune`): small transactions on a
connection of their own, run in a thread so the event loop and the runtime's writer go on.
A stop ends a prune between two transactions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from ..clock import Clock
from ..journal import JournalBackend
from ..journal.retention import retention_cutoffs

_log = logging.getLogger("orchestrator.retention")

INTERVAL_SECONDS = 60.0
"""How often the daemon applies ``[retention]``."""


class PruneStopped(Exception):
    """The runtime stopped between two prune transactions."""


class Pruner:
    """Runs prunes in a thread, one at a time; `stop` ends one between transactions."""

    def __init__(self, journal: JournalBackend, clock: Clock) -> None:
        self._journal = journal
        self._clock = clock
        self._stopping = threading.Event()
        self._lock = asyncio.Lock()

    async def prune(
        self,
        cutoffs: Mapping[str, int],
        events_before: int | None,
        *,
        dry_run: bool = False,
        vacuum: bool = True,
    ) -> dict[str, int]:
        """Prune (then give space back) in a thread; the counts."""
        async with self._lock:
            return await asyncio.to_thread(self._prune, cutoffs, events_before, dry_run, vacuum)

    def _prune(
        self, cutoffs: Mapping[str, int], events_before: int | None, dry_run: bool, vacuum: bool
    ) -> dict[str, int]:
        commands = self._journal.commands
        counts = commands.prune(
            cutoffs, events_before=events_before, dry_run=dry_run, between=self._between
        )
        if vacuum and not dry_run and any(counts.values()):
            counts["pages_freed"] = commands.vacuum(between=self._between)
        return counts

    def _between(self) -> None:
        if self._stopping.is_set():
            raise PruneStopped

    def stop(self) -> None:
        """End a prune in progress at its next transaction."""
        self._stopping.set()

    async def keep(self, retention: Callable[[], Mapping[str, float]]) -> None:
        """Apply `retention()` now and every `INTERVAL_SECONDS` until cancelled."""
        while True:
            wanted = retention()
            if wanted:
                cutoffs, events = retention_cutoffs(self._clock.now_us(), wanted)
                try:
                    counts = await self.prune(cutoffs, events)
                except PruneStopped:
                    return
                except Exception as exc:  # noqa: BLE001 - retention retries next time
                    _log.warning("retention: pruning failed, retrying later: %s", exc)
                else:
                    if counts["runs"] or counts["events"]:
                        _log.info(
                            "retention: pruned %d runs and %d events",
                            counts["runs"],
                            counts["events"],
                        )
            await self._clock.sleep(INTERVAL_SECONDS)

"""The dashboard's connection to a journal: open it, notice changes, recover from failures.

No Textual here. The app calls `JournalSource.poll` every ~100 ms; it asks the journal's
change feed (on SQLite ``PRAGMA data_version``, one cheap statement) whether anything was
committed since the last poll, so screens re-query only when something changed. A journal
that does not exist yet, is locked, is not a journal, or fails mid-read is a *state* shown
to the user (`SourceState`), and the source tries again after `retry_seconds`: the
dashboard never dies because of its journal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import OrchestratorError
from orchestrator.journal import DashboardViews, JournalBackend

StateKind = Literal["connecting", "waiting", "error", "ok"]
READ_BUSY_TIMEOUT_MS = 1_000  # a read waits this long for a lock before it is an error


@dataclass(frozen=True)
class SourceState:
    """Where the source stands, and what to tell the user about it."""

    kind: StateKind
    message: str


class JournalSource:
    """One read-only connection to `journal`, reopened after failures."""

    def __init__(
        self,
        journal: JournalBackend,
        *,
        retry_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.queries: DashboardViews | None = None
        self.state = SourceState("connecting", f"opening journal {journal.location}")
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._next_attempt = 0.0
        self._version: int | None = None
        # How many polls saw a change: equal values mean the same data (never repeats, even
        # across reconnections, unlike data_version).
        self.changes = 0

    async def poll(self) -> bool:
        """Connect if needed; True when the journal changed or the source's state did."""
        changed = await self._poll()
        self.changes += changed
        return changed

    async def _poll(self) -> bool:
        if self.queries is None:
            return await self._connect()
        try:
            version = await self.queries.data_version()
        except OrchestratorError as exc:
            await self.fail(exc)
            return True
        changed, self._version = version != self._version, version
        return changed

    async def fail(self, exc: BaseException) -> None:
        """A read failed: drop the connection, say why, and reconnect after a pause."""
        await self._drop()
        self.state = SourceState("error", f"{exc}; retrying")
        self._next_attempt = self._monotonic() + self._retry

    async def close(self) -> None:
        """Close the connection (the source may reconnect on the next poll)."""
        await self._drop()

    async def _connect(self) -> bool:
        if self._monotonic() < self._next_attempt:
            return False
        self._next_attempt = self._monotonic() + self._retry
        before = self.state
        where = self.journal.location
        try:  # a path that cannot hold a journal (a FIFO, say) is an error shown, not raised
            if not self.journal.exists():
                self.state = SourceState(
                    "waiting", f"waiting for journal {where} (start a daemon or a runtime on it)"
                )
                return self.state != before
            queries = await self.journal.open_views()
        except OrchestratorError as exc:
            self.state = SourceState("error", f"{exc}; retrying")
            return self.state != before
        try:
            await queries.set_busy_timeout(READ_BUSY_TIMEOUT_MS)
            self._version = await queries.data_version()
        except OrchestratorError as exc:
            await queries.close()
            self.state = SourceState("error", f"{exc}; retrying")
            return self.state != before
        self.queries = queries
        self.state = SourceState("ok", f"journal {where}")
        return True

    async def _drop(self) -> None:
        queries, self.queries, self._version = self.queries, None, None
        if queries is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close too
                await queries.close()

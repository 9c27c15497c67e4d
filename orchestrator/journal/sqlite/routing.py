"""What routing did with an event, and what listens to which event types: blocking reads.

`orchestrator emit` reports what its event started or resumed, and must not load asyncio
(the writing commands start in well under 100 ms): plain `sqlite3`, one read-only
connection (``mode=rw`` and ``query_only``: it never creates a journal nor writes one),
polled while the daemon routes. Routing commits an event's routes in the same transaction
as its ``routed_at`` mark (`engine.events`), so a routed event's routes are complete.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...clock import Clock
from ...errors import JournalError
from ..command_rules import RoutingSQL, SharedRoutingReads
from . import lease
from .connection import SQLITE_ERRORS, open_error, read_write_uri

_BUSY_TIMEOUT_MS = 1_000
SQL = RoutingSQL(
    event="SELECT type, routed_at FROM events WHERE event_id = ?",
    routes=(
        "SELECT er.action, r.run_id, r.workflow_id, r.trigger_id FROM event_routes er"
        " JOIN runs r ON r.id = er.run WHERE er.event_id = ? ORDER BY r.id, er.action"
    ),
    switched_off="SELECT workflow_id, trigger_id FROM switches WHERE enabled = 0",
    workflows="SELECT workflow_id, triggers FROM workflows WHERE present = 1 ORDER BY workflow_id",
    # The partial index `waits_live` holds exactly these waits.
    waited=(
        "SELECT event_type, count(DISTINCT run) FROM waits"
        " WHERE status IN ('armed', 'parked') AND event_type IS NOT NULL GROUP BY event_type"
    ),
)


class SqliteRoutingReads(SharedRoutingReads):
    """`RoutingReads` over one read-only connection to the journal file at `path`."""

    _sql = SQL

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> SqliteRoutingReads:
        try:
            conn = sqlite3.connect(
                read_write_uri(self.path), uri=True, isolation_level=None, timeout=0
            )
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = ON")
        except SQLITE_ERRORS as exc:
            raise open_error(self.path, exc, write=False) from exc
        self._conn = conn
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def data_version(self) -> int:
        """`PRAGMA data_version`: it moves whenever another connection commits."""
        return int(self._rows("PRAGMA data_version")[0][0])

    def daemon_live(self) -> bool:
        """Whether a live process holds the lease."""
        rows = self._rows(lease.HOLDER_SQL)
        holder = lease.holder_from(rows[0] if rows else None)
        return holder is not None and lease.is_live(holder, Clock().now_us())

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            raise JournalError(f"journal {self.path}: routing reads used outside their `with`")
        try:
            # fetchall: the statement runs to its end, so no read transaction stays open.
            return list(self._conn.execute(sql, params).fetchall())
        except SQLITE_ERRORS as exc:
            raise JournalError(f"journal {self.path}: read failed: {exc}") from exc

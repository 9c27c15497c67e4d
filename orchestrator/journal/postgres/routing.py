"""What routing did with an event, and what listens to which event types, on PostgreSQL.

`RoutingReads` for `orchestrator emit` on a PostgreSQL journal: one autocommit connection
(no read transaction outlives a query), the same queries as `sqlite/routing.py`. Routing
commits an event's routes with its ``routed_at`` mark, so a routed event's routes are
complete.

`data_version` is the server's current snapshot (``pg_current_snapshot()``): it moves
whenever a transaction that wrote anything ends, in this database or another of the
server; a move that was not the journal's only costs the caller one more read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import JournalError
from ..command_rules import RoutingSQL, SharedRoutingReads
from .blocking import Tx, connect_blocking, journal_version
from .connection import describe, load_psycopg, parse_url, unreachable
from .daemon_rows import LIVE_DAEMONS_SQL, newest_live

if TYPE_CHECKING:
    import psycopg

SQL = RoutingSQL(
    event="SELECT type, routed_at FROM events WHERE event_id = %s",
    routes=(
        "SELECT er.action, r.run_id, r.workflow_id, r.trigger_id FROM event_routes er"
        " JOIN runs r ON r.id = er.run WHERE er.event_id = %s ORDER BY r.id, er.action"
    ),
    switched_off="SELECT workflow_id, trigger_id FROM switches WHERE enabled = 0",
    workflows=(
        "SELECT workflow_id, triggers FROM workflows WHERE present = 1"
        ' ORDER BY workflow_id COLLATE "C"'
    ),
    # The partial index `waits_live` holds exactly these waits.
    waited=(
        "SELECT event_type, count(DISTINCT run) FROM waits"
        " WHERE status IN ('armed', 'parked') AND event_type IS NOT NULL GROUP BY event_type"
    ),
)


class PostgresRoutingReads(SharedRoutingReads):
    """`RoutingReads` over one autocommit connection to the journal at `url`."""

    _sql = SQL

    def __init__(self, url: str) -> None:
        self.url = url  # may hold a password: messages use `describe`
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> PostgresRoutingReads:
        conn = connect_blocking(self.url, autocommit=True)
        self._conn = conn
        try:
            if journal_version(Tx(conn)) == 0:
                raise JournalError(f"no journal in the PostgreSQL {describe(self.url)}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def data_version(self) -> int:
        """A value that moves whenever a writing transaction on the server ends."""
        return hash(str(self._rows("SELECT pg_current_snapshot()::text")[0][0]))

    def daemon_live(self) -> bool:
        """Whether a live daemon holds the journal."""
        return newest_live(self._rows(LIVE_DAEMONS_SQL)) is not None

    def _tx(self) -> Tx:
        if self._conn is None:
            raise JournalError(
                f"journal {describe(self.url)}: routing reads used outside their `with`"
            )
        return Tx(self._conn)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        tx = self._tx()
        pg = load_psycopg()
        try:
            return tx.rows(sql, params)
        except pg.Error as exc:
            if tx.conn.broken:
                raise unreachable(self.url, parse_url(self.url), exc) from None
            reason = " ".join(str(exc).split())
            raise JournalError(f"journal {describe(self.url)}: read failed: {reason}") from exc

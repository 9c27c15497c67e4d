"""Which daemon runs a PostgreSQL journal, judged as its writer judges it.

A row of `daemons` is live while it is neither fenced nor stopped, its heartbeat is younger
than `STALE_AFTER_US` by the database server's clock, and, on this host, its process still
exists (`liveness.is_live`, as SQLite's lease is judged): a daemon killed by SIGKILL is dead
at once for the reader, the views and the commands, as for a daemon starting after it, not
only once its heartbeat is stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..liveness import HOST, STALE_AFTER_US, holder_from, is_live, pid_alive
from ..records import DaemonRecord

# The server's clock, in microseconds since the epoch (the heartbeats' clock).
SERVER_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
# The daemons whose heartbeat is fresh, newest first; columns: `liveness.holder_from`'s,
# then the server's now.
LIVE_DAEMONS_SQL = (
    "SELECT d.pid, d.host, d.started_at, d.heartbeat_at, d.ready, d.token, d.degraded,"
    f" n.now_us FROM (SELECT {SERVER_NOW_US} AS now_us) n JOIN daemons d"
    f" ON d.heartbeat_at > n.now_us - {STALE_AFTER_US}"
    " WHERE d.fenced_at IS NULL AND d.stopped_at IS NULL ORDER BY d.started_at DESC, d.id DESC"
)
# A condition on a `standbys` row (columns unqualified): renewed within the heartbeat's
# timeout, by the server's clock. `standby_alive` then judges its process.
FRESH_STANDBY = f"seen_at > {SERVER_NOW_US} - {STALE_AFTER_US}"
# An executor row `e` whose standby (the same process) is not fenced: once the active
# daemon judged that standby gone, its executor renews, counts and writes nothing more.
OWNER_NOT_FENCED = (
    "NOT EXISTS (SELECT 1 FROM standbys o WHERE o.token = e.executes_for"
    " AND o.fenced_at IS NOT NULL)"
)


def newest_live(rows: Sequence[Sequence[Any]]) -> DaemonRecord | None:
    """The first daemon of `rows` (of `LIVE_DAEMONS_SQL`) that `is_live`, or None."""
    for row in rows:
        holder = holder_from(row[:7])
        assert holder is not None
        if is_live(holder, int(row[7])):
            return DaemonRecord(
                holder.pid, holder.host, holder.started_at, holder.ready, holder.degraded
            )
    return None


def standby_alive(pid: int, host: str) -> bool:
    """Whether a standby with a fresh row still runs: on this host, its process exists."""
    return host != HOST or pid_alive(pid)

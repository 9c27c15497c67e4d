"""The journal's lease: which process owns it (pid, host, heartbeat).

One process writes runs at a time. A lease is live while its heartbeat is younger than
`STALE_AFTER_US` and, on this host, its process still exists; anything else is taken over.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..liveness import (
    HOST,
    LIVE_TOKENS,
    STALE_AFTER_US,
    LeaseHolder,
    holder_from,
    in_use,
    is_live,
    pid_alive,
)

__all__ = [
    "HOLDER_SQL",
    "HOST",
    "LIVE_TOKENS",
    "STALE_AFTER_US",
    "LeaseHolder",
    "acquire",
    "heartbeat",
    "holder_from",
    "holder_from_named",
    "in_use",
    "is_live",
    "pid_alive",
    "read_holder",
    "release",
]

HOLDER_SQL = (
    "SELECT pid, host, started_at, heartbeat_at, ready, token, degraded FROM lease WHERE id = 1"
)


def holder_from_named(row: sqlite3.Row | None) -> LeaseHolder | None:
    """The holder in a named row of ``SELECT * FROM lease`` (a reader may see schema < 7)."""
    if row is None:
        return None
    values = [row[name] for name in ("pid", "host", "started_at", "heartbeat_at", "ready")]
    degraded = row["degraded"] if "degraded" in row.keys() else None  # noqa: SIM118
    return holder_from([*values, row["token"], degraded])


def read_holder(conn: sqlite3.Connection) -> LeaseHolder | None:
    """The lease row as it is, live or not."""
    return holder_from(conn.execute(HOLDER_SQL).fetchone())


def acquire(conn: sqlite3.Connection, path: Path, token: str, now_us: int) -> None:
    """Take the lease inside the caller's write transaction, or raise `JournalLocked`."""
    holder = read_holder(conn)
    if holder is not None and is_live(holder, now_us):
        raise in_use(str(path), holder, now_us)
    conn.execute(
        "INSERT OR REPLACE INTO lease (id, token, pid, host, started_at, heartbeat_at, ready)"
        " VALUES (1, ?, ?, ?, ?, ?, 0)",
        (token, os.getpid(), HOST, now_us, now_us),
    )
    LIVE_TOKENS.add(token)


def heartbeat(
    conn: sqlite3.Connection, token: str, now_us: int, degraded: str | None = None
) -> bool:
    """Refresh the lease (and say why writes fail, if they do); False if it was taken over."""
    cur = conn.execute(
        "UPDATE lease SET heartbeat_at = ?, degraded = ? WHERE token = ?",
        (now_us, degraded, token),
    )
    return cur.rowcount == 1


def release(conn: sqlite3.Connection, token: str) -> None:
    """Give the lease up (inside the caller's transaction)."""
    conn.execute("DELETE FROM lease WHERE token = ?", (token,))
    LIVE_TOKENS.discard(token)

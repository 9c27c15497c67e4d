"""The journal's lease: which process owns it (pid, host, heartbeat).

One process writes runs at a time. A lease is live while its heartbeat is younger than
`STALE_AFTER_US` and, on this host, its process still exists; anything else is taken over.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import JournalLocked

STALE_AFTER_US = 5_000_000
HOST = socket.gethostname()

# Invariant: holds the token of every lease a live writer in this process owns, so a lease
# left by an abandoned (crashed) writer of this same process is known to be dead.
LIVE_TOKENS: set[str] = set()


@dataclass(frozen=True, kw_only=True)
class LeaseHolder:
    """Who holds a journal's lease."""

    pid: int
    host: str
    started_at: int
    heartbeat_at: int
    ready: bool
    token: str
    degraded: str | None = None


HOLDER_SQL = (
    "SELECT pid, host, started_at, heartbeat_at, ready, token, degraded FROM lease WHERE id = 1"
)


def holder_from(row: Sequence[Any] | None) -> LeaseHolder | None:
    """The holder in a row of `HOLDER_SQL` (None for no row)."""
    if row is None:
        return None
    return LeaseHolder(
        pid=row[0],
        host=row[1],
        started_at=row[2],
        heartbeat_at=row[3],
        ready=bool(row[4]),
        token=row[5],
        degraded=row[6],
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


def is_live(holder: LeaseHolder, now_us: int) -> bool:
    """Whether `holder` still owns its lease at `now_us`."""
    if now_us - holder.heartbeat_at > STALE_AFTER_US:
        return False
    if holder.host != HOST:
        return True
    if holder.pid == os.getpid():
        return holder.token in LIVE_TOKENS
    return pid_alive(holder.pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def acquire(conn: sqlite3.Connection, path: Path, token: str, now_us: int) -> None:
    """Take the lease inside the caller's write transaction, or raise `JournalLocked`."""
    holder = read_holder(conn)
    if holder is not None and is_live(holder, now_us):
        age = (now_us - holder.heartbeat_at) / 1_000_000
        raise JournalLocked(
            f"journal {path} is in use by pid {holder.pid} on {holder.host} (heartbeat "
            f"{age:.1f}s ago): one process runs a journal at a time, and commands reach it "
            "through the journal; stop that process first to start another, or pass another --db"
        )
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

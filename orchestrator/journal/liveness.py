"""Whether a journal's writer is alive: its heartbeat, and its process on this host.

Backend-neutral: SQLite's lease (`sqlite.lease`) and PostgreSQL's daemon rows
(`postgres.writer`) judge a holder the same way. A holder is live while its heartbeat is
younger than `STALE_AFTER_US` and, on this host, its process still exists.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JournalLocked

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


def in_use(where: str, holder: LeaseHolder, now_us: int) -> JournalLocked:
    """The error for a journal at `where` that `holder`, live at `now_us`, runs."""
    age = (now_us - holder.heartbeat_at) / 1_000_000
    return JournalLocked(
        f"journal {where} is in use by pid {holder.pid} on {holder.host} (heartbeat "
        f"{age:.1f}s ago): one process runs a journal at a time, and commands reach it "
        "through the journal; stop that process first to start another, or pass another --db"
    )

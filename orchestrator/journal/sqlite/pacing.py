"""How a prune shares the write lock: transactions sized to a target, a pause after each.

Shared by `prune` (runs) and `sweeps` (events, commands, orphan rows): every write
transaction of a prune is one call of `transaction` timed by `pace`, every read is `read`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..protocol import Synchronous
from .commands import _transaction, _write_error
from .connection import SQLITE_ERRORS, connect_writer, rollback_if_open

T = TypeVar("T")
MAX_BATCH = 500
TARGET_SECONDS = 0.02
"""How long one prune transaction should hold the write lock."""
DURABILITY: Synchronous = "NORMAL"
"""A prune's commits are not flushed to disk one by one (WAL keeps them consistent): a
power loss may undo the last deletions, which the next prune repeats."""
PAUSE_SECONDS = 0.002
"""The least time between two write transactions of a prune."""


class Size:
    """How much the next transaction takes on: halved when one ran long, doubled when short.

    Rows differ in size (a run's checkpoints hold its state) and pages may have to be read
    from disk first, so a fixed count of runs can hold the lock for 2 ms or 200 ms.
    """

    def __init__(self, start: int, most: int = MAX_BATCH) -> None:
        self.now = start
        self._most = most

    def took(self, seconds: float) -> None:
        """The last transaction took `seconds`: size the next one."""
        if seconds > TARGET_SECONDS and self.now > 1:
            self.now = max(1, self.now // 2)
        elif seconds < TARGET_SECONDS / 4:
            self.now = min(self._most, self.now * 2)


def paced(path: Path, work: Callable[[sqlite3.Connection], T], size: Size | None = None) -> T:
    """`work` in one write transaction of a prune, then the pause `pace` leaves."""
    started = time.monotonic()
    result = _transaction(path, work, DURABILITY)
    took = pace(started)
    if size is not None:
        size.took(took)
    return result


def pace(started: float) -> float:
    """Leave the write lock free at least as long as the last transaction held it.

    SQLite's locks are not fair: a writer waiting in its busy handler retries at growing
    intervals, and back-to-back transactions could keep missing it. Returns how long the
    transaction took.
    """
    took = time.monotonic() - started
    time.sleep(max(PAUSE_SECONDS, took))
    return took


def read(path: Path, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` in a read transaction of its own: takes no lock the writer waits for."""
    conn = connect_writer(path, "FULL")
    try:
        conn.execute("BEGIN")
        try:
            return work(conn)
        finally:
            rollback_if_open(conn)
    except SQLITE_ERRORS as exc:
        raise _write_error(path, exc) from exc
    finally:
        conn.close()


def count(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
    """How many rows of a table (with its WHERE clause) `where` names."""
    return int(conn.execute(f"SELECT count(*) FROM {where}", list(params)).fetchone()[0])


def marks(ids: Sequence[object]) -> str:
    """``?,?,...``: one placeholder for each of `ids`."""
    return ",".join("?" * len(ids))

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
TARGET_SECONDS = 0.05
"""How long one prune transaction should hold the write lock."""
DURABILITY: Synchronous = "NORMAL"
"""A prune's commits are not flushed to disk one by one (WAL keeps them consistent): a
power loss may undo the last deletions, which the next prune repeats."""
PAUSE_SECONDS = 0.1
"""The least time between two write transactions of a prune: SQLite's busy handler sleeps
up to 100 ms between two tries, so a writer that waited on one prune transaction tries
again before the next one begins."""

BRIEF_SECONDS = 0.005
"""A transaction this short is followed by a pause as short (not `PAUSE_SECONDS`)."""


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


class Pacer:
    """Spaces the write transactions of one prune, leaving the lock free between them.

    Each waits until the lock has been free at least as long as the one before held it,
    and at least `PAUSE_SECONDS`. SQLite's locks are not fair: a writer waiting in its
    busy handler retries at growing intervals, up to 100 ms apart, and back-to-back
    transactions could keep missing it. The wait comes before the next transaction, so a
    prune that ends pays none.
    """

    def __init__(self) -> None:
        self._free_at = 0.0

    def paced(
        self, path: Path, work: Callable[[sqlite3.Connection], T], size: Size | None = None
    ) -> T:
        """`work` in one write transaction, once the pause after the last one is over.

        Timed from when the write lock is held, not from when it was asked for: waiting
        behind a busy daemon's writer is not holding the lock, and must not shrink the
        next batch (under load, batches timed from the request fell to one run each).
        """
        held: list[float] = []

        def timed(conn: sqlite3.Connection) -> T:
            held.append(time.monotonic())
            return work(conn)

        self.wait()
        result = _transaction(path, timed, DURABILITY)
        took = self.held_since(held[-1])
        if size is not None:
            size.took(took)
        return result

    def wait(self) -> None:
        """Sleep until the pause after the last transaction is over."""
        time.sleep(max(0.0, self._free_at - time.monotonic()))

    def held_since(self, started: float) -> float:
        """A transaction that held the lock from `started` has just ended; how long it held."""
        now = time.monotonic()
        took = now - started
        # One that found nothing to do held the lock too briefly to make anyone wait long.
        self._free_at = now + (took if took < BRIEF_SECONDS else max(PAUSE_SECONDS, took))
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

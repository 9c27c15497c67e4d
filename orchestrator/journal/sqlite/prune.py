"""Deleting old final runs, in transactions short enough never to stall the daemon's writer.

Each batch is one ``BEGIN IMMEDIATE`` transaction over at most `BATCH` runs (a few ms), on
a connection of its own: the daemon's group-commit writer, if one runs, interleaves with
them. A run goes with its checkpoints, timeline, waits and their buffers, routes and
recovery counts; an event goes once no remaining run was routed it, no wait buffers it,
and it has been routed. Non-final runs are never selected.

A dry run reads the same batches, in read transactions (no write lock), and counts what
would go.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar

from ..protocol import Synchronous
from .commands import _transaction, _write_error
from .connection import SQLITE_ERRORS, connect_writer, rollback_if_open

T = TypeVar("T")
BATCH = 100
"""Runs in the first transaction; later ones grow or shrink to take about `TARGET_SECONDS`."""
MAX_BATCH = 500
TARGET_SECONDS = 0.02
"""How long one prune transaction should hold the write lock."""
DURABILITY: Synchronous = "NORMAL"
"""A prune's commits are not flushed to disk one by one (WAL keeps them consistent): a
power loss may undo the last deletions, which the next prune repeats."""
PAUSE_SECONDS = 0.002
"""The least time between two write transactions of a prune."""
VACUUM_PAGES = 64
"""Pages freed by the first incremental-vacuum step; later ones adapt like batches."""

COUNTS = ("runs", "checkpoints", "timeline", "waits", "wait_buffer", "routes", "recoveries")
_CHILDREN = (  # (count, table): rows keyed by run, deleted before their run
    ("checkpoints", "checkpoints"),
    ("timeline", "timeline"),
    ("routes", "event_routes"),
    ("recoveries", "recoveries"),
)
_EVENT_GONE = (
    "DELETE FROM events WHERE event_id = ? AND routed_at IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM event_routes WHERE event_id = events.event_id)"
    " AND NOT EXISTS (SELECT 1 FROM wait_buffer WHERE event_id = events.event_id)"
)


def prune(
    path: Path,
    cutoffs: Mapping[str, int],
    *,
    events_before: int | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
    between: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Delete final runs of each status whose last update is before its cutoff (µs).

    `events_before` (µs) also sweeps events that were routed to no run at all and were
    created before it. `between` is called between transactions (a daemon yields there).
    Returns counts per kind of row: ``runs``, ``events``, ``checkpoints``, ...
    """
    counts = dict.fromkeys((*COUNTS, "events", "commands"), 0)
    seen: set[int] = set()  # a dry run's runs so far: their routes count as gone
    size = Size(batch)
    for status, cutoff in sorted(cutoffs.items()):
        after = (-1, -1)
        while True:
            work = partial(
                _batch,
                status=status,
                cutoff=cutoff,
                after=after,
                limit=size.now,
                counts=counts,
                seen=seen if dry_run else None,
            )
            if dry_run:  # reads alone: no write lock taken
                done = _read(path, work)
                if done is None:
                    break
            else:
                started = time.monotonic()
                done = _transaction(path, work, DURABILITY)
                if done is None:
                    break
                size.took(_pace(started))
            after = done
            if between is not None:
                between()
    if events_before is not None:
        counts["events"] += _sweep_events(path, events_before, dry_run, batch, between)
        counts["commands"] += _sweep_commands(path, events_before, dry_run, batch, between)
    return counts


def _sweep_commands(
    path: Path, before: int, dry_run: bool, batch: int, between: Callable[[], None] | None
) -> int:
    """Delete commands from other processes (the inbox) applied before `before`."""
    done = "SELECT id FROM inbox WHERE done_at IS NOT NULL AND done_at < ?"
    if dry_run:
        return _read(path, lambda conn: _count(conn, f"({done})", [before]))
    gone = 0
    while True:
        started = time.monotonic()
        step = _transaction(
            path,
            lambda conn: (
                conn.execute(
                    f"DELETE FROM inbox WHERE id IN ({done} LIMIT ?)", (before, batch)
                ).rowcount
            ),
            DURABILITY,
        )
        _pace(started)
        gone += step
        if step < batch:
            return gone
        if between is not None:
            between()


def _sweep_events(
    path: Path, before: int, dry_run: bool, batch: int, between: Callable[[], None] | None
) -> int:
    """Delete routed events created before `before` that no run was routed or buffers."""
    gone = 0
    after_id = 0
    while True:
        found = _read(path, partial(_unrouted, after=after_id, before=before, limit=batch))
        if found is None:
            return gone
        after_id, ids = found
        if ids and dry_run:
            gone += len(ids)
        elif ids:
            started = time.monotonic()
            gone += _transaction(path, partial(_drop_events, event_ids=ids), DURABILITY)
            _pace(started)
        if between is not None:
            between()


def vacuum(
    path: Path, *, pages: int = VACUUM_PAGES, between: Callable[[], None] | None = None
) -> int:
    """Give free pages back to the file system in small steps; returns how many were freed.

    Only a journal in ``auto_vacuum = INCREMENTAL`` (every journal created since schema 9,
    or converted by `convert_to_incremental`) can; on others this frees nothing.
    """
    freed = 0
    size = Size(pages, most=16 * VACUUM_PAGES)
    conn = connect_writer(path, DURABILITY)
    try:
        if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
            return 0
        while True:
            before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            if before == 0:
                return freed
            started = time.monotonic()
            # One short write transaction; Python steps a pragma once, executescript to the end.
            conn.executescript(f"PRAGMA incremental_vacuum({size.now});")
            step = before - int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            size.took(_pace(started))
            if step <= 0:
                return freed
            freed += step
            if between is not None:
                between()
    except SQLITE_ERRORS as exc:
        raise _write_error(path, exc) from exc
    finally:
        conn.close()


def auto_vacuum_mode(path: Path) -> int:
    """The journal's ``auto_vacuum``: 0 none, 1 full, 2 incremental."""
    return int(_read(path, lambda conn: conn.execute("PRAGMA auto_vacuum").fetchone()[0]))


def convert_to_incremental(path: Path) -> None:
    """Switch an older journal to incremental vacuum: rewrites the whole file (``VACUUM``).

    It holds the write lock for as long as the file takes to copy; run it with no daemon.
    """
    conn = connect_writer(path, "FULL")
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
    finally:
        conn.close()


def _batch(
    conn: sqlite3.Connection,
    *,
    status: str,
    cutoff: int,
    after: tuple[int, int],
    limit: int,
    counts: dict[str, int],
    seen: set[int] | None,
) -> tuple[int, int] | None:
    rows = conn.execute(
        "SELECT id, updated_at FROM runs WHERE status = ? AND updated_at < ?"
        " AND (updated_at, id) > (?, ?) ORDER BY updated_at, id LIMIT ?",
        (status, cutoff, after[1], after[0], limit),
    ).fetchall()
    if not rows:
        return None
    ids = [row[0] for row in rows]
    marks = ",".join("?" * len(ids))
    events = [
        row[0]
        for row in conn.execute(
            f"SELECT DISTINCT event_id FROM event_routes WHERE run IN ({marks})", ids
        )
    ]
    waits = f"SELECT id FROM waits WHERE run IN ({marks})"
    if seen is not None:  # a dry run: count, delete nothing
        seen.update(ids)
        counts["runs"] += len(ids)
        counts["wait_buffer"] += _count(conn, f"wait_buffer WHERE wait IN ({waits})", ids)
        counts["waits"] += _count(conn, f"waits WHERE run IN ({marks})", ids)
        for name, table in _CHILDREN:
            counts[name] += _count(conn, f"{table} WHERE run IN ({marks})", ids)
        counts["events"] += sum(1 for event_id in events if _would_go(conn, event_id, seen))
    else:
        counts["wait_buffer"] += conn.execute(
            f"DELETE FROM wait_buffer WHERE wait IN ({waits})", ids
        ).rowcount
        counts["waits"] += conn.execute(f"DELETE FROM waits WHERE run IN ({marks})", ids).rowcount
        for name, table in _CHILDREN:
            gone = conn.execute(f"DELETE FROM {table} WHERE run IN ({marks})", ids)
            counts[name] += gone.rowcount
        # A pruned child leaves its parent's list (by id: a parent may be pruned first).
        conn.execute(
            f"DELETE FROM children WHERE child IN (SELECT run_id FROM runs WHERE id IN ({marks}))",
            ids,
        )
        counts["runs"] += conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids).rowcount
        counts["events"] += sum(conn.execute(_EVENT_GONE, (e,)).rowcount for e in events)
    last = rows[-1]
    return (last[0], last[1])


def _count(conn: sqlite3.Connection, where: str, params: Iterable[object]) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {where}", list(params)).fetchone()[0])


def _would_go(conn: sqlite3.Connection, event_id: str, seen: set[int]) -> bool:
    routed = conn.execute(
        "SELECT routed_at IS NOT NULL FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if routed is None or not routed[0]:
        return False
    if conn.execute("SELECT 1 FROM wait_buffer WHERE event_id = ?", (event_id,)).fetchone():
        return False
    runs = conn.execute("SELECT run FROM event_routes WHERE event_id = ?", (event_id,))
    return all(row[0] in seen for row in runs)


def _unrouted(
    conn: sqlite3.Connection, *, after: int, before: int, limit: int
) -> tuple[int, list[str]] | None:
    rows = conn.execute(
        "SELECT id, event_id, created_at, routed_at IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM event_routes WHERE event_id = events.event_id)"
        " AND NOT EXISTS (SELECT 1 FROM wait_buffer WHERE event_id = events.event_id)"
        " FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    rows = [row for row in rows if row[2] < before]  # ids grow with time: stop at the cutoff
    if not rows:
        return None
    return rows[-1][0], [row[1] for row in rows if row[3]]


def _drop_events(conn: sqlite3.Connection, *, event_ids: list[str]) -> int:
    return sum(conn.execute(_EVENT_GONE, (e,)).rowcount for e in event_ids)


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


def _pace(started: float) -> float:
    """Leave the write lock free at least as long as the last transaction held it.

    SQLite's locks are not fair: a writer waiting in its busy handler retries at growing
    intervals, and back-to-back transactions could keep missing it. Returns how long the
    transaction took.
    """
    took = time.monotonic() - started
    time.sleep(max(PAUSE_SECONDS, took))
    return took


def _read(path: Path, work: Callable[[sqlite3.Connection], T]) -> T:
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

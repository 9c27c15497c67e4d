"""Deleting old final runs, in transactions short enough never to stall the daemon's writer.

Each batch is one ``BEGIN IMMEDIATE`` transaction over at most `BATCH` runs (a few ms), on
a connection of its own: the daemon's group-commit writer, if one runs, interleaves with
them. A run goes with its checkpoints, timeline, waits and their buffers, routes and
recovery counts and the idempotency key that started it; an event goes (with its key)
once no remaining run was routed it, no wait buffers it, and it has been routed. Non-final
runs are never selected. What a full prune sweeps besides is in `sweeps`, how it paces
its transactions in `pacing`.

A dry run reads the same batches, in read transactions (no write lock), and counts what
would go.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from .commands import _write_error
from .connection import SQLITE_ERRORS, connect_writer, rollback_if_open
from .pacing import DURABILITY, Pacer, Size, count, marks, read
from .sweeps import drop_events, sweep_commands, sweep_events, sweep_orphans, would_go

BATCH = 100
"""Runs in the first transaction; later ones grow or shrink to take about `TARGET_SECONDS`."""
VACUUM_PAGES = 64
"""Pages freed by the first incremental-vacuum step; later ones adapt like batches."""

COUNTS = ("runs", "checkpoints", "timeline", "waits", "wait_buffer", "routes", "recoveries")
_CHILDREN = (  # (count, table): rows keyed by run, deleted before their run
    ("checkpoints", "checkpoints"),
    ("timeline", "timeline"),
    ("routes", "event_routes"),
    ("recoveries", "recoveries"),
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
    created before it, applied commands, and timeline rows of no run (`sweeps`). `between`
    is called between transactions (a daemon yields there). Returns counts per kind of
    row: ``runs``, ``events``, ``checkpoints``, ``keys``, ...
    """
    counts = dict.fromkeys((*COUNTS, "events", "keys", "commands"), 0)
    seen: set[int] = set()  # a dry run's runs so far: their routes count as gone
    size = Size(batch)
    pacer = Pacer()
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
            done = read(path, work) if dry_run else pacer.paced(path, work, size)  # dry: no lock
            if done is None:
                break
            after = done
            if between is not None:
                between()
    if events_before is not None:
        for name, step in sweep_events(path, events_before, dry_run, batch, between, pacer).items():
            counts[name] += step
        counts["commands"] += sweep_commands(path, events_before, dry_run, batch, between, pacer)
        for name, step in sweep_orphans(
            path, events_before, dry_run, batch, between, pacer
        ).items():
            counts["routes" if name == "event_routes" else name] += step
    return counts


def vacuum(
    path: Path, *, pages: int = VACUUM_PAGES, between: Callable[[], None] | None = None
) -> int:
    """Give free pages back to the file system in small steps; returns how many were freed.

    Only a journal in ``auto_vacuum = INCREMENTAL`` (every journal created since schema 9,
    or converted by `convert_to_incremental`) can; on others this frees nothing.
    """
    freed = 0
    size = Size(pages, most=16 * VACUUM_PAGES)
    pacer = Pacer()
    conn = connect_writer(path, DURABILITY)
    try:
        if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
            return 0
        while True:
            step = _vacuum_step(conn, size, pacer)
            if step <= 0:
                return freed
            freed += step
            if between is not None:
                between()
    except SQLITE_ERRORS as exc:
        rollback_if_open(conn)
        raise _write_error(path, exc) from exc
    finally:
        conn.close()


def _vacuum_step(conn: sqlite3.Connection, size: Size, pacer: Pacer) -> int:
    """Free up to `size.now` pages in one write transaction, timed from holding the lock."""
    pacer.wait()
    conn.execute("BEGIN IMMEDIATE")
    held = time.monotonic()
    before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    # Python steps a statement once, and one step of this pragma frees one page.
    for _ in range(min(size.now, before)):
        conn.execute("PRAGMA incremental_vacuum(1)")
    after = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    conn.execute("COMMIT")
    size.took(pacer.held_since(held))
    return before - after


def auto_vacuum_mode(path: Path) -> int:
    """The journal's ``auto_vacuum``: 0 none, 1 full, 2 incremental."""
    return int(read(path, lambda conn: conn.execute("PRAGMA auto_vacuum").fetchone()[0]))


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
        "SELECT id, updated_at, run_id FROM runs WHERE status = ? AND updated_at < ?"
        " AND (updated_at, id) > (?, ?) ORDER BY updated_at, id LIMIT ?",
        (status, cutoff, after[1], after[0], limit),
    ).fetchall()
    if not rows:
        return None
    ids = [row[0] for row in rows]
    run_ids = [row[2] for row in rows]
    these = marks(ids)
    events = [
        row[0]
        for row in conn.execute(
            f"SELECT DISTINCT event_id FROM event_routes WHERE run IN ({these})", ids
        )
    ]
    tables = [
        ("wait_buffer", f"wait_buffer WHERE wait IN (SELECT id FROM waits WHERE run IN ({these}))"),
        ("waits", f"waits WHERE run IN ({these})"),
        *((name, f"{table} WHERE run IN ({these})") for name, table in _CHILDREN),
    ]
    keys = f"idempotency_keys WHERE kind = 'invoke' AND target IN ({these})"
    if seen is not None:  # a dry run: count, delete nothing
        seen.update(ids)
        counts["runs"] += len(ids)
        for name, where in tables:
            counts[name] += count(conn, where, ids)
        counts["keys"] += count(conn, keys, run_ids)
        going = [event_id for event_id in events if would_go(conn, event_id, seen)]
        counts["events"] += len(going)
        counts["keys"] += count(
            conn, f"idempotency_keys WHERE kind = 'emit' AND target IN ({marks(going)})", going
        )
    else:
        for name, where in tables:
            counts[name] += conn.execute(f"DELETE FROM {where}", ids).rowcount
        counts["keys"] += conn.execute(f"DELETE FROM {keys}", run_ids).rowcount
        # A pruned child leaves its parent's list (by id: a parent may be pruned first).
        conn.execute(
            f"DELETE FROM children WHERE child IN (SELECT run_id FROM runs WHERE id IN ({these}))",
            ids,
        )
        counts["runs"] += conn.execute(f"DELETE FROM runs WHERE id IN ({these})", ids).rowcount
        gone, emit_keys = drop_events(conn, events)
        counts["events"] += gone
        counts["keys"] += emit_keys
    last = rows[-1]
    return (last[0], last[1])

"""What a full prune sweeps besides runs: events, applied commands, rows of no run.

Each sweep costs what it deletes, not the journal's size:

- **events** routed to no run: a mark in ``prune_marks`` says how far the sweep has come.
  Below it every event is gone or named by a run (a route or a buffer), and such an
  event is deleted with the last run that names it (`drop_events`), so a pass starts at
  the mark. It never passes an event not routed yet.
- **commands** applied: taken oldest first, up to the first one not applied or too young.
- **timeline rows of no run** (``run`` NULL: through an index), and rows of runs that no
  longer exist (deleted outside the orchestrator with foreign keys off): a walk over the
  timeline's runs that resumes at its mark, at most `ORPHAN_WALK` runs a pass, and wraps.

The newest event and the newest command are never deleted: SQLite gives a new row the
largest id plus one, and the daemon reads rows other processes write by id, past the last
one it saw; deleting the newest would let a new row take an id it has seen already.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from .pacing import Pacer, Size, count, marks, read

ORPHAN_WALK = 50_000
"""Runs of the timeline one pass checks for a missing run (the walk wraps around)."""
_WALK_STEP = 1_000

_NOT_NAMED = (
    "NOT EXISTS (SELECT 1 FROM event_routes WHERE event_id = events.event_id)"
    " AND NOT EXISTS (SELECT 1 FROM wait_buffer WHERE event_id = events.event_id)"
)
_EVENT_GONE = (
    "DELETE FROM events WHERE event_id = ? AND routed_at IS NOT NULL"
    f" AND id < (SELECT max(id) FROM events) AND {_NOT_NAMED}"
)
_RUN_ROWS = ("checkpoints", "timeline", "event_routes", "recoveries")


def drop_events(conn: sqlite3.Connection, event_ids: Iterable[str]) -> tuple[int, int]:
    """Delete these events where nothing names them any more, with their emit keys.

    Returns how many events and keys went. The newest event stays (see the module); the
    sweep never passes it either, so one kept here is still ahead of the sweep's mark.
    """
    gone = keys = 0
    for event_id in event_ids:
        if conn.execute(_EVENT_GONE, (event_id,)).rowcount:
            gone += 1
            keys += conn.execute(
                "DELETE FROM idempotency_keys WHERE kind = 'emit' AND target = ?", (event_id,)
            ).rowcount
    return gone, keys


def would_go(conn: sqlite3.Connection, event_id: str, seen: set[int]) -> bool:
    """Whether `drop_events` would delete this event once the runs in `seen` are gone."""
    row = conn.execute(
        "SELECT routed_at IS NOT NULL AND id < (SELECT max(id) FROM events)"
        " AND NOT EXISTS (SELECT 1 FROM wait_buffer WHERE event_id = events.event_id)"
        " FROM events WHERE event_id = ?",
        (event_id,),
    ).fetchone()
    if row is None or not row[0]:
        return False
    runs = conn.execute("SELECT run FROM event_routes WHERE event_id = ?", (event_id,))
    return all(route[0] in seen for route in runs)


def sweep_events(
    path: Path,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
    pacer: Pacer,
) -> dict[str, int]:
    """Delete routed events created before `before` that no run names, from the mark on."""
    counts = {"events": 0, "keys": 0}
    after = read(path, _mark)
    while True:
        found = read(path, partial(_unnamed, after=after, before=before, limit=batch))
        last, ids, finished = found
        if dry_run:
            counts["events"] += len(ids)
            if ids:
                counts["keys"] += read(path, partial(_emit_keys, ids=ids))
        elif last > after:
            gone, keys = pacer.paced(path, partial(_drop_and_mark, ids=ids, last=last))
            counts["events"] += gone
            counts["keys"] += keys
        after = max(after, last)
        if finished:
            return counts
        if between is not None:
            between()


def _mark(conn: sqlite3.Connection, name: str = "events") -> int:
    row = conn.execute("SELECT value FROM prune_marks WHERE name = ?", (name,)).fetchone()
    return 0 if row is None else int(row[0])


def _set_mark(conn: sqlite3.Connection, *, name: str, value: int) -> None:
    conn.execute(
        "INSERT INTO prune_marks (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _unnamed(
    conn: sqlite3.Connection, *, after: int, before: int, limit: int
) -> tuple[int, list[str], bool]:
    """The last id the mark may pass from `after`, the events to delete, and whether it ends.

    The sweep ends at an event too young or not routed yet, or past the last event.
    """
    newest = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    rows = conn.execute(
        f"SELECT id, event_id, created_at, routed_at IS NOT NULL, {_NOT_NAMED}"
        " FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    last, ids = after, list[str]()
    for row_id, event_id, created_at, routed, unnamed in rows:
        if created_at >= before or not routed or row_id >= newest:
            return last, ids, True
        if unnamed:
            ids.append(event_id)
        last = row_id
    return last, ids, len(rows) < limit


def _emit_keys(conn: sqlite3.Connection, *, ids: list[str]) -> int:
    return count(conn, f"idempotency_keys WHERE kind = 'emit' AND target IN ({marks(ids)})", ids)


def _drop_and_mark(conn: sqlite3.Connection, *, ids: list[str], last: int) -> tuple[int, int]:
    _set_mark(conn, name="events", value=last)
    return drop_events(conn, ids)


def sweep_commands(
    path: Path,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
    pacer: Pacer,
) -> int:
    """Delete commands from other processes (the inbox) applied before `before`.

    Oldest first, up to the first one not applied yet or applied since.
    """
    gone = 0
    after = 0
    while True:
        work = partial(_applied, after=after, before=before, limit=batch, delete=not dry_run)
        found = read(path, work) if dry_run else pacer.paced(path, work)
        ids, finished = found
        gone += len(ids)
        if finished:
            return gone
        after = ids[-1]
        if between is not None:
            between()


def _applied(
    conn: sqlite3.Connection, *, after: int, before: int, limit: int, delete: bool
) -> tuple[list[int], bool]:
    newest = conn.execute("SELECT coalesce(max(id), 0) FROM inbox").fetchone()[0]
    rows = conn.execute(
        "SELECT id, done_at FROM inbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
    ).fetchall()
    ids = list[int]()
    finished = len(rows) < limit
    for row_id, done_at in rows:
        if done_at is None or done_at >= before or row_id >= newest:
            finished = True
            break
        ids.append(row_id)
    if ids and delete:
        conn.execute(f"DELETE FROM inbox WHERE id IN ({marks(ids)})", ids)
    return ids, finished or not ids


def sweep_orphans(
    path: Path,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
    pacer: Pacer,
) -> dict[str, int]:
    """Delete timeline rows of no run created before `before`, and rows of missing runs."""
    counts = dict.fromkeys((*_RUN_ROWS, "waits", "wait_buffer"), 0)
    counts["timeline"] = _sweep_no_run(path, before, dry_run, batch, between, pacer)
    after = read(path, partial(_mark, name="orphans"))
    walked = 0
    while walked < ORPHAN_WALK:
        runs, missing = read(path, partial(_missing_runs, after=after, limit=_WALK_STEP))
        walked += len(runs)
        found: dict[str, int] = {}
        if missing and dry_run:
            found = read(path, partial(_count_run_rows, rows=missing))
        elif missing:
            found = pacer.paced(path, partial(_drop_run_rows, rows=missing))
        for name, step in found.items():
            counts[name] += step
        after = runs[-1] if len(runs) == _WALK_STEP else 0  # at the end: wrap around
        if not after:
            break
        if between is not None:
            between()
    if not dry_run:
        pacer.paced(path, partial(_set_mark, name="orphans", value=after))
    return counts


def _sweep_no_run(
    path: Path,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
    pacer: Pacer,
) -> int:
    if dry_run:
        return read(path, partial(_count_no_run, before=before))
    gone = 0
    size = Size(batch, most=10 * batch)
    while True:
        limit = size.now
        step = pacer.paced(path, partial(_drop_no_run, before=before, limit=limit), size)
        gone += step
        if step < limit:
            return gone
        if between is not None:
            between()


def _count_no_run(conn: sqlite3.Connection, *, before: int) -> int:
    return count(conn, "timeline WHERE run IS NULL AND at < ?", [before])


def _drop_no_run(conn: sqlite3.Connection, *, before: int, limit: int) -> int:
    return int(
        conn.execute(
            "DELETE FROM timeline WHERE id IN"
            " (SELECT id FROM timeline WHERE run IS NULL AND at < ? LIMIT ?)",
            (before, limit),
        ).rowcount
    )


def _missing_runs(
    conn: sqlite3.Connection, *, after: int, limit: int
) -> tuple[list[int], list[int]]:
    """The next `limit` runs the timeline names after `after`, and those with no run row."""
    runs = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT run FROM timeline WHERE run > ? ORDER BY run LIMIT ?",
            (after, limit),
        )
    ]
    if not runs:
        return [], []
    found = conn.execute(f"SELECT id FROM runs WHERE id IN ({marks(runs)})", runs)
    present = {row[0] for row in found}
    return runs, [run for run in runs if run not in present]


def _run_tables(rows: list[int]) -> list[tuple[str, str]]:
    where = f"run IN ({marks(rows)}) AND NOT EXISTS (SELECT 1 FROM runs WHERE id = run)"
    waits = f"SELECT id FROM waits WHERE {where}"
    return [
        ("wait_buffer", f"wait_buffer WHERE wait IN ({waits})"),
        ("waits", f"waits WHERE {where}"),
        *((name, f"{name} WHERE {where}") for name in _RUN_ROWS),
    ]


def _count_run_rows(conn: sqlite3.Connection, *, rows: list[int]) -> dict[str, int]:
    return {name: count(conn, where, rows) for name, where in _run_tables(rows)}


def _drop_run_rows(conn: sqlite3.Connection, *, rows: list[int]) -> dict[str, int]:
    """Rows of runs that are missing still (checked again under the write lock)."""
    return {
        name: int(conn.execute(f"DELETE FROM {where}", rows).rowcount)
        for name, where in _run_tables(rows)
    }

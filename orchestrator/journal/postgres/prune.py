"""Deleting old final runs of a PostgreSQL journal, as `sqlite/prune.py` and `sweeps.py` do.

The same rows go, chosen by the same rules and limits: final runs of each status last
updated before its cutoff, `BATCH` runs a transaction, oldest first, with their
checkpoints, timeline, waits and buffers, routes, recovery counts and invoke keys; then
the events no remaining run names (with their emit keys). With `events_before`: routed
events that no run names (from the ``prune_marks`` mark on), applied commands, timeline
rows of no run. Never the newest event or command: the daemon reads other processes'
rows by id, past the last one it saw.

What differs from SQLite: no pacing. PostgreSQL's row locks let a daemon's writer commit
beside a prune's transaction, so there is no lock to hand back between batches (they
stay short: `BATCH` runs). No walk for rows of missing runs either: the foreign keys
(``ON DELETE CASCADE``) keep every run's rows with their run. `vacuum` runs ``VACUUM`` on
the tables a prune deletes from (it takes no lock a writer waits for) and returns the
pages the tables gave back to the file system; autovacuum would reclaim the space for
reuse anyway, a prune only makes it happen now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

from .blocking import Session, Tx, connect_blocking, failed
from .connection import load_psycopg

BATCH = 100
"""Runs in one transaction (SQLite's first batch; it has no lock to share, so no pacing)."""
COUNTS = ("runs", "checkpoints", "timeline", "waits", "wait_buffer", "routes", "recoveries")
_CHILDREN = (  # (count, table): rows keyed by run, deleted before their run
    ("checkpoints", "checkpoints"),
    ("timeline", "timeline"),
    ("routes", "event_routes"),
    ("recoveries", "recoveries"),
)
_NOT_NAMED = (
    "NOT EXISTS (SELECT 1 FROM event_routes WHERE event_id = events.event_id)"
    " AND NOT EXISTS (SELECT 1 FROM wait_buffer WHERE event_id = events.event_id)"
)
_EMIT_KEYS = "idempotency_keys WHERE kind = 'emit' AND target = ANY(%s)"
VACUUMED = (
    "runs",
    "checkpoints",
    "snapshots",
    "timeline",
    "events",
    "event_routes",
    "waits",
    "wait_buffer",
    "recoveries",
    "idempotency_keys",
    "children",
    "inbox",
)


def prune(
    url: str,
    cutoffs: Mapping[str, int],
    *,
    events_before: int | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
    between: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Delete final runs of each status whose last update is before its cutoff (µs).

    Returns counts per kind of row: ``runs``, ``events``, ``checkpoints``, ``keys``, ...
    A dry run reads the same batches in transactions it rolls back, and counts.
    """
    counts = dict.fromkeys((*COUNTS, "events", "keys", "commands"), 0)
    seen: set[int] = set()  # a dry run's runs so far: their routes count as gone
    with Session(url) as session:
        for status, cutoff in sorted(cutoffs.items()):
            after = (-1, -1)
            while True:
                work = partial(
                    _batch,
                    status=status,
                    cutoff=cutoff,
                    after=after,
                    limit=batch,
                    counts=counts,
                    seen=seen if dry_run else None,
                )
                done = session.run(work, write=not dry_run)
                if done is None:
                    break
                after = done
                if between is not None:
                    between()
        if events_before is not None:
            for name, step in _sweep_events(session, events_before, dry_run, batch, between):
                counts[name] += step
            counts["commands"] += _sweep_commands(session, events_before, dry_run, batch, between)
            counts["timeline"] += _sweep_no_run(session, events_before, dry_run, batch, between)
    return counts


def vacuum(url: str, *, between: Callable[[], None] | None = None) -> int:
    """``VACUUM`` each table a prune deletes from; returns the pages given back.

    One table at a time, on an autocommit connection (``VACUUM`` runs outside a
    transaction); `between` is called after each.
    """
    pg = load_psycopg()
    conn = connect_blocking(url, autocommit=True)
    try:
        tx = Tx(conn)
        before = _pages(tx)
        for table in VACUUMED:
            tx.run(f"VACUUM {table}")
            if between is not None:
                between()
        return max(0, before - _pages(tx))
    except pg.Error as exc:
        raise failed(url, exc) from exc
    finally:
        conn.close()


def _pages(tx: Tx) -> int:
    row = tx.one(
        "SELECT coalesce(sum(pg_relation_size(c.oid)), 0) / current_setting('block_size')::int"
        " FROM pg_class c WHERE c.oid = ANY(%s::regclass[])",
        (list(VACUUMED),),
    )
    return int(row[0])


def _count(tx: Tx, where: str, params: Sequence[object]) -> int:
    return int(tx.one(f"SELECT count(*) FROM {where}", params)[0])


def _batch(
    tx: Tx,
    *,
    status: str,
    cutoff: int,
    after: tuple[int, int],
    limit: int,
    counts: dict[str, int],
    seen: set[int] | None,
) -> tuple[int, int] | None:
    rows = tx.rows(
        "SELECT id, updated_at, run_id FROM runs WHERE status = %s AND updated_at < %s"
        " AND (updated_at, id) > (%s, %s) ORDER BY updated_at, id LIMIT %s",
        (status, cutoff, after[1], after[0], limit),
    )
    if not rows:
        return None
    ids = [int(row[0]) for row in rows]
    run_ids = [str(row[2]) for row in rows]
    events = [
        str(row[0])
        for row in tx.rows("SELECT DISTINCT event_id FROM event_routes WHERE run = ANY(%s)", (ids,))
    ]
    tables = [
        ("wait_buffer", "wait_buffer WHERE wait IN (SELECT id FROM waits WHERE run = ANY(%s))"),
        ("waits", "waits WHERE run = ANY(%s)"),
        *((name, f"{table} WHERE run = ANY(%s)") for name, table in _CHILDREN),
    ]
    keys = "idempotency_keys WHERE kind = 'invoke' AND target = ANY(%s)"
    if seen is not None:  # a dry run: count, delete nothing
        seen.update(ids)
        counts["runs"] += len(ids)
        for name, where in tables:
            counts[name] += _count(tx, where, (ids,))
        counts["keys"] += _count(tx, keys, (run_ids,))
        going = [event for event in events if _would_go(tx, event, seen)]
        counts["events"] += len(going)
        counts["keys"] += _count(tx, _EMIT_KEYS, (going,))
    else:
        for name, where in tables:
            counts[name] += tx.run(f"DELETE FROM {where}", (ids,))
        counts["keys"] += tx.run(f"DELETE FROM {keys}", (run_ids,))
        # A pruned child leaves its parent's list (by id: a parent may be pruned first).
        tx.run(
            "DELETE FROM children WHERE child IN (SELECT run_id FROM runs WHERE id = ANY(%s))",
            (ids,),
        )
        counts["runs"] += tx.run("DELETE FROM runs WHERE id = ANY(%s)", (ids,))
        gone, emit_keys = _drop_events(tx, events)
        counts["events"] += gone
        counts["keys"] += emit_keys
    last = rows[-1]
    return (int(last[0]), int(last[1]))


def _drop_events(tx: Tx, event_ids: list[str]) -> tuple[int, int]:
    """Delete these events where nothing names them any more, with their emit keys.

    Returns how many events and keys went. The newest event stays (see the module).
    """
    if not event_ids:
        return 0, 0
    gone = [
        str(row[0])
        for row in tx.rows(
            "DELETE FROM events WHERE event_id = ANY(%s) AND routed_at IS NOT NULL"
            f" AND id < (SELECT max(id) FROM events) AND {_NOT_NAMED} RETURNING event_id",
            (event_ids,),
        )
    ]
    if not gone:
        return 0, 0
    keys = tx.run("DELETE FROM idempotency_keys WHERE kind = 'emit' AND target = ANY(%s)", (gone,))
    return len(gone), keys


def _would_go(tx: Tx, event_id: str, seen: set[int]) -> bool:
    """Whether `_drop_events` would delete this event once the runs in `seen` are gone."""
    row = tx.one(
        "SELECT routed_at IS NOT NULL AND id < (SELECT max(id) FROM events)"
        " AND NOT EXISTS (SELECT 1 FROM wait_buffer WHERE event_id = events.event_id)"
        " FROM events WHERE event_id = %s",
        (event_id,),
    )
    if row is None or not row[0]:
        return False
    runs = tx.rows("SELECT run FROM event_routes WHERE event_id = %s", (event_id,))
    return all(int(route[0]) in seen for route in runs)


def _mark(tx: Tx, name: str = "events") -> int:
    row = tx.one("SELECT value FROM prune_marks WHERE name = %s", (name,))
    return 0 if row is None else int(row[0])


def _sweep_events(
    session: Session,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
) -> list[tuple[str, int]]:
    """Delete routed events created before `before` that no run names, from the mark on."""
    counts = {"events": 0, "keys": 0}
    after = session.run(_mark, write=False)
    while True:
        last, ids, finished = session.run(
            partial(_unnamed, after=after, before=before, limit=batch), write=False
        )
        if dry_run:
            counts["events"] += len(ids)
            if ids:
                counts["keys"] += session.run(
                    partial(_count, where=_EMIT_KEYS, params=(ids,)), write=False
                )
        elif last > after:
            gone, keys = session.run(partial(_drop_and_mark, ids=ids, last=last))
            counts["events"] += gone
            counts["keys"] += keys
        after = max(after, last)
        if finished:
            return list(counts.items())
        if between is not None:
            between()


def _unnamed(tx: Tx, *, after: int, before: int, limit: int) -> tuple[int, list[str], bool]:
    """The last id the mark may pass from `after`, the events to delete, and whether it ends.

    The sweep ends at an event too young or not routed yet, or past the last event.
    """
    newest = int(tx.one("SELECT coalesce(max(id), 0) FROM events")[0])
    rows = tx.rows(
        f"SELECT id, event_id, created_at, routed_at IS NOT NULL, {_NOT_NAMED}"
        " FROM events WHERE id > %s ORDER BY id LIMIT %s",
        (after, limit),
    )
    last, ids = after, list[str]()
    for row_id, event_id, created_at, routed, unnamed in rows:
        if created_at >= before or not routed or row_id >= newest:
            return last, ids, True
        if unnamed:
            ids.append(event_id)
        last = int(row_id)
    return last, ids, len(rows) < limit


def _drop_and_mark(tx: Tx, *, ids: list[str], last: int) -> tuple[int, int]:
    tx.run(
        "INSERT INTO prune_marks (name, value) VALUES ('events', %s)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (last,),
    )
    return _drop_events(tx, ids)


def _sweep_commands(
    session: Session,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
) -> int:
    """Delete commands applied before `before`: oldest first, up to one not applied (yet)."""
    gone = 0
    after = 0
    while True:
        work = partial(_applied, after=after, before=before, limit=batch, delete=not dry_run)
        ids, finished = session.run(work, write=not dry_run)
        gone += len(ids)
        if finished:
            return gone
        after = ids[-1]
        if between is not None:
            between()


def _applied(
    tx: Tx, *, after: int, before: int, limit: int, delete: bool
) -> tuple[list[int], bool]:
    newest = int(tx.one("SELECT coalesce(max(id), 0) FROM inbox")[0])
    rows = tx.rows(
        "SELECT id, done_at FROM inbox WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
    )
    ids = list[int]()
    finished = len(rows) < limit
    for row_id, done_at in rows:
        if done_at is None or done_at >= before or row_id >= newest:
            finished = True
            break
        ids.append(int(row_id))
    if ids and delete:
        tx.run("DELETE FROM inbox WHERE id = ANY(%s)", (ids,))
    return ids, finished or not ids


def _sweep_no_run(
    session: Session,
    before: int,
    dry_run: bool,
    batch: int,
    between: Callable[[], None] | None,
) -> int:
    """Delete timeline rows of no run written before `before`, `batch` at a time."""
    if dry_run:
        return session.run(
            partial(_count, where="timeline WHERE run IS NULL AND at < %s", params=(before,)),
            write=False,
        )
    gone = 0
    while True:
        step = session.run(
            lambda tx: tx.run(
                "DELETE FROM timeline WHERE id IN"
                " (SELECT id FROM timeline WHERE run IS NULL AND at < %s LIMIT %s)",
                (before, batch),
            )
        )
        gone += step
        if step < batch:
            return gone
        if between is not None:
            between()

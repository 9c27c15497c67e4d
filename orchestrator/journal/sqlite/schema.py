"""The journal's schema: an append-only list of migrations keyed by ``PRAGMA user_version``.

Never edit a migration that has shipped: append a new one. `migrate` runs on every open,
under the write lock, and refuses a file that belongs to something else.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ...errors import JournalCorrupt, JournalError
from .connection import SQLITE_ERRORS, open_error

APPLICATION_ID = 0x4F524348  # "ORCH": marks the file as ours.

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, checkpoints, timeline, workflow versions, the lease.
    """
    CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        token TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        heartbeat_at INTEGER NOT NULL,
        ready INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE workflow_versions (
        workflow_id TEXT NOT NULL,
        version TEXT NOT NULL,
        file TEXT,
        definition TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        workflow_id TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        position INTEGER NOT NULL DEFAULT 0,
        step TEXT,
        step_started_at INTEGER,
        error TEXT,
        error_code TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX runs_unfinished ON runs (status, id)
        WHERE status IN ('queued', 'running', 'paused');
    CREATE TABLE checkpoints (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        step TEXT,
        started_at INTEGER NOT NULL,
        ended_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (run, position)
    ) WITHOUT ROWID;
    CREATE TABLE timeline (
        id INTEGER PRIMARY KEY,
        run INTEGER REFERENCES runs (id) ON DELETE CASCADE,
        position INTEGER,
        at INTEGER NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        message TEXT,
        data TEXT
    );
    CREATE INDEX timeline_by_run ON timeline (run, id);
    """,
    # 2: events and how each was routed, waits and their buffers, schedules, the inbox.
    """
    ALTER TABLE checkpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'step';
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        routed_at INTEGER
    );
    CREATE INDEX events_unrouted ON events (id) WHERE routed_at IS NULL;
    CREATE TABLE event_routes (
        event_id TEXT NOT NULL,
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        action TEXT NOT NULL,
        wait INTEGER,
        PRIMARY KEY (event_id, run, action)
    ) WITHOUT ROWID;
    CREATE INDEX event_routes_by_run ON event_routes (run);
    CREATE TABLE waits (
        id INTEGER PRIMARY KEY,
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        event_type TEXT,
        conditions TEXT NOT NULL,
        persistent INTEGER NOT NULL,
        status TEXT NOT NULL,
        into_key TEXT,
        timeout_at INTEGER,
        on_timeout TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX waits_live ON waits (run) WHERE status IN ('armed', 'parked');
    CREATE TABLE wait_buffer (
        wait INTEGER NOT NULL REFERENCES waits (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (wait, seq)
    ) WITHOUT ROWID;
    CREATE TABLE schedule_state (
        workflow_id TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        last_tick INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, trigger_id)
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        run_id TEXT,
        workflow_id TEXT,
        trigger_id TEXT,
        payload TEXT,
        created_at INTEGER NOT NULL,
        done_at INTEGER,
        outcome TEXT
    );
    CREATE INDEX inbox_pending ON inbox (id) WHERE done_at IS NULL;
    """,
    # 3: find run-scoped services opened but never closed (cleanup after a crash).
    """
    CREATE INDEX timeline_services ON timeline (run, id)
        WHERE kind IN ('service.opened', 'services.closed');
    """,
    # 4: what the process holding the lease has registered now, and files that failed to
    # load. Rows are upserted, never deleted one by one: a removal sets `present = 0` (or
    # `message` NULL), so one statement keeps a batch's changes to a key in order.
    """
    CREATE TABLE workflows (
        workflow_id TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        file TEXT,
        triggers TEXT NOT NULL,
        mode TEXT NOT NULL,
        loaded_at INTEGER NOT NULL,
        present INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE load_errors (
        file TEXT PRIMARY KEY,
        line INTEGER,
        message TEXT,
        at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5: the dashboard lists runs of one status or one workflow, newest first, and counts
    # runs by status, on every change: with 100,000 runs these need indexes.
    """
    CREATE INDEX runs_by_status ON runs (status, id);
    CREATE INDEX runs_by_workflow ON runs (workflow_id, id);
    """,
    # 6: the files each `FileTrigger` watch already turned into events, committed with each
    # event, so a restart repeats none. Upserted like workflows: a file gone is inode NULL.
    """
    CREATE TABLE files_seen (
        dir TEXT NOT NULL,
        glob TEXT NOT NULL,
        name TEXT NOT NULL,
        inode INTEGER,
        at INTEGER NOT NULL,
        PRIMARY KEY (dir, glob, name)
    ) WITHOUT ROWID;
    """,
    # 7: how often start-up recovery continued each run at each step (the crash-loop guard).
    # Committed before the step starts again, so a crash can never make it undercount.
    """
    CREATE TABLE recoveries (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run, step)
    ) WITHOUT ROWID;
    """,
    # 8: why the lease holder's journal writes are failing (it retries them), NULL while
    # they succeed: written with the lease's heartbeat when that much can be written.
    """
    ALTER TABLE lease ADD COLUMN degraded TEXT;
    """,
    # 9: idempotency keys of `emit` and `invoke` (kind 'emit' or 'invoke', one namespace
    # each) and what each produced first (an event id, a run id); committed with that event
    # or run. The primary key is what makes two processes racing on one key write one row.
    """
    CREATE TABLE idempotency_keys (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        target TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    """,
    # 10: prune finds final runs by status and end, deletes a run's waits, and asks whether
    # an event is buffered, each through an index. Journals created from now on are in
    # auto_vacuum = INCREMENTAL (set before their first page); older ones stay as they are
    # until `orchestrator prune --vacuum` converts them (a VACUUM: no migration holds the
    # write lock that long).
    """
    CREATE INDEX runs_by_end ON runs (status, updated_at);
    CREATE INDEX waits_by_run ON waits (run);
    CREATE INDEX wait_buffer_by_event ON wait_buffer (event_id);
    """,
    # 11: where a forked run came from: the run it was forked from and the step it started
    # at (both NULL for every other run). Ids, not row references: the source may be pruned.
    """
    ALTER TABLE runs ADD COLUMN forked_from_run TEXT;
    ALTER TABLE runs ADD COLUMN forked_from_step TEXT;
    """,
    # 12: disable / enable switches, keyed by workflow id and trigger id ('' for the whole
    # workflow), written when the daemon applies the command (kept when enabled again: the
    # time a schedule was enabled is where its ticks start again, with no catch-up); and
    # each armed schedule's next tick (NULL while disabled or disarmed).
    """
    CREATE TABLE switches (
        workflow_id TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        changed_at INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, trigger_id)
    ) WITHOUT ROWID;
    ALTER TABLE schedule_state ADD COLUMN next_tick INTEGER;
    """,
    # 13: prune takes idempotency keys with the run or event each names, finds timeline
    # rows of no run without a scan, and remembers how far its sweep of events has come
    # (`prune_marks`: below the mark every event is swept or named by a run, so a pass
    # costs what it deletes).
    """
    CREATE INDEX idempotency_keys_by_target ON idempotency_keys (kind, target);
    CREATE INDEX timeline_no_run ON timeline (at) WHERE run IS NULL;
    CREATE TABLE prune_marks (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 14: child runs: which run's step started each (`ctx.start`), in the order it started
    # them (ids, not row references: either may be pruned first); and a join's run ids
    # (a JSON list) on its wait (NULL for every other wait).
    """
    CREATE TABLE children (
        child TEXT PRIMARY KEY,
        parent TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        n INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX children_by_parent ON children (parent, created_at, n);
    ALTER TABLE waits ADD COLUMN joins TEXT;
    """,
    # 15: the step a paused run waits in (the one that called `ctx.pause`, `ctx.sleep` or
    # `ctx.join`), written when it pauses and cleared when it wakes or a step starts or
    # ends; `step` keeps naming the step it continues at. Readers show it as the step of a
    # run paused (or aborted or failed while it waited).
    """
    ALTER TABLE runs ADD COLUMN paused_in TEXT;
    """,
    # 16: the dashboard's per-workflow figures: runs and failures of one workflow since a
    # time, and its latest completed runs, each one range of this index (bounded reads).
    """
    CREATE INDEX runs_by_workflow_status ON runs (workflow_id, status, created_at);
    """,
    # 17: checkpoints as deltas (`sqlite/deltas.py`). `base` NULL: `state` is the whole
    # state (every checkpoint written before this migration); `base` = the row's position:
    # the whole state is in `snapshots` (id: run * 2^24 + position), a rowid table, whose
    # rows stay on their page up to ~4 KB; else `state` is a JSON merge patch (RFC 7396)
    # against the same run's checkpoint at position `base`, itself whole. A run's
    # snapshots go with it.
    """
    ALTER TABLE checkpoints ADD COLUMN base INTEGER;
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TRIGGER runs_snapshots AFTER DELETE ON runs BEGIN
        DELETE FROM snapshots WHERE id >= old.id * 16777216 AND id < (old.id + 1) * 16777216;
    END;
    """,
    # 18: a journal of 1,000,000 runs reads as fast as a small one. `run_counts`: how many
    # runs each workflow and trigger has in each status, kept by triggers in the writes'
    # own transactions (the dashboard counts runs on every change: a scan of every run
    # before). `runs_errors`: the runs that have an error, for the dashboard's search.
    """
    CREATE TABLE run_counts (
        workflow_id TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        status TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, trigger_id, status)
    ) WITHOUT ROWID;
    INSERT INTO run_counts (workflow_id, trigger_id, status, n)
        SELECT workflow_id, trigger_id, status, count(*) FROM runs GROUP BY 1, 2, 3;
    CREATE TRIGGER run_counts_insert AFTER INSERT ON runs BEGIN
        INSERT INTO run_counts (workflow_id, trigger_id, status, n)
            VALUES (new.workflow_id, new.trigger_id, new.status, 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER run_counts_update AFTER UPDATE OF workflow_id, trigger_id, status ON runs
        WHEN old.status IS NOT new.status OR old.workflow_id IS NOT new.workflow_id
            OR old.trigger_id IS NOT new.trigger_id
    BEGIN
        UPDATE run_counts SET n = n - 1 WHERE workflow_id = old.workflow_id
            AND trigger_id = old.trigger_id AND status = old.status;
        INSERT INTO run_counts (workflow_id, trigger_id, status, n)
            VALUES (new.workflow_id, new.trigger_id, new.status, 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER run_counts_delete AFTER DELETE ON runs BEGIN
        UPDATE run_counts SET n = n - 1 WHERE workflow_id = old.workflow_id
            AND trigger_id = old.trigger_id AND status = old.status;
    END;
    CREATE INDEX runs_errors ON runs (error, error_code) WHERE error IS NOT NULL;
    """,
)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the journal at `path` to the latest schema, or refuse a foreign file."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        upgrade(conn, path)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """`migrate` inside a write transaction the caller holds (and commits)."""
    version = _check_ownership(conn, path)
    for number in range(version + 1, len(MIGRATIONS) + 1):
        # executescript would COMMIT first; run statements one by one instead.
        for statement in _statements(MIGRATIONS[number - 1]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")


def _check_ownership(conn: sqlite3.Connection, path: Path) -> int:
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    except SQLITE_ERRORS as exc:
        raise open_error(path, exc, write=True) from exc
    if app_id == 0 and tables == 0:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        return 0
    if app_id != APPLICATION_ID:
        raise JournalCorrupt(
            f"{path} is a SQLite database of another application, not a journal; "
            "pass the right --db or choose a new file"
        )
    if version > len(MIGRATIONS):
        raise JournalError(
            f"{path} was written by a newer orchestrator (schema {version}, this one knows "
            f"{len(MIGRATIONS)}); upgrade the orchestrator"
        )
    return version


def _statements(script: str) -> list[str]:
    """The statements of a migration, each whole (a trigger's body holds semicolons)."""
    statements, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip().removesuffix(";").strip())
            pending = ""
    return statements

"""Runs the CLI queues while no daemon runs: a ``queued`` row beside the invoke command.

A run's row id is handed out by the process holding the lease, from a counter it reads in
the transaction that takes the lease. So another process writes a run row only when no
process can hold that counter: no lease, or one whose process is gone from this host.
With a daemon there, `invoke` writes its command alone, and the daemon makes the row
within a poll tick. The daemon that later applies the command adopts the row (it never
makes a second one); recovery leaves such rows to that command.
"""

from __future__ import annotations

import json
import sqlite3

from ...records import SYSTEM_EVENTS, RunCode, RunStatus, system_event_data
from ..command_rules import ABORTED_UNAPPLIED, QUEUED_MESSAGE
from . import lease


def no_daemon(conn: sqlite3.Connection) -> bool:
    """Whether no process can hold the journal's row counter (inside the write transaction)."""
    holder = lease.read_holder(conn)
    if holder is None:
        return True
    return holder.host == lease.HOST and not lease.pid_alive(holder.pid)


def insert_queued(
    conn: sqlite3.Connection,
    run_id: str,
    workflow_id: str,
    trigger_id: str,
    state: str,
    at: int,
) -> None:
    """A ``queued`` run for an invoke command no daemon has applied yet (no daemon runs)."""
    row = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM runs").fetchone()[0]
    version = conn.execute(
        "SELECT version FROM workflows WHERE workflow_id = ? AND present = 1", (workflow_id,)
    ).fetchone()
    conn.execute(
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
        " step_started_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
        (row, run_id, workflow_id, trigger_id, version[0] if version else "", "queued", at, at),
    )
    conn.execute(
        "INSERT INTO checkpoints (run, position, step, started_at, ended_at, state, kind)"
        " VALUES (?, 0, NULL, ?, ?, ?, 'step')",
        (row, at, at, state),
    )
    conn.execute(
        "INSERT INTO timeline (run, position, at, source, kind, message) VALUES"
        " (?, NULL, ?, 'cli', 'run.queued', ?)",
        (row, at, QUEUED_MESSAGE),
    )


def abort_unapplied(conn: sqlite3.Connection, run_id: str, event_id: str, at: int) -> bool:
    """Abort a queued run whose invoke no daemon applied yet, here and now (no daemon runs).

    Its ``run.aborted`` system event is journaled in the same transaction, for the next
    daemon to route. False, writing nothing, if the run is not such a run or a daemon runs.
    """
    found = conn.execute(
        "SELECT r.id, r.workflow_id, r.trigger_id FROM runs r WHERE r.run_id = ?"
        " AND r.status = 'queued' AND EXISTS (SELECT 1 FROM inbox i WHERE i.run_id = r.run_id"
        " AND i.command = 'invoke' AND i.done_at IS NULL)",
        (run_id,),
    ).fetchone()
    if found is None or not no_daemon(conn):
        return False
    row, workflow_id, trigger_id = found
    conn.execute(
        "UPDATE runs SET status = ?, error = ?, error_code = ?, updated_at = max(updated_at, ?)"
        " WHERE id = ?",
        (RunStatus.ABORTED, ABORTED_UNAPPLIED, RunCode.ABORTED, at, row),
    )
    status, code = RunStatus.ABORTED, RunCode.ABORTED
    data = system_event_data(run_id, workflow_id, trigger_id, status, ABORTED_UNAPPLIED, code)
    conn.execute(
        "INSERT INTO events (event_id, type, data, source, created_at) VALUES (?, ?, ?, ?, ?)",
        (event_id, SYSTEM_EVENTS[status], json.dumps(data, separators=(",", ":")), "system", at),
    )
    return True

"""The SQL of every write statement on PostgreSQL, keyed by `Stmt` (as `sqlite.statements`).

Each statement is SQLite's, translated: ``%s`` placeholders, ``GREATEST`` for SQLite's
two-argument ``max``, ``ON CONFLICT ... DO UPDATE`` for ``INSERT OR REPLACE`` and ``ON
CONFLICT DO NOTHING`` for ``INSERT OR IGNORE``. SQLite's numbered parameters (``?1`` used
twice) become one row of ``VALUES`` named by column, so every statement takes the same
parameter rows, in the same order, as its SQLite twin: ops stay backend-neutral. A key
without SQL here would fail a batch at commit time, so a test checks every `Stmt` has one.
"""

from __future__ import annotations

from typing import Final

from ..ops import Stmt

SQL: Final[dict[Stmt, str]] = {
    Stmt.RESET_WORKFLOWS: "UPDATE workflows SET present = 0",
    Stmt.RESET_LOAD_ERRORS: "DELETE FROM load_errors",
    Stmt.SET_WORKFLOW: (
        "INSERT INTO workflows (workflow_id, version, file, triggers, mode, loaded_at, present)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (workflow_id) DO UPDATE SET"
        " version = excluded.version, file = excluded.file, triggers = excluded.triggers,"
        " mode = excluded.mode, loaded_at = excluded.loaded_at, present = excluded.present"
    ),
    Stmt.SET_LOAD_ERROR: (
        "INSERT INTO load_errors (file, line, message, at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (file) DO UPDATE SET"
        " line = excluded.line, message = excluded.message, at = excluded.at"
    ),
    Stmt.ADD_VERSION: (
        "INSERT INTO workflow_versions (workflow_id, version, file, definition, created_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ),
    Stmt.INSERT_RUN: (
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
        " step_started_at, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ),
    Stmt.SET_FORKED: "UPDATE runs SET forked_from_run = %s, forked_from_step = %s WHERE id = %s",
    Stmt.INSERT_EVENT: (
        "INSERT INTO events (event_id, type, data, source, created_at, routed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
    ),
    Stmt.MARK_ROUTED: "UPDATE events SET routed_at = %s WHERE event_id = %s",
    Stmt.SET_FILE_SEEN: (
        "INSERT INTO files_seen (dir, glob, name, inode, at) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (dir, glob, name) DO UPDATE SET inode = excluded.inode, at = excluded.at"
    ),
    Stmt.INSERT_WAIT: (
        "INSERT INTO waits (id, run, event_type, conditions, persistent, status, into_key,"
        " timeout_at, on_timeout, created_at, joins)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ),
    # `base`: the writer's last parameter (`deltas.Deltas.encode`), not the op's.
    Stmt.INSERT_CHECKPOINT: (
        "INSERT INTO checkpoints (run, position, step, started_at, ended_at, state, kind, base)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run, position) DO UPDATE SET"
        " step = excluded.step, started_at = excluded.started_at,"
        " ended_at = excluded.ended_at, state = excluded.state, kind = excluded.kind,"
        " base = excluded.base"
    ),
    # A step ends or (re)starts: the run no longer waits in a step (`paused_in`). The step
    # goes with the newest position: several writers (a coordinator recovering a run while
    # its executor's last checkpoint commits) could otherwise pair a later checkpoint with
    # an earlier step, and the next recovery would run that step again.
    Stmt.SET_PROGRESS: (
        "UPDATE runs r SET position = GREATEST(r.position, v.p),"
        " step = CASE WHEN v.p >= r.position THEN v.s ELSE r.step END,"
        " step_started_at = CASE WHEN v.p >= r.position THEN v.at ELSE r.step_started_at END,"
        " updated_at = GREATEST(r.updated_at, v.up), paused_in = NULL"
        " FROM (SELECT %s::integer AS p, %s::text AS s, %s::bigint AS at, %s::bigint AS up) v"
        " WHERE r.id = %s"
    ),
    Stmt.SET_POSITION: (
        "UPDATE runs SET position = GREATEST(position, %s),"
        " updated_at = GREATEST(updated_at, %s) WHERE id = %s"
    ),
    Stmt.SET_VERSION: "UPDATE runs SET version = %s WHERE id = %s",
    Stmt.CLEAR_RECOVERIES: "DELETE FROM recoveries WHERE run = %s",
    Stmt.SET_RECOVERIES: (
        "INSERT INTO recoveries (run, step, count) VALUES (%s, %s, %s)"
        " ON CONFLICT (run, step) DO UPDATE SET count = excluded.count"
    ),
    Stmt.SET_STATUS: (
        "UPDATE runs SET status = %s, error = %s, error_code = %s,"
        " updated_at = GREATEST(updated_at, %s) WHERE id = %s"
    ),
    # `SET_PROGRESS`, `SET_STATUS` to paused and `SET_PAUSED_IN` at once (`ops.parked`).
    Stmt.SET_PARKED: (
        "UPDATE runs SET position = GREATEST(position, %s), step = %s, step_started_at = %s,"
        " paused_in = %s, status = 'paused', error = NULL, error_code = NULL,"
        " updated_at = GREATEST(updated_at, %s) WHERE id = %s"
    ),
    Stmt.SET_PAUSED_IN: "UPDATE runs SET paused_in = %s WHERE id = %s",
    Stmt.SET_WAIT: (
        "UPDATE waits SET status = %s, timeout_at = %s, into_key = %s, on_timeout = %s"
        " WHERE id = %s"
    ),
    Stmt.ADD_BUFFERED: "INSERT INTO wait_buffer (wait, seq, event_id) VALUES (%s, %s, %s)",
    Stmt.DROP_BUFFERED: "DELETE FROM wait_buffer WHERE wait = %s AND seq = %s",
    Stmt.ADD_ROUTE: (
        "INSERT INTO event_routes (event_id, run, action, wait) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.ARM_SCHEDULE: (
        "INSERT INTO schedule_state (workflow_id, trigger_id, last_tick) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.SCHEDULE_FIRED: (
        "UPDATE schedule_state SET last_tick = GREATEST(last_tick, %s)"
        " WHERE workflow_id = %s AND trigger_id = %s"
    ),
    Stmt.SCHEDULE_NEXT: (
        "UPDATE schedule_state SET next_tick = %s WHERE workflow_id = %s AND trigger_id = %s"
    ),
    Stmt.SET_SWITCH: (
        "INSERT INTO switches (workflow_id, trigger_id, enabled, changed_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (workflow_id, trigger_id) DO UPDATE SET"
        " enabled = excluded.enabled, changed_at = excluded.changed_at"
    ),
    # A step's outbox: each row only if its key (NULL: none) names this target; an invoke
    # only once per run id (a keyed start again: its `children` row is there). An event
    # already there is skipped before the insert, not by its conflict: a conflicting insert
    # still takes an id from the identity sequence, and ids would drift from SQLite's.
    Stmt.CLAIM_KEY: (
        "INSERT INTO idempotency_keys (kind, key, target, created_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.OUTBOX_INVOKE: (
        "INSERT INTO inbox (command, run_id, workflow_id, trigger_id, payload, created_at)"
        " SELECT 'invoke', v.run_id, v.workflow_id, v.trigger_id, v.payload, v.at"
        " FROM (VALUES (%s::text, %s::text, %s::text, %s::text, %s::bigint, %s::text))"
        " AS v (run_id, workflow_id, trigger_id, payload, at, key)"
        " WHERE (v.key IS NULL OR (SELECT target FROM idempotency_keys"
        " WHERE kind = 'invoke' AND key = v.key) = v.run_id)"
        " AND NOT EXISTS (SELECT 1 FROM children WHERE child = v.run_id)"
    ),
    Stmt.OUTBOX_EVENT: (
        "INSERT INTO events (event_id, type, data, source, created_at)"
        " SELECT v.event_id, v.type, v.data, v.source, v.at"
        " FROM (VALUES (%s::text, %s::text, %s::text, %s::text, %s::bigint, %s::text))"
        " AS v (event_id, type, data, source, at, key)"
        " WHERE (v.key IS NULL OR (SELECT target FROM idempotency_keys"
        " WHERE kind = 'emit' AND key = v.key) = v.event_id)"
        " AND NOT EXISTS (SELECT 1 FROM events WHERE event_id = v.event_id)"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.ADD_CHILD: (
        "INSERT INTO children (child, parent, created_at, n)"
        " SELECT v.child, v.parent, v.at, v.n"
        " FROM (VALUES (%s::text, %s::text, %s::bigint, %s::integer, %s::text))"
        " AS v (child, parent, at, n, key)"
        " WHERE v.key IS NULL OR (SELECT target FROM idempotency_keys"
        " WHERE kind = 'invoke' AND key = v.key) = v.child"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.INBOX_DONE: "UPDATE inbox SET done_at = %s, outcome = %s WHERE id = %s",
    Stmt.ADD_TIMELINE: (
        "INSERT INTO timeline (run, position, at, source, kind, step, message, data)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    ),
    Stmt.MARK_READY: "UPDATE daemons SET ready = 1 WHERE token = %s",
}

# A whole state kept apart from its checkpoint row (`journal.deltas`): rewritten in place.
SNAPSHOT_SQL: Final = (
    "INSERT INTO snapshots (id, state) VALUES (%s, %s)"
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state"
)

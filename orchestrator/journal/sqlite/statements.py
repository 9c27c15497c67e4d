"""The SQL of every write statement, keyed by `Stmt`: the one map a SQLite batch runs from.

`ops` names the writes; this module says what each one is in SQLite. A key without SQL here
would fail a batch at commit time, so a test checks that every `Stmt` has its statement.
"""

from __future__ import annotations

from typing import Final

from ..ops import Stmt

SQL: Final[dict[Stmt, str]] = {
    Stmt.RESET_WORKFLOWS: "UPDATE workflows SET present = 0",
    Stmt.RESET_LOAD_ERRORS: "DELETE FROM load_errors",
    Stmt.SET_WORKFLOW: (
        "INSERT INTO workflows (workflow_id, version, file, triggers, mode, loaded_at, present)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO UPDATE SET"
        " version = excluded.version, file = excluded.file, triggers = excluded.triggers,"
        " mode = excluded.mode, loaded_at = excluded.loaded_at, present = excluded.present"
    ),
    Stmt.SET_LOAD_ERROR: (
        "INSERT INTO load_errors (file, line, message, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (file) DO UPDATE SET"
        " line = excluded.line, message = excluded.message, at = excluded.at"
    ),
    Stmt.ADD_VERSION: (
        "INSERT INTO workflow_versions (workflow_id, version, file, definition, created_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    ),
    Stmt.INSERT_RUN: (
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
        " step_started_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    Stmt.SET_FORKED: "UPDATE runs SET forked_from_run = ?, forked_from_step = ? WHERE id = ?",
    Stmt.INSERT_EVENT: (
        "INSERT INTO events (event_id, type, data, source, created_at, routed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    ),
    Stmt.MARK_ROUTED: "UPDATE events SET routed_at = ? WHERE event_id = ?",
    Stmt.SET_FILE_SEEN: (
        "INSERT INTO files_seen (dir, glob, name, inode, at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (dir, glob, name) DO UPDATE SET inode = excluded.inode, at = excluded.at"
    ),
    Stmt.INSERT_WAIT: (
        "INSERT INTO waits (id, run, event_type, conditions, persistent, status, into_key,"
        " timeout_at, on_timeout, created_at, joins) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    # `base`: the writer's last parameter (`deltas.Deltas.encode`), not the op's.
    Stmt.INSERT_CHECKPOINT: (
        "INSERT OR REPLACE INTO checkpoints"
        " (run, position, step, started_at, ended_at, state, kind, base)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    # A step ends or (re)starts: the run no longer waits in a step (`paused_in`).
    # The step goes with the newest position (as on PostgreSQL, where several writers
    # share a journal: an earlier step never pairs with a later checkpoint).
    Stmt.SET_PROGRESS: (
        "UPDATE runs SET position = max(position, ?1),"
        " step = CASE WHEN ?1 >= position THEN ?2 ELSE step END,"
        " step_started_at = CASE WHEN ?1 >= position THEN ?3 ELSE step_started_at END,"
        " updated_at = max(updated_at, ?4), paused_in = NULL WHERE id = ?5"
    ),
    Stmt.SET_POSITION: (
        "UPDATE runs SET position = max(position, ?), updated_at = max(updated_at, ?) WHERE id = ?"
    ),
    Stmt.SET_VERSION: "UPDATE runs SET version = ? WHERE id = ?",
    Stmt.CLEAR_RECOVERIES: "DELETE FROM recoveries WHERE run = ?",
    Stmt.SET_RECOVERIES: (
        "INSERT INTO recoveries (run, step, count) VALUES (?, ?, ?)"
        " ON CONFLICT (run, step) DO UPDATE SET count = excluded.count"
    ),
    Stmt.SET_STATUS: (
        "UPDATE runs SET status = ?, error = ?, error_code = ?,"
        " updated_at = max(updated_at, ?) WHERE id = ?"
    ),
    # `SET_PROGRESS`, `SET_STATUS` to paused and `SET_PAUSED_IN` at once (`ops.parked`).
    Stmt.SET_PARKED: (
        "UPDATE runs SET position = max(position, ?), step = ?, step_started_at = ?,"
        " paused_in = ?, status = 'paused', error = NULL, error_code = NULL,"
        " updated_at = max(updated_at, ?) WHERE id = ?"
    ),
    Stmt.SET_PAUSED_IN: "UPDATE runs SET paused_in = ? WHERE id = ?",
    Stmt.SET_WAIT: (
        "UPDATE waits SET status = ?, timeout_at = ?, into_key = ?, on_timeout = ? WHERE id = ?"
    ),
    Stmt.ADD_BUFFERED: "INSERT INTO wait_buffer (wait, seq, event_id) VALUES (?, ?, ?)",
    Stmt.DROP_BUFFERED: "DELETE FROM wait_buffer WHERE wait = ? AND seq = ?",
    Stmt.ADD_ROUTE: (
        "INSERT OR IGNORE INTO event_routes (event_id, run, action, wait) VALUES (?, ?, ?, ?)"
    ),
    Stmt.ARM_SCHEDULE: (
        "INSERT OR IGNORE INTO schedule_state (workflow_id, trigger_id, last_tick) VALUES (?, ?, ?)"
    ),
    Stmt.SCHEDULE_FIRED: (
        "UPDATE schedule_state SET last_tick = max(last_tick, ?)"
        " WHERE workflow_id = ? AND trigger_id = ?"
    ),
    Stmt.SCHEDULE_NEXT: (
        "UPDATE schedule_state SET next_tick = ? WHERE workflow_id = ? AND trigger_id = ?"
    ),
    Stmt.SET_SWITCH: (
        "INSERT INTO switches (workflow_id, trigger_id, enabled, changed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (workflow_id, trigger_id) DO UPDATE SET"
        " enabled = excluded.enabled, changed_at = excluded.changed_at"
    ),
    # A step's outbox: each row only if its key (?6 or ?5; NULL: none) names this target;
    # an invoke only once per run id (a keyed start again: its `children` row is there).
    Stmt.CLAIM_KEY: (
        "INSERT INTO idempotency_keys (kind, key, target, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.OUTBOX_INVOKE: (
        "INSERT INTO inbox (command, run_id, workflow_id, trigger_id, payload, created_at)"
        " SELECT 'invoke', ?1, ?2, ?3, ?4, ?5 WHERE (?6 IS NULL OR (SELECT target FROM"
        " idempotency_keys WHERE kind = 'invoke' AND key = ?6) = ?1)"
        " AND NOT EXISTS (SELECT 1 FROM children WHERE child = ?1)"
    ),
    Stmt.OUTBOX_EVENT: (
        "INSERT INTO events (event_id, type, data, source, created_at)"
        " SELECT ?1, ?2, ?3, ?4, ?5 WHERE ?6 IS NULL OR (SELECT target FROM"
        " idempotency_keys WHERE kind = 'emit' AND key = ?6) = ?1"
        " ON CONFLICT DO NOTHING"
    ),
    Stmt.ADD_CHILD: (
        "INSERT OR IGNORE INTO children (child, parent, created_at, n)"
        " SELECT ?1, ?2, ?3, ?4 WHERE ?5 IS NULL OR (SELECT target FROM"
        " idempotency_keys WHERE kind = 'invoke' AND key = ?5) = ?1"
    ),
    Stmt.INBOX_DONE: "UPDATE inbox SET done_at = ?, outcome = ? WHERE id = ?",
    Stmt.ADD_TIMELINE: (
        "INSERT INTO timeline (run, position, at, source, kind, step, message, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    Stmt.MARK_READY: "UPDATE lease SET ready = 1 WHERE token = ?",
}


def _at(i: int) -> str:
    """Parameter `i` of a row in `BULK`'s array (the rows are ``json_each``'s values)."""
    return f"json_extract(j.value, '$[{i}]')"


def _each(count: int) -> str:
    return ", ".join(_at(i) for i in range(count))


# The statements a batch runs many rows of (runs, their checkpoints, progress and ends),
# over all their rows at once: one parameter, the rows as a JSON array of arrays, each
# with the parameters of the `SQL` statement of the same key, in its order. One statement
# is one step of SQLite for the whole batch, so the writer thread takes the GIL back a few
# times per batch instead of once per row (the event loop's thread holds it meanwhile).
BULK: Final[dict[Stmt, str]] = {
    Stmt.INSERT_RUN: (
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
        f" step_started_at, created_at, updated_at) SELECT {_each(10)} FROM json_each(?) AS j"
    ),
    Stmt.INSERT_CHECKPOINT: (
        "INSERT OR REPLACE INTO checkpoints"
        " (run, position, step, started_at, ended_at, state, kind, base)"
        f" SELECT {_each(8)} FROM json_each(?) AS j"
    ),
    # Each run once per batch: `ops.grouped` keeps the last of each run's updates.
    Stmt.SET_PROGRESS: (
        f"UPDATE runs SET position = max(position, {_at(0)}),"
        f" step = CASE WHEN {_at(0)} >= position THEN {_at(1)} ELSE step END,"
        f" step_started_at = CASE WHEN {_at(0)} >= position THEN {_at(2)}"
        " ELSE step_started_at END,"
        f" updated_at = max(updated_at, {_at(3)}),"
        f" paused_in = NULL FROM json_each(?) AS j WHERE runs.id = {_at(4)}"
    ),
    Stmt.SET_STATUS: (
        f"UPDATE runs SET status = {_at(0)}, error = {_at(1)}, error_code = {_at(2)},"
        f" updated_at = max(updated_at, {_at(3)}) FROM json_each(?) AS j"
        f" WHERE runs.id = {_at(4)}"
    ),
    # Runs parking (their waits, the step they wait in) and every run's timeline entries.
    Stmt.INSERT_WAIT: (
        "INSERT INTO waits (id, run, event_type, conditions, persistent, status, into_key,"
        f" timeout_at, on_timeout, created_at, joins) SELECT {_each(11)} FROM json_each(?) AS j"
    ),
    Stmt.SET_PAUSED_IN: (
        f"UPDATE runs SET paused_in = {_at(0)} FROM json_each(?) AS j WHERE runs.id = {_at(1)}"
    ),
    Stmt.SET_PARKED: (
        f"UPDATE runs SET position = max(position, {_at(0)}), step = {_at(1)},"
        f" step_started_at = {_at(2)}, paused_in = {_at(3)}, status = 'paused',"
        f" error = NULL, error_code = NULL, updated_at = max(updated_at, {_at(4)})"
        f" FROM json_each(?) AS j WHERE runs.id = {_at(5)}"
    ),
    # In the order of the array: timeline ids keep the order the entries were made in.
    Stmt.ADD_TIMELINE: (
        "INSERT INTO timeline (run, position, at, source, kind, step, message, data)"
        f" SELECT {_each(8)} FROM json_each(?) AS j ORDER BY j.key"
    ),
}

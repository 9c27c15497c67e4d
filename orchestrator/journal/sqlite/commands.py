"""Writing events and commands from another process (the CLI, the dashboard).

These writes go straight to the journal on a short-lived connection, whether or not a
daemon runs: the daemon picks them up within a poll tick, or when it next starts. Each is
one short ``BEGIN IMMEDIATE`` transaction, retried a bounded number of times if another
writer holds the lock, so "database is locked" never reaches a user on a busy journal.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ...clock import Clock, new_id
from ...errors import JournalError, RunNotActive, RunNotFound, ValidationError
from ...records import event_type_problem
from ..command_rules import (
    ALLOWED,
    check_fork_step,
    check_invoke,
    check_switch,
    check_trigger,
    payload_text,
    queued_state,
)
from ..protocol import Synchronous
from ..records import DaemonRecord, RunMatches
from . import lease, prefixes, queued
from .connection import (
    ACCESS_CODES,
    SQLITE_ERRORS,
    connect_writer,
    is_corrupt,
    not_a_journal,
    open_error,
    rollback_if_open,
)
from .schema import upgrade

if TYPE_CHECKING:
    from .routing import SqliteRoutingReads

T = TypeVar("T")
ATTEMPTS = 5
BUSY_TIMEOUT_MS = 5_000
# The step names of a run's pipeline: on its workflow's version registered now (as the
# journal last saw it), else on the version the run has. ?1 workflow, ?2 its version.
PIPELINE_SQL = (
    "SELECT v.definition FROM workflow_versions v WHERE v.workflow_id = ?1 AND v.version ="
    " coalesce((SELECT w.version FROM workflows w WHERE w.workflow_id = ?1 AND w.present = 1"
    " AND w.version != ''), ?2)"
)


def emit_event(
    path: Path,
    event_type: str,
    data: dict[str, Any],
    *,
    source: str = "cli",
    key: str | None = None,
    event_id: str | None = None,
) -> str:
    """Journal an event for the daemon to route; returns its id once committed.

    With `key`, an event journaled before under the same key is not written again: its id
    is returned. The key is looked up and claimed in the event's own transaction (taken
    with ``BEGIN IMMEDIATE``), so processes racing on one key write exactly one event.
    `event_id` is the new event's id (default: a new one).

    Raises:
        ValidationError: `event_type` cannot be an event type (empty, too long, not text).
    """
    problem = event_type_problem(event_type)
    if problem is not None:
        raise ValidationError(problem)
    event_id = event_id or new_id()
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def insert(conn: sqlite3.Connection) -> str:
        now = Clock().now_us()
        if key is not None:
            first = _claim(conn, "emit", key, event_id, now)
            if first != event_id:
                return first
        conn.execute(
            "INSERT INTO events (event_id, type, data, source, created_at) VALUES (?, ?, ?, ?, ?)",
            (event_id, event_type, text, source, now),
        )
        return event_id

    return _transaction(path, insert)


def queue_command(path: Path, command: str, run_id: str, payload: Any = None) -> int:
    """Check the run, then queue `command` for the daemon; returns the command's id.

    Raises:
        RunNotFound: No such run in the journal.
        RunNotActive: The run's status does not allow the command.
    """
    statuses, rule = ALLOWED[command]

    def insert(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in journal {path}")
        if row[0] not in statuses:
            raise RunNotActive(f"run {run_id} is {row[0]}; {rule}")
        return _insert_command(conn, command, run_id, None, None, payload)

    return _transaction(path, insert)


def queue_fork(
    path: Path,
    run_id: str,
    from_step: str | None,
    patch: dict[str, Any],
    *,
    new_run_id: str | None = None,
) -> str:
    """Check the run and `from_step`, then queue a fork of the run; returns the new run's id.

    The step is checked against the pipeline as the journal last saw it (`PIPELINE_SQL`);
    the daemon checks it again on the version it holds when it applies the command.

    Raises:
        RunNotFound: No such run in the journal.
        StepNotFound: The pipeline has no step `from_step` (the message lists its steps).
        ValidationError: `from_step` is empty.
    """
    if from_step is not None and not from_step:
        raise ValidationError("--from names a step: give its name, or leave --from out")
    new_run_id = new_run_id or new_id()
    payload = {"new_run_id": new_run_id, "from_step": from_step, "patch": patch}

    def insert(conn: sqlite3.Connection) -> str:
        row = conn.execute(
            "SELECT workflow_id, trigger_id, version FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in journal {path}")
        if from_step is not None:
            found = conn.execute(PIPELINE_SQL, (row[0], row[2])).fetchone()
            check_fork_step(from_step, found[0] if found else None, row[0], row[1])
        _insert_command(conn, "fork", run_id, None, None, payload)
        return new_run_id

    return _transaction(path, insert)


def match_runs(path: Path, prefix: str, limit: int = 5) -> RunMatches:
    """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
    return _transaction(
        path,
        lambda conn: prefixes.matches(conn.execute(prefixes.SQL, prefixes.params(prefix, limit))),
    )


def queue_invoke(
    path: Path,
    workflow_id: str,
    trigger_id: str,
    data: dict[str, Any],
    *,
    key: str | None = None,
) -> str:
    """Queue a run of a workflow's pipeline for the daemon; returns the new run's id.

    With `key`, a run invoked before under the same key (by any process) is not queued
    again: its id is returned, claimed in the command's own transaction like `emit_event`.
    """
    return claim_invoke(path, new_id(), workflow_id, trigger_id, data, key=key)[0]


def claim_invoke(
    path: Path,
    run_id: str,
    workflow_id: str,
    trigger_id: str,
    data: Any,
    *,
    key: str | None,
) -> tuple[str, int | None]:
    """Queue an invoke of run `run_id`; returns its run id and command id.

    With a `key` seen before, nothing is queued: returns the first run's id and None.
    """
    payload = {"data": data}

    def insert(conn: sqlite3.Connection) -> tuple[str, int | None]:
        now = Clock().now_us()
        if key is not None:
            first = _claim(conn, "invoke", key, run_id, now)
            if first != run_id:
                return first, None
        command = _insert_command(conn, "invoke", run_id, workflow_id, trigger_id, payload)
        if queued.no_daemon(conn):  # else the daemon makes the row within a tick
            queued.insert_queued(conn, run_id, workflow_id, trigger_id, queued_state(data), now)
        return run_id, command

    return _transaction(path, insert)


def queue_switch(path: Path, command: str, workflow_id: str, trigger_id: str | None) -> int:
    """Queue a disable or enable of a workflow (or one trigger) for the daemon; its id.

    A workflow not loaded is fine (the switch applies when it loads).

    Raises:
        ValidationError: `command` is neither ``disable`` nor ``enable``, or no workflow id.
        TriggerNotFound: The loaded workflow has no such trigger.
    """
    check_switch(command, workflow_id, trigger_id)

    def insert(conn: sqlite3.Connection) -> int:
        if trigger_id is not None:
            _check_trigger(conn, workflow_id, trigger_id)
        return _insert_command(conn, command, None, workflow_id, trigger_id, None)

    return _transaction(path, insert)


def _check_trigger(conn: sqlite3.Connection, workflow_id: str, trigger_id: str) -> None:
    row = conn.execute(
        "SELECT triggers FROM workflows WHERE workflow_id = ? AND present = 1", (workflow_id,)
    ).fetchone()
    check_trigger(None if row is None else row[0], workflow_id, trigger_id)


def abort_unapplied(path: Path, run_id: str) -> bool:
    """Abort at once a run queued while no daemon runs (see `queued.abort_unapplied`)."""
    return _transaction(
        path, lambda conn: queued.abort_unapplied(conn, run_id, new_id(), Clock().now_us())
    )


def _claim(conn: sqlite3.Connection, kind: str, key: str, target: str, at: int) -> str:
    """The target `key` already names, or `target` once the key is claimed for it."""
    row = conn.execute(
        "SELECT target FROM idempotency_keys WHERE kind = ? AND key = ?", (kind, key)
    ).fetchone()
    if row is not None:
        return str(row[0])
    conn.execute(
        "INSERT INTO idempotency_keys (kind, key, target, created_at) VALUES (?, ?, ?, ?)",
        (kind, key, target, at),
    )
    return target


def _insert_command(
    conn: sqlite3.Connection,
    command: str,
    run_id: str | None,
    workflow_id: str | None,
    trigger_id: str | None,
    payload: Any,
) -> int:
    cur = conn.execute(
        "INSERT INTO inbox (command, run_id, workflow_id, trigger_id, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            command,
            run_id,
            workflow_id,
            trigger_id,
            payload_text(payload),
            Clock().now_us(),
        ),
    )
    return int(cur.lastrowid or 0)


def live_holder(conn: sqlite3.Connection) -> DaemonRecord | None:
    """The live holder of the journal's lease, as `JournalQueries.daemon` tells it."""
    holder = lease.read_holder(conn)
    if holder is None or not lease.is_live(holder, Clock().now_us()):
        return None
    return DaemonRecord(holder.pid, holder.host, holder.started_at, holder.ready, holder.degraded)


def _transaction(
    path: Path, work: Callable[[sqlite3.Connection], T], synchronous: Synchronous = "FULL"
) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        conn = connect_writer(path, synchronous)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("BEGIN IMMEDIATE")  # one lock for the schema check and the write
            upgrade(conn, path)
            result = work(conn)
            conn.execute("COMMIT")
            return result
        except sqlite3.OperationalError as exc:
            rollback_if_open(conn)
            if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == ATTEMPTS:
                raise _write_error(path, exc) from exc
        except SQLITE_ERRORS as exc:  # a damaged file, met past the header
            rollback_if_open(conn)
            raise _write_error(path, exc) from exc
        except BaseException:
            rollback_if_open(conn)
            raise
        finally:
            conn.close()
        time.sleep(0.05 * attempt)
    raise JournalError(f"journal {path}: still locked after {ATTEMPTS} attempts")


def _write_error(path: Path, exc: Exception) -> JournalError:
    if is_corrupt(exc):
        return not_a_journal(path, exc)
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in ACCESS_CODES:
        return open_error(path, exc, write=True)
    return JournalError(f"journal {path}: write failed: {exc}")


class SqliteCommands:
    """The writes above, bound to one journal file (`JournalCommands`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit_event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str = "cli",
        key: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Journal an event for the daemon to route; returns its id (the first one's, `key`)."""
        return emit_event(self.path, event_type, data, source=source, key=key, event_id=event_id)

    def queue_command(self, command: str, run_id: str, payload: Any = None) -> int:
        """Check the run, then queue `command` for the daemon; returns the command's id."""
        return queue_command(self.path, command, run_id, payload)

    def queue_fork(
        self,
        run_id: str,
        from_step: str | None,
        patch: dict[str, Any],
        *,
        new_run_id: str | None = None,
    ) -> str:
        """Check the run and the step, then queue a fork of it; returns the new run's id."""
        return queue_fork(self.path, run_id, from_step, patch, new_run_id=new_run_id)

    def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        return match_runs(self.path, prefix, limit)

    def queue_switch(self, command: str, workflow_id: str, trigger_id: str | None = None) -> int:
        """Queue a disable or enable for the daemon; returns the command's id."""
        return queue_switch(self.path, command, workflow_id, trigger_id)

    def daemon(self) -> DaemonRecord | None:
        """The live process holding the journal's lease, or None."""
        return _transaction(self.path, live_holder)

    def queue_invoke(
        self, workflow_id: str, trigger_id: str, data: dict[str, Any], *, key: str | None = None
    ) -> str:
        """Queue a run for the daemon; returns its id (the first run's, with a `key` seen)."""
        check_invoke(workflow_id, trigger_id)
        return queue_invoke(self.path, workflow_id, trigger_id, data, key=key)

    def claim_invoke(
        self, run_id: str, workflow_id: str, trigger_id: str, data: Any, *, key: str | None
    ) -> tuple[str, int | None]:
        """Queue an invoke of run `run_id`; returns its run id and the command's id.

        With a `key` seen before nothing is queued: the first run's id and None.
        """
        return claim_invoke(self.path, run_id, workflow_id, trigger_id, data, key=key)

    def abort_unapplied(self, run_id: str) -> bool:
        """Abort a run queued while no daemon runs, at once; False if it is not one."""
        return abort_unapplied(self.path, run_id)

    def prune(
        self,
        cutoffs: Mapping[str, int],
        *,
        events_before: int | None = None,
        dry_run: bool = False,
        between: Callable[[], None] | None = None,
    ) -> dict[str, int]:
        """Delete old final runs in small transactions; see `JournalCommands.prune`."""
        from .prune import prune

        return prune(
            self.path, cutoffs, events_before=events_before, dry_run=dry_run, between=between
        )

    def vacuum(self, *, between: Callable[[], None] | None = None) -> int:
        """Give free pages back in small incremental-vacuum steps; returns how many."""
        from .prune import vacuum

        return vacuum(self.path, between=between)

    def make_vacuumable(self) -> bool:
        """Switch an older journal to ``auto_vacuum = INCREMENTAL`` (a ``VACUUM``)."""
        from .prune import auto_vacuum_mode, convert_to_incremental

        if auto_vacuum_mode(self.path) == 2:
            return False
        convert_to_incremental(self.path)
        return True

    def routing_reads(self) -> SqliteRoutingReads:
        """What routing did with events, on one read-only connection (a context manager)."""
        from .routing import SqliteRoutingReads

        return SqliteRoutingReads(self.path)

"""Writing events and commands into a PostgreSQL journal from another process (the CLI).

The same writes as `sqlite/commands.py`, checked by the same rules (`command_rules`): each
is one short transaction on a blocking connection of its own (`blocking.transaction`),
whether or not a daemon runs; the daemon picks them up when its feed sees the commit.

Idempotency keys are claimed with ``INSERT ... ON CONFLICT DO NOTHING`` in the write's own
transaction: of two processes racing on one key, the second waits for the first's commit,
finds the key taken and returns the first one's target, writing nothing.

A run row for an invoke is written here only while no daemon is live (the daemon record
of pgcommon: not fenced, not stopped, a fresh heartbeat); the daemon that applies the
invoke adopts the row, as on SQLite. Events and inbox rows take ids from their identity
sequences. A run row does not: a daemon writes its runs' ids itself (counting up from
`max(runs.id)`, as on SQLite), which never moves the `runs` sequence, so its next value may
be taken already. The row takes ``max(id) + 1`` under the advisory lock `RUN_IDS_LOCK`
(two commands at once take two ids).

Every write of an event or an inbox row first takes the advisory lock `INBOX_LOCK` until
it commits, and reads its clock after: such rows commit one at a time, in the order of
their ids and times. The daemon's inbox takes them by id (everything after the last one it
took): without the lock, an event holding id 7 could commit after one holding id 8 was
taken, and the daemon would never route it (measured: 8 of 480 events from 6 threads).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...clock import Clock, new_id
from ...errors import RunNotActive, RunNotFound, ValidationError
from ...records import SYSTEM_EVENTS, RunCode, RunStatus, event_type_problem, system_event_data
from ..command_rules import (
    ABORTED_UNAPPLIED,
    ALLOWED,
    QUEUED_MESSAGE,
    check_fork_step,
    check_invoke,
    check_switch,
    check_trigger,
    payload_text,
    queued_state,
)
from ..records import DaemonRecord, RunMatch, RunMatches
from .blocking import Tx, transaction
from .connection import INBOX_LOCK, RUN_IDS_LOCK, describe
from .daemon_rows import LIVE_DAEMONS_SQL, newest_live

if TYPE_CHECKING:
    from .routing import PostgresRoutingReads

# The pipeline as the journal last saw it: %s workflow (twice), then the run's version.
PIPELINE_SQL = (
    "SELECT v.definition FROM workflow_versions v WHERE v.workflow_id = %s AND v.version ="
    " coalesce((SELECT w.version FROM workflows w WHERE w.workflow_id = %s AND w.present = 1"
    " AND w.version != ''), %s)"
)
# The runs whose id starts with a prefix, in SQLite's order (code points: COLLATE "C"),
# each with how many there are in all (the window counts before LIMIT).
PREFIX_SQL = (
    "SELECT run_id, workflow_id, status, count(*) OVER () FROM runs"
    ' WHERE starts_with(run_id, %s) ORDER BY run_id COLLATE "C" LIMIT %s'
)


def live_daemon(tx: Tx) -> DaemonRecord | None:
    """The newest live daemon of the journal, as `JournalQueries.daemon` tells it."""
    return newest_live(tx.rows(LIVE_DAEMONS_SQL))


def match_prefix(tx: Tx, prefix: str, limit: int) -> RunMatches:
    """The first `limit` runs whose id starts with `prefix`, and how many do."""
    rows = tx.rows(PREFIX_SQL, (prefix, limit))
    runs = tuple(RunMatch(row[0], row[1], row[2]) for row in rows)
    return RunMatches(runs, int(rows[0][3]) if rows else 0)


class PostgresCommands:
    """`JournalCommands` on the PostgreSQL journal at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url  # may hold a password: messages use `describe`

    def emit_event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str = "cli",
        key: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Journal an event for the daemon to route; returns its id (the first one's, `key`).

        Raises:
            ValidationError: `event_type` cannot be an event type.
        """
        problem = event_type_problem(event_type)
        if problem is not None:
            raise ValidationError(problem)
        new = event_id or new_id()
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)

        def insert(tx: Tx) -> str:
            now = _inbox_turn(tx)
            if key is not None:
                first = _claim(tx, "emit", key, new, now)
                if first != new:
                    return first
            tx.run(
                "INSERT INTO events (event_id, type, data, source, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (new, event_type, text, source, now),
            )
            return new

        return transaction(self.url, insert)

    def queue_command(self, command: str, run_id: str, payload: Any = None) -> int:
        """Check the run, then queue `command` for the daemon; returns the command's id.

        Raises:
            RunNotFound: No such run in the journal.
            RunNotActive: The run's status does not allow the command.
        """
        statuses, rule = ALLOWED[command]

        def insert(tx: Tx) -> int:
            _inbox_turn(tx)
            row = tx.one("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in journal {describe(self.url)}")
            if row[0] not in statuses:
                raise RunNotActive(f"run {run_id} is {row[0]}; {rule}")
            return _insert_command(tx, command, run_id, None, None, payload)

        return transaction(self.url, insert)

    def queue_invoke(
        self, workflow_id: str, trigger_id: str, data: dict[str, Any], *, key: str | None = None
    ) -> str:
        """Queue a run for the daemon; returns its id (the first run's, with a `key` seen)."""
        check_invoke(workflow_id, trigger_id)
        return self.claim_invoke(new_id(), workflow_id, trigger_id, data, key=key)[0]

    def queue_fork(
        self,
        run_id: str,
        from_step: str | None,
        patch: dict[str, Any],
        *,
        new_run_id: str | None = None,
    ) -> str:
        """Check the run and the step, then queue a fork of it; returns the new run's id.

        Raises:
            RunNotFound: No such run in the journal.
            StepNotFound: The pipeline has no step `from_step` (the message lists its steps).
            ValidationError: `from_step` is empty.
        """
        if from_step is not None and not from_step:
            raise ValidationError("--from names a step: give its name, or leave --from out")
        new = new_run_id or new_id()
        payload = {"new_run_id": new, "from_step": from_step, "patch": patch}

        def insert(tx: Tx) -> str:
            _inbox_turn(tx)
            row = tx.one(
                "SELECT workflow_id, trigger_id, version FROM runs WHERE run_id = %s", (run_id,)
            )
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in journal {describe(self.url)}")
            if from_step is not None:
                found = tx.one(PIPELINE_SQL, (row[0], row[0], row[2]))
                check_fork_step(from_step, found[0] if found else None, row[0], row[1])
            _insert_command(tx, "fork", run_id, None, None, payload)
            return new

        return transaction(self.url, insert)

    def claim_invoke(
        self, run_id: str, workflow_id: str, trigger_id: str, data: Any, *, key: str | None
    ) -> tuple[str, int | None]:
        """Queue an invoke of run `run_id`; returns its run id and the command's id.

        With a `key` seen before nothing is queued: the first run's id and None. While no
        daemon is live, a ``queued`` run row is written with the command.
        """
        payload = {"data": data}

        def insert(tx: Tx) -> tuple[str, int | None]:
            now = _inbox_turn(tx)
            if key is not None:
                first = _claim(tx, "invoke", key, run_id, now)
                if first != run_id:
                    return first, None
            command = _insert_command(tx, "invoke", run_id, workflow_id, trigger_id, payload)
            if live_daemon(tx) is None:  # else the daemon makes the row within a tick
                _insert_queued(tx, run_id, workflow_id, trigger_id, queued_state(data), now)
            return run_id, command

        return transaction(self.url, insert)

    def abort_unapplied(self, run_id: str) -> bool:
        """Abort a run queued while no daemon runs, at once; False if it is not one.

        Its ``run.aborted`` system event is journaled in the same transaction.
        """
        return transaction(
            self.url, lambda tx: _abort_unapplied(tx, run_id, new_id(), _inbox_turn(tx))
        )

    def queue_switch(self, command: str, workflow_id: str, trigger_id: str | None = None) -> int:
        """Queue a disable or enable for the daemon; returns the command's id.

        Raises:
            ValidationError: Not a switch command, or an empty workflow id.
            TriggerNotFound: The workflow is loaded and has no such trigger.
        """
        check_switch(command, workflow_id, trigger_id)

        def insert(tx: Tx) -> int:
            _inbox_turn(tx)
            if trigger_id is not None:
                row = tx.one(
                    "SELECT triggers FROM workflows WHERE workflow_id = %s AND present = 1",
                    (workflow_id,),
                )
                check_trigger(None if row is None else row[0], workflow_id, trigger_id)
            return _insert_command(tx, command, None, workflow_id, trigger_id, None)

        return transaction(self.url, insert)

    def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        return transaction(self.url, lambda tx: match_prefix(tx, prefix, limit), write=False)

    def prune(
        self,
        cutoffs: Mapping[str, int],
        *,
        events_before: int | None = None,
        dry_run: bool = False,
        between: Callable[[], None] | None = None,
    ) -> dict[str, int]:
        """Delete old final runs in short transactions; see `JournalCommands.prune`."""
        from .prune import prune

        return prune(
            self.url, cutoffs, events_before=events_before, dry_run=dry_run, between=between
        )

    def vacuum(self, *, between: Callable[[], None] | None = None) -> int:
        """``VACUUM`` the tables a prune deletes from; returns the pages given back."""
        from .prune import vacuum

        return vacuum(self.url, between=between)

    def make_vacuumable(self) -> bool:
        """Nothing to convert on PostgreSQL: every table can be vacuumed. False."""
        return False

    def daemon(self) -> DaemonRecord | None:
        """The newest live daemon of the journal, or None."""
        return transaction(self.url, live_daemon, write=False)

    def routing_reads(self) -> PostgresRoutingReads:
        """What routing did with events, on one autocommit connection (a context manager)."""
        from .routing import PostgresRoutingReads

        return PostgresRoutingReads(self.url)


def _inbox_turn(tx: Tx) -> int:
    """Wait for the events' and inbox's writers before this one to commit; the time now.

    Call first in a transaction that writes an event or an inbox row (see the module).
    """
    tx.run("SELECT pg_advisory_xact_lock(%s)", (INBOX_LOCK,))
    return Clock().now_us()


def _claim(tx: Tx, kind: str, key: str, target: str, at: int) -> str:
    """The target `key` already names, or `target` once the key is claimed for it.

    A racing transaction that inserted the key first makes this one wait for its end: it
    committed, and the key is read back; it rolled back, and the insert goes through.
    """
    row = tx.one(
        "INSERT INTO idempotency_keys (kind, key, target, created_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (kind, key) DO NOTHING RETURNING target",
        (kind, key, target, at),
    )
    if row is not None:
        return str(row[0])
    found = tx.one("SELECT target FROM idempotency_keys WHERE kind = %s AND key = %s", (kind, key))
    return str(found[0])


def _insert_command(
    tx: Tx,
    command: str,
    run_id: str | None,
    workflow_id: str | None,
    trigger_id: str | None,
    payload: Any,
) -> int:
    row = tx.one(
        "INSERT INTO inbox (command, run_id, workflow_id, trigger_id, payload, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (command, run_id, workflow_id, trigger_id, payload_text(payload), Clock().now_us()),
    )
    return int(row[0])


def _insert_queued(
    tx: Tx, run_id: str, workflow_id: str, trigger_id: str, state: str, at: int
) -> None:
    """A ``queued`` run for an invoke command no daemon has applied yet (none is live)."""
    version = tx.one(
        "SELECT version FROM workflows WHERE workflow_id = %s AND present = 1", (workflow_id,)
    )
    tx.run("SELECT pg_advisory_xact_lock(%s)", (RUN_IDS_LOCK,))  # until this commits
    row = tx.one(
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
        " step_started_at, created_at, updated_at)"
        " VALUES ((SELECT coalesce(max(id), 0) + 1 FROM runs), %s, %s, %s, %s, 'queued',"
        " NULL, NULL, %s, %s) RETURNING id",
        (run_id, workflow_id, trigger_id, version[0] if version else "", at, at),
    )
    tx.run(
        "INSERT INTO checkpoints (run, position, step, started_at, ended_at, state, kind)"
        " VALUES (%s, 0, NULL, %s, %s, %s, 'step')",
        (row[0], at, at, state),
    )
    tx.run(
        "INSERT INTO timeline (run, position, at, source, kind, message) VALUES"
        " (%s, NULL, %s, 'cli', 'run.queued', %s)",
        (row[0], at, QUEUED_MESSAGE),
    )


def _abort_unapplied(tx: Tx, run_id: str, event_id: str, at: int) -> bool:
    """Abort a queued run whose invoke no daemon applied yet (no daemon is live)."""
    found = tx.one(
        "SELECT r.id, r.workflow_id, r.trigger_id FROM runs r WHERE r.run_id = %s"
        " AND r.status = 'queued' AND EXISTS (SELECT 1 FROM inbox i WHERE i.run_id = r.run_id"
        " AND i.command = 'invoke' AND i.done_at IS NULL) FOR UPDATE OF r",
        (run_id,),
    )
    if found is None or live_daemon(tx) is not None:
        return False
    row, workflow_id, trigger_id = found[0], found[1], found[2]
    status, code = RunStatus.ABORTED, RunCode.ABORTED
    tx.run(
        "UPDATE runs SET status = %s, error = %s, error_code = %s,"
        " updated_at = greatest(updated_at, %s) WHERE id = %s",
        (status, ABORTED_UNAPPLIED, code, at, row),
    )
    data = system_event_data(run_id, workflow_id, trigger_id, status, ABORTED_UNAPPLIED, code)
    tx.run(
        "INSERT INTO events (event_id, type, data, source, created_at)"
        " VALUES (%s, %s, %s, 'system', %s)",
        (event_id, SYSTEM_EVENTS[status], json.dumps(data, separators=(",", ":")), at),
    )
    return True

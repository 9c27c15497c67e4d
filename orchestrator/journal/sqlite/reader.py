"""Reading the journal: runs, checkpoints and timelines, on a read-only connection.

Used by the runtime, the CLI and the dashboard alike. Every query reads its rows at once
and closes its cursor, so no read transaction outlives a call (open readers stop WAL
checkpoints).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ...clock import Clock
from ...errors import JournalCorrupt, JournalError
from ..decoding import command_record, event_record, outcome_of
from ..reading import ReaderSQL, SharedReads
from ..records import (
    CommandRecord,
    DaemonRecord,
    DormantRow,
    EventRecord,
    RunMatches,
    RunOutcome,
    StandbyRecord,
)
from . import lease, prefixes
from .connection import (
    SQLITE_ERRORS,
    connect_reader,
    is_corrupt,
    not_a_journal,
    open_error,
    read_write_uri,
)
from .deltas import state_of
from .schema import APPLICATION_ID, MIGRATIONS

_CHUNK = 500  # run ids in one IN (...) list
_SERVICE_KINDS = "('service.opened', 'services.closed')"  # the timeline_services index's
# A run's step as shown: the step a paused run waits in (`step` names the one it goes on
# at), also once it ended there (aborted, or failed by its wait's timeout).
SHOWN_STEP = (
    "CASE WHEN r.status IN ('paused', 'failed', 'aborted') THEN coalesce(r.paused_in, r.step)"
    " ELSE r.step END"
)
_RUN_COLUMNS = f"""
    r.run_id, r.workflow_id, r.trigger_id, r.status, {SHOWN_STEP} AS step, r.error,
    r.error_code, r.version, r.created_at, r.updated_at, r.forked_from_run, r.forked_from_step,
    (SELECT p.parent FROM children p WHERE p.child = r.run_id) AS parent,
    (SELECT {state_of("c")} FROM checkpoints c WHERE c.run = r.id
        ORDER BY c.position DESC LIMIT 1) AS state
"""


# A run with the state of its last checkpoint and its count of recoveries at its step.
_STORED_RUN = (
    "SELECT r.id, r.run_id, r.workflow_id, r.trigger_id, r.version, r.status, r.position,"
    f" r.step, {state_of('c')} AS state, r.created_at, coalesce(v.count, 0) AS recoveries, r.error,"
    " r.error_code, r.updated_at FROM runs r"
    " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
    " LEFT JOIN recoveries v ON v.run = r.id AND v.step = r.step"
)


# A wait `dormant_waits` returns, as a condition on wait `w` (its run `r` is paused): parked
# on an event, with no timeout and no join, its run's only live wait.
_DORMANT = (
    "w.status = 'parked' AND w.event_type IS NOT NULL AND w.timeout_at IS NULL"
    " AND w.joins IS NULL AND NOT EXISTS (SELECT 1 FROM waits o WHERE o.run = w.run"
    " AND o.id != w.id AND o.status IN ('armed', 'parked'))"
)


_EVENT_COLUMNS = "id, event_id, type, data, source, created_at"
_UNROUTED = "FROM events WHERE routed_at IS NULL AND id > ? ORDER BY id LIMIT ?"
_COMMAND_COLUMNS = "id, command, run_id, workflow_id, trigger_id, payload, created_at"
_PENDING = "FROM inbox WHERE done_at IS NULL AND id > ? ORDER BY id LIMIT ?"
_UNFINISHED = (
    f"{_STORED_RUN} WHERE r.status IN ('queued', 'running', 'paused'){{skip}}"
    # A row the CLI queued while no daemon ran is its invoke command's to start.
    " AND NOT (r.status = 'queued' AND r.run_id IN (SELECT i.run_id FROM inbox i"
    " WHERE i.done_at IS NULL AND i.command = 'invoke'))"
    " ORDER BY r.id"
)
_LIVE_WAITS = (
    "SELECT w.id, w.run, r.run_id, w.event_type, w.conditions, w.persistent, w.status,"
    " w.into_key, w.timeout_at, w.on_timeout, w.joins"
    " FROM waits w JOIN runs r ON r.id = w.run"
    " WHERE w.status IN ('armed', 'parked'){skip} ORDER BY w.id"
)
# Service rows (`t`) of an ended run (`r`) with no `services.closed` after them. `kind IN
# (...)` repeats the partial index's condition, so SQLite can use it: the scan reads only
# service rows, not every timeline row of the workflow's runs.
_UNCLOSED = (
    f"t.kind IN {_SERVICE_KINDS} AND t.kind = 'service.opened'"
    " AND r.status IN ('completed', 'failed', 'aborted', 'dropped', 'rejected')"
    " AND NOT EXISTS (SELECT 1 FROM timeline x WHERE x.run = t.run"
    f" AND x.kind IN {_SERVICE_KINDS} AND x.kind = 'services.closed' AND x.id > t.id)"
)

SQL = ReaderSQL(
    get_run=f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_id = ?",
    list_runs=f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {{where}} ORDER BY r.id DESC LIMIT ?",
    list_all="1",
    list_filters=("r.status = ?", "r.workflow_id = ?", "r.created_at >= ?"),
    checkpoints=(
        f"SELECT c.position, c.step, c.started_at, c.ended_at, {state_of('c')}, c.kind"
        " FROM checkpoints c"
        " JOIN runs r ON r.id = c.run WHERE r.run_id = ? ORDER BY c.position"
    ),
    timeline_run=(
        "SELECT id, status, step, step_started_at, position, error, error_code,"
        " created_at, updated_at FROM runs WHERE run_id = ?"
    ),
    timeline_checkpoints=(
        "SELECT position, step, started_at, ended_at FROM checkpoints"
        " WHERE run = ? AND position > 0 AND kind = 'step' ORDER BY position"
    ),
    timeline_entries=(
        "SELECT position, at, source, kind, step, message, data FROM timeline"
        " WHERE run = ? ORDER BY id"
    ),
    log_entries=(
        "SELECT * FROM (SELECT t.id, r.run_id, r.workflow_id, t.position, t.at, t.source,"
        " t.kind, t.step, t.message, t.data FROM timeline t LEFT JOIN runs r ON r.id = t.run"
        " WHERE {where} ORDER BY t.id DESC LIMIT ?) ORDER BY id"
    ),
    log_after="t.id > ?",
    log_of_run=" AND t.run = (SELECT id FROM runs WHERE run_id = ?)",
    unfinished_runs=_UNFINISHED.format(skip=""),
    unfinished_awake=_UNFINISHED.format(
        skip=" AND NOT (r.status = 'paused' AND EXISTS (SELECT 1 FROM waits w"
        f" WHERE w.run = r.id AND {_DORMANT}))"
    ),
    stored_run=f"{_STORED_RUN} WHERE r.run_id = ?",
    stored_checkpoints=(
        "SELECT c.position, CASE WHEN c.kind = 'step' THEN c.step END,"
        f" {state_of('c')}"
        " FROM checkpoints c JOIN runs r ON r.id = c.run WHERE r.run_id = ?"
        " ORDER BY c.position"
    ),
    live_waits=_LIVE_WAITS.format(skip=""),
    live_awake=_LIVE_WAITS.format(skip=f" AND NOT (r.status = 'paused' AND {_DORMANT})"),
    wait_buffer=(
        "SELECT b.wait, b.seq, b.event_id, e.data FROM wait_buffer b"
        " JOIN waits w ON w.id = b.wait AND w.status = 'armed'"
        " JOIN events e ON e.event_id = b.event_id ORDER BY b.wait, b.seq"
    ),
    unclosed_service_scopes=(
        f"SELECT r.id, r.run_id, {state_of('c')}, t.message FROM timeline t"
        " CROSS JOIN runs r ON r.id = t.run"
        " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
        f" WHERE {_UNCLOSED} AND r.workflow_id = ? ORDER BY r.id, t.id"
    ),
    unclosed_workflows=(
        f"SELECT DISTINCT r.workflow_id FROM timeline t CROSS JOIN runs r ON r.id = t.run"
        f" WHERE {_UNCLOSED}"
    ),
    max_ids=(
        "SELECT (SELECT coalesce(max(id), 0) FROM waits),"
        " (SELECT coalesce(max(seq), 0) FROM wait_buffer)"
    ),
    schedule_ticks="SELECT workflow_id, trigger_id, last_tick FROM schedule_state",
    next_ticks=(
        "SELECT workflow_id, trigger_id, next_tick FROM schedule_state WHERE next_tick IS NOT NULL"
    ),
    files_seen=(
        "SELECT name, inode FROM files_seen WHERE dir = ? AND glob = ? AND inode IS NOT NULL"
    ),
    unrouted_events=f"SELECT {_EVENT_COLUMNS} {_UNROUTED}",
    pending_commands=f"SELECT {_COMMAND_COLUMNS} {_PENDING}",
    has_pending=(
        "SELECT EXISTS (SELECT 1 FROM events WHERE routed_at IS NULL AND id > ?)"
        " OR EXISTS (SELECT 1 FROM inbox WHERE done_at IS NULL AND id > ?)"
    ),
    workflows=(
        "SELECT workflow_id, version, file, triggers, mode, loaded_at FROM workflows"
        " WHERE present = 1 ORDER BY workflow_id"
    ),
    switches=(
        "SELECT workflow_id, trigger_id, enabled, changed_at FROM switches"
        " ORDER BY workflow_id, trigger_id"
    ),
    pending_switches=(
        "SELECT id, command, workflow_id, trigger_id, created_at FROM inbox"
        " WHERE done_at IS NULL AND command IN ('disable', 'enable') ORDER BY id"
    ),
    load_errors=(
        "SELECT file, line, message, at FROM load_errors WHERE message IS NOT NULL ORDER BY file"
    ),
    command_outcome="SELECT id, outcome FROM inbox WHERE run_id = ? ORDER BY id DESC LIMIT 1",
    keyed="SELECT target FROM idempotency_keys WHERE kind = ? AND key = ?",
    children="SELECT child FROM children WHERE parent = ? ORDER BY created_at, n",
    pending_invokes=(
        "SELECT run_id FROM inbox WHERE done_at IS NULL AND command = 'invoke'"
        " AND run_id IS NOT NULL"
    ),
    run_status="SELECT id, status FROM runs WHERE run_id = ?",
)


class JournalReader(SharedReads):
    """Queries over one read-only connection (most of them `SharedReads`'s, with `SQL`)."""

    _sql = SQL

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        # `data_version`'s own connection, used on the event loop's thread (see there), and
        # how many times it was dropped (each one restarts its counter).
        self._probe: sqlite3.Connection | None = None
        self._probe_drops = 0
        self._closed = False

    @property
    def location(self) -> str:
        """The file's path, as given."""
        return str(self.path)

    @classmethod
    async def open(cls, path: Path) -> JournalReader:
        """Open a reader on an existing journal; `JournalCorrupt` if the file is not one."""
        conn = await connect_reader(path)
        try:
            await _check_readable(conn, path)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path)

    async def close(self) -> None:
        """Close the connection (a `data_version` after this opens none again)."""
        self._closed = True
        self._close_probe()
        await self._conn.close()

    def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            self._probe_drops += 1
            probe.close()

    async def _fetch(
        self, sql: str, params: Sequence[Any] = (), *, plain: bool = False
    ) -> list[sqlite3.Row]:
        """The rows of one query; `plain`: each a plain tuple instead (typed as a row)."""
        # Executed and fetched in one call on the connection's thread: the cursor never
        # reaches this task. A cursor handed back to a task cancelled before it closes it
        # keeps its statement unfinished: its read transaction holds WAL checkpoints back,
        # and `close` cannot close the file until the garbage collector frees it.
        try:
            rows = await self._conn.execute_fetchall(sql, params)
            if plain:
                return [tuple(row) for row in rows]  # type: ignore[misc]
            return list(rows)
        except SQLITE_ERRORS as exc:
            if is_corrupt(exc):
                raise not_a_journal(self.path, exc) from exc
            raise JournalError(f"journal {self.path}: read failed: {exc}") from exc

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one read query for another journal module (the dashboard's views)."""
        return await self._fetch(sql, params)

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        return prefixes.matches(await self._fetch(prefixes.SQL, prefixes.params(prefix, limit)))

    async def dormant_waits(self) -> list[DormantRow]:
        """Paused runs parked on their only live wait, an event wait with no timeout or join.

        In no particular order (sorting 100,000 rows costs more than the rest of the read):
        routing orders the waits an event matches itself. Plain tuples, not `sqlite3.Row`s:
        the garbage collector stops tracking them (see `DormantWait`).
        """
        rows: list[Any] = await self._fetch(
            "SELECT w.id, r.id, r.run_id, r.workflow_id, r.trigger_id, r.version, r.position,"
            f" r.step, {state_of('c')}, w.event_type, w.conditions, w.persistent, w.into_key,"
            " w.on_timeout FROM waits w JOIN runs r ON r.id = w.run"
            " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
            f" WHERE w.status = 'parked' AND r.status = 'paused' AND {_DORMANT}",
            plain=True,
        )
        return rows

    async def inbox(
        self, after_event: int, after_command: int, limit: int = 1000
    ) -> tuple[list[EventRecord], list[CommandRecord]]:
        """`unrouted_events` and `pending_commands` as of one moment (one statement).

        Two queries would each see the journal as of their own start: a command committed
        between them would be seen without the events committed before it.
        """
        rows = await self._fetch(
            f"SELECT * FROM (SELECT 0, NULL, {_EVENT_COLUMNS} {_UNROUTED})"
            f" UNION ALL SELECT * FROM (SELECT 1, {_COMMAND_COLUMNS} {_PENDING})",
            [after_event, limit, after_command, limit],
        )
        events = [event_record(row[2:]) for row in rows if row[0] == 0]
        commands = [command_record(row[1:]) for row in rows if row[0] == 1]
        return events, commands

    async def data_version(self) -> int:
        """Changes whenever another connection commits (cheap change detection).

        Pollers (the runtime's inbox, the dashboard) call this many times a second, so it
        runs on a plain connection of its own, in the caller's thread: a few microseconds,
        where a round trip through the reader's thread costs a hundred and wakes two
        threads. It never waits for a lock (busy timeout 0); if that connection cannot
        answer (busy, or it failed to open), it is dropped and the reader's own answers.
        Each connection counts on its own, so the value also encodes which one answered
        (and how many probes came before): a switch reads as a change, never as no change.
        Compare only values from one reader.
        """
        epoch = self._probe_drops << 40
        if self._closed:
            # A poller that outlives the reader by a moment (a runtime stopping) must not
            # open a probe nobody closes: it would hold the -wal and -shm files open.
            raise JournalError(f"journal {self.path}: the reader is closed")
        try:
            if self._probe is None:
                self._probe = sqlite3.connect(
                    read_write_uri(self.path),
                    uri=True,
                    isolation_level=None,
                    timeout=0,
                    check_same_thread=False,
                )
                self._probe.execute("PRAGMA query_only = ON")
            # fetchall: the statement runs to its end, so no read transaction stays open.
            (row,) = self._probe.execute("PRAGMA data_version").fetchall()
            return epoch + int(row[0])
        except SQLITE_ERRORS:
            self._close_probe()
        rows = await self._fetch("PRAGMA data_version")
        return -1 - (epoch + int(rows[0][0]))

    async def standbys(self) -> list[StandbyRecord]:
        """None: a file is run by one daemon, a second one is refused."""
        return []

    async def daemon(self) -> DaemonRecord | None:
        """The live holder of the lease, or None when no process holds it."""
        rows = await self._fetch("SELECT * FROM lease WHERE id = 1")
        holder = lease.holder_from_named(rows[0] if rows else None)
        if holder is None or not lease.is_live(holder, Clock().now_us()):
            return None
        return DaemonRecord(
            holder.pid, holder.host, holder.started_at, holder.ready, holder.degraded
        )

    async def outcomes(self, run_ids: Sequence[str]) -> dict[str, RunOutcome]:
        """Status, last state and error of each of `run_ids` the journal has (a join's)."""
        found: dict[str, RunOutcome] = {}
        unique = list(dict.fromkeys(run_ids))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(
                "SELECT r.run_id, r.status, r.error, r.error_code,"
                f" {state_of('c')} FROM runs r"
                " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
                f" WHERE r.run_id IN ({marks})",
                chunk,
            )
            found.update((row[0], outcome_of(row, row[4])) for row in rows)
        return found


async def _check_readable(conn: aiosqlite.Connection, path: Path) -> None:
    try:
        (app_id,), *_ = [*await conn.execute_fetchall("PRAGMA application_id"), (0,)]
        (version,), *_ = [*await conn.execute_fetchall("PRAGMA user_version"), (0,)]
    except SQLITE_ERRORS as exc:
        raise open_error(path, exc, write=False) from exc
    if app_id != APPLICATION_ID or version == 0:
        raise JournalCorrupt(f"{path} is not a journal of this orchestrator; pass the right --db")
    if version > len(MIGRATIONS):
        raise JournalError(
            f"{path} was written by a newer orchestrator (schema {version}); upgrade"
        )

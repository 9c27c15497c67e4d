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
from ...records import Checkpoint, RunInfo, RunStatus, TimelineEntry
from ..decoding import (
    checkpoint_of,
    command_record,
    disabled_of,
    event_record,
    outcome_of,
    run_info,
    service_scopes,
    stored_fields,
    switch_commands,
    switch_records,
    wait_records,
    workflow_records,
)
from ..records import (
    CommandOutcome,
    CommandRecord,
    DaemonRecord,
    DormantRow,
    EventRecord,
    LoadErrorRecord,
    LogEntry,
    RunMatches,
    RunOutcome,
    StoredCheckpoint,
    StoredRun,
    SwitchRecord,
    UnfinishedRun,
    WaitRecord,
    WorkflowRecord,
)
from ..timeline import assemble_timeline, row_entry
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


class JournalReader:
    """Queries over one read-only connection."""

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

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run, or None if the journal has no such run."""
        rows = await self._fetch(f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_id = ?", [run_id])
        return run_info(rows[0]) if rows else None

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        return prefixes.matches(await self._fetch(prefixes.SQL, prefixes.params(prefix, limit)))

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        created_since: int | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally of one status and/or workflow, created since."""
        # Only the conditions given, so SQLite reads the index of the status or workflow
        # (`x IS NULL OR ...` hides it: a rare status scanned every run, newest first).
        where, params = ["1"], list[Any]()
        for condition, value in (
            ("r.status = ?", status),
            ("r.workflow_id = ?", workflow),
            ("r.created_at >= ?", created_since),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        rows = await self._fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {' AND '.join(where)}"
            " ORDER BY r.id DESC LIMIT ?",
            [*params, limit],
        )
        return [run_info(row) for row in rows]

    async def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """Every committed checkpoint of a run, in order (position 0 is its input)."""
        rows = await self._fetch(
            f"SELECT c.position, c.step, c.started_at, c.ended_at, {state_of('c')}, c.kind"
            " FROM checkpoints c"
            " JOIN runs r ON r.id = c.run WHERE r.run_id = ? ORDER BY c.position",
            [run_id],
        )
        return [checkpoint_of(row, row[4]) for row in rows]

    async def timeline(self, run_id: str) -> list[TimelineEntry] | None:
        """Everything a run did, in order; None if the journal has no such run."""
        runs = await self._fetch(
            "SELECT id, status, step, step_started_at, position, error, error_code,"
            " created_at, updated_at FROM runs WHERE run_id = ?",
            [run_id],
        )
        if not runs:
            return None
        run = runs[0]
        checkpoints = await self._fetch(
            "SELECT position, step, started_at, ended_at FROM checkpoints"
            " WHERE run = ? AND position > 0 AND kind = 'step' ORDER BY position",
            [run["id"]],
        )
        entries = await self._fetch(
            "SELECT position, at, source, kind, step, message, data FROM timeline"
            " WHERE run = ? ORDER BY id",
            [run["id"]],
        )
        return assemble_timeline(run, checkpoints, entries)

    async def log_entries(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[LogEntry]:
        """Journaled timeline rows above `after`: the last `limit` (-1: all), oldest first."""
        where, params = "t.id > ?", list[object]([after])
        if run_id is not None:
            where += " AND t.run = (SELECT id FROM runs WHERE run_id = ?)"
            params.append(run_id)
        rows = await self._fetch(
            "SELECT * FROM (SELECT t.id, r.run_id, r.workflow_id, t.position, t.at, t.source,"
            " t.kind, t.step, t.message, t.data FROM timeline t LEFT JOIN runs r ON r.id = t.run"
            f" WHERE {where} ORDER BY t.id DESC LIMIT ?) ORDER BY id",
            [*params, limit],
        )
        return [
            LogEntry(row["id"], row["run_id"], row_entry(row), row["workflow_id"]) for row in rows
        ]

    async def unfinished_runs(self, *, dormant: bool = True) -> list[UnfinishedRun]:
        """Runs that are queued, running or paused, oldest first, with their last state.

        `dormant` False: without the runs `dormant_waits` returns.
        """
        skip = (
            ""
            if dormant
            else " AND NOT (r.status = 'paused' AND EXISTS (SELECT 1 FROM waits w"
            f" WHERE w.run = r.id AND {_DORMANT}))"
        )
        rows = await self._fetch(
            f"{_STORED_RUN} WHERE r.status IN ('queued', 'running', 'paused'){skip}"
            # A row the CLI queued while no daemon ran is its invoke command's to start.
            " AND NOT (r.status = 'queued' AND r.run_id IN (SELECT i.run_id FROM inbox i"
            " WHERE i.done_at IS NULL AND i.command = 'invoke'))"
            " ORDER BY r.id"
        )
        return [UnfinishedRun(**stored_fields(row)) for row in rows]

    async def stored_run(self, run_id: str) -> StoredRun | None:
        """One run whatever its status, with its last state and how it ended; None if unknown."""
        rows = await self._fetch(f"{_STORED_RUN} WHERE r.run_id = ?", [run_id])
        if not rows:
            return None
        row = rows[0]
        return StoredRun(
            **stored_fields(row),
            error=row["error"],
            error_code=row["error_code"],
            updated_at=row["updated_at"],
        )

    async def stored_checkpoints(self, run_id: str) -> list[StoredCheckpoint]:
        """A run's checkpoints in order, with their state as journaled (position 0: input)."""
        rows = await self._fetch(
            "SELECT c.position, CASE WHEN c.kind = 'step' THEN c.step END,"
            f" {state_of('c')}"
            " FROM checkpoints c JOIN runs r ON r.id = c.run WHERE r.run_id = ?"
            " ORDER BY c.position",
            [run_id],
        )
        return [StoredCheckpoint(row[0], row[1], row[2]) for row in rows]

    async def live_waits(self, *, dormant: bool = True) -> list[WaitRecord]:
        """Armed and parked waits, oldest first, each with its buffered events in order.

        `dormant` False: without the waits `dormant_waits` returns.
        """
        skip = "" if dormant else f" AND NOT (r.status = 'paused' AND {_DORMANT})"
        rows = await self._fetch(
            "SELECT w.id, w.run, r.run_id, w.event_type, w.conditions, w.persistent, w.status,"
            " w.into_key, w.timeout_at, w.on_timeout, w.joins"
            " FROM waits w JOIN runs r ON r.id = w.run"
            f" WHERE w.status IN ('armed', 'parked'){skip} ORDER BY w.id"
        )
        buffered = await self._fetch(
            "SELECT b.wait, b.seq, b.event_id, e.data FROM wait_buffer b"
            " JOIN waits w ON w.id = b.wait AND w.status = 'armed'"
            " JOIN events e ON e.event_id = b.event_id ORDER BY b.wait, b.seq"
        )
        return wait_records(rows, buffered)

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

    async def unclosed_service_scopes(
        self, workflow_id: str
    ) -> list[tuple[int, str, str, list[str]]]:
        """Ended runs whose run-scoped services were built but whose scope was never closed.

        Each as (row, run id, last state, service ids), oldest first.
        """
        # `kind IN (...)` repeats the partial index's condition, so SQLite can use it: the
        # scan reads only service rows, not every timeline row of the workflow's runs.
        rows = await self._fetch(
            f"SELECT r.id, r.run_id, {state_of('c')}, t.message FROM timeline t"
            " CROSS JOIN runs r ON r.id = t.run"
            " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
            f" WHERE t.kind IN {_SERVICE_KINDS} AND t.kind = 'service.opened'"
            " AND r.workflow_id = ?"
            " AND r.status IN ('completed', 'failed', 'aborted', 'dropped', 'rejected')"
            " AND NOT EXISTS (SELECT 1 FROM timeline x WHERE x.run = t.run"
            f" AND x.kind IN {_SERVICE_KINDS} AND x.kind = 'services.closed' AND x.id > t.id)"
            " ORDER BY r.id, t.id",
            [workflow_id],
        )
        return service_scopes(rows)

    async def workflows_with_unclosed_service_scopes(self) -> set[str]:
        """Ids of the workflows that have ended runs with run-scoped services never closed.

        One scan of the service rows for all workflows, so registering N workflows does not
        scan them N times.
        """
        rows = await self._fetch(
            "SELECT DISTINCT r.workflow_id FROM timeline t"
            " CROSS JOIN runs r ON r.id = t.run"
            f" WHERE t.kind IN {_SERVICE_KINDS} AND t.kind = 'service.opened'"
            " AND r.status IN ('completed', 'failed', 'aborted', 'dropped', 'rejected')"
            " AND NOT EXISTS (SELECT 1 FROM timeline x WHERE x.run = t.run"
            f" AND x.kind IN {_SERVICE_KINDS} AND x.kind = 'services.closed' AND x.id > t.id)",
            [],
        )
        return {workflow_id for (workflow_id,) in rows}

    async def max_ids(self) -> tuple[int, int]:
        """The highest wait id and buffer sequence number in use."""
        rows = await self._fetch(
            "SELECT (SELECT coalesce(max(id), 0) FROM waits),"
            " (SELECT coalesce(max(seq), 0) FROM wait_buffer)"
        )
        return int(rows[0][0]), int(rows[0][1])

    async def schedule_ticks(self) -> dict[tuple[str, str], int]:
        """Each schedule's last fired tick (or when it was first armed)."""
        rows = await self._fetch("SELECT workflow_id, trigger_id, last_tick FROM schedule_state")
        return {(row[0], row[1]): row[2] for row in rows}

    async def files_seen(self, folder: str, glob: str) -> dict[str, int]:
        """Name -> inode of the files in `folder` that were events of this glob's watch."""
        rows = await self._fetch(
            "SELECT name, inode FROM files_seen WHERE dir = ? AND glob = ? AND inode IS NOT NULL",
            [folder, glob],
        )
        return {row[0]: row[1] for row in rows}

    async def unrouted_events(self, after: int, limit: int = 1000) -> list[EventRecord]:
        """Events written by other processes and not routed yet, oldest first."""
        rows = await self._fetch(f"SELECT {_EVENT_COLUMNS} {_UNROUTED}", [after, limit])
        return [event_record(row) for row in rows]

    async def pending_commands(self, after: int, limit: int = 1000) -> list[CommandRecord]:
        """Commands not applied yet, oldest first."""
        rows = await self._fetch(f"SELECT {_COMMAND_COLUMNS} {_PENDING}", [after, limit])
        return [command_record(row) for row in rows]

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

    async def has_pending(self, after_event: int, after_command: int) -> bool:
        """Whether other processes wrote events or commands past these ids (one query)."""
        rows = await self._fetch(
            "SELECT EXISTS (SELECT 1 FROM events WHERE routed_at IS NULL AND id > ?)"
            " OR EXISTS (SELECT 1 FROM inbox WHERE done_at IS NULL AND id > ?)",
            [after_event, after_command],
        )
        return bool(rows[0][0])

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

    async def workflows(self) -> list[WorkflowRecord]:
        """Workflows registered now, by id, with their switches and next schedule ticks."""
        rows = await self._fetch(
            "SELECT workflow_id, version, file, triggers, mode, loaded_at FROM workflows"
            " WHERE present = 1 ORDER BY workflow_id"
        )
        ticks = await self._fetch(
            "SELECT workflow_id, trigger_id, next_tick FROM schedule_state"
            " WHERE next_tick IS NOT NULL"
        )
        return workflow_records(rows, await self.disabled(), ticks)

    async def switches(self) -> list[SwitchRecord]:
        """Every disable or enable the daemon applied (the latest per key), by key."""
        rows = await self._fetch(
            "SELECT workflow_id, trigger_id, enabled, changed_at FROM switches"
            " ORDER BY workflow_id, trigger_id"
        )
        return switch_records(rows)

    async def disabled(self) -> dict[str, dict[str, int]]:
        """Workflow id -> key ('' for the whole workflow, else a trigger id) -> disabled since."""
        return disabled_of(await self.switches())

    async def pending_switches(self) -> list[CommandRecord]:
        """Disable and enable commands not applied yet, oldest first."""
        rows = await self._fetch(
            "SELECT id, command, workflow_id, trigger_id, created_at FROM inbox"
            " WHERE done_at IS NULL AND command IN ('disable', 'enable') ORDER BY id"
        )
        return switch_commands(rows)

    async def load_errors(self) -> list[LoadErrorRecord]:
        """Files that failed to load and have not loaded since, by file."""
        rows = await self._fetch(
            "SELECT file, line, message, at FROM load_errors WHERE message IS NOT NULL"
            " ORDER BY file"
        )
        return [LoadErrorRecord(row[0], row[1], row[2], row[3]) for row in rows]

    async def daemon(self) -> DaemonRecord | None:
        """The live holder of the lease, or None when no process holds it."""
        rows = await self._fetch("SELECT * FROM lease WHERE id = 1")
        holder = lease.holder_from_named(rows[0] if rows else None)
        if holder is None or not lease.is_live(holder, Clock().now_us()):
            return None
        return DaemonRecord(
            holder.pid, holder.host, holder.started_at, holder.ready, holder.degraded
        )

    async def command_outcome(self, run_id: str) -> CommandOutcome | None:
        """The latest command about `run_id` (an invoke names its run), or None."""
        rows = await self._fetch(
            "SELECT id, outcome FROM inbox WHERE run_id = ? ORDER BY id DESC LIMIT 1", [run_id]
        )
        return CommandOutcome(rows[0][0], rows[0][1]) if rows else None

    async def keyed(self, kind: str, key: str) -> str | None:
        """What the idempotency `key` of `kind` (``emit``, ``invoke``) made first, or None."""
        rows = await self._fetch(
            "SELECT target FROM idempotency_keys WHERE kind = ? AND key = ?", [kind, key]
        )
        return str(rows[0][0]) if rows else None

    async def children(self, run_id: str) -> list[str]:
        """The ids of the runs a run's steps started (`ctx.start`), in the order started."""
        rows = await self._fetch(
            "SELECT child FROM children WHERE parent = ? ORDER BY created_at, n", [run_id]
        )
        return [row[0] for row in rows]

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

    async def pending_invokes(self) -> set[str]:
        """The run ids of invoke commands not applied yet (runs that will exist)."""
        rows = await self._fetch(
            "SELECT run_id FROM inbox WHERE done_at IS NULL AND command = 'invoke'"
            " AND run_id IS NOT NULL"
        )
        return {row[0] for row in rows}

    async def run_status(self, run_id: str) -> tuple[int, RunStatus] | None:
        """The run's row id and status, or None if unknown."""
        rows = await self._fetch("SELECT id, status FROM runs WHERE run_id = ?", [run_id])
        return (rows[0][0], RunStatus(rows[0][1])) if rows else None


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


_EVENT_COLUMNS = "id, event_id, type, data, source, created_at"
_UNROUTED = "FROM events WHERE routed_at IS NULL AND id > ? ORDER BY id LIMIT ?"
_COMMAND_COLUMNS = "id, command, run_id, workflow_id, trigger_id, payload, created_at"
_PENDING = "FROM inbox WHERE done_at IS NULL AND id > ? ORDER BY id LIMIT ?"

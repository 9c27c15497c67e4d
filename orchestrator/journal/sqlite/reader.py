"""Reading the journal: runs, checkpoints and timelines, on a read-only connection.

Used by the runtime, the CLI and the dashboard alike. Every query reads its rows at once
and closes its cursor, so no read transaction outlives a call (open readers stop WAL
checkpoints).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ...clock import Clock, to_datetime
from ...errors import JournalCorrupt, JournalError
from ...records import Checkpoint, RunCode, RunInfo, RunStatus, TimelineEntry
from ...state import StateEncodingError, holds_lone_surrogate, parse_payload
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
        """Close the connection."""
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
        try:
            async with self._conn.execute(sql, params) as cursor:
                if plain:
                    cursor.row_factory = None
                return list(await cursor.fetchall())
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
        return _run_info(rows[0]) if rows else None

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
        return [_run_info(row) for row in rows]

    async def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """Every committed checkpoint of a run, in order (position 0 is its input)."""
        rows = await self._fetch(
            f"SELECT c.position, c.step, c.started_at, c.ended_at, {state_of('c')}, c.kind"
            " FROM checkpoints c"
            " JOIN runs r ON r.id = c.run WHERE r.run_id = ? ORDER BY c.position",
            [run_id],
        )
        return [
            Checkpoint(
                position=row[0],
                step=row[1],
                started_at=to_datetime(row[2]),
                ended_at=to_datetime(row[3]),
                state=_shown_state(row[4]),
                kind=row[5],
            )
            for row in rows
        ]

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
        return [UnfinishedRun(**_stored_fields(row)) for row in rows]

    async def stored_run(self, run_id: str) -> StoredRun | None:
        """One run whatever its status, with its last state and how it ended; None if unknown."""
        rows = await self._fetch(f"{_STORED_RUN} WHERE r.run_id = ?", [run_id])
        if not rows:
            return None
        row = rows[0]
        return StoredRun(
            **_stored_fields(row),
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
        by_wait: dict[int, list[tuple[int, str, dict[str, Any]]]] = {}
        for wait, seq, event_id, data in buffered:
            value, _ = _payload(data)  # unreadable: an empty event, not a crash at start
            by_wait.setdefault(wait, []).append((seq, event_id, value or {}))
        return [
            WaitRecord(
                id=row[0],
                row=row[1],
                run_id=row[2],
                event_type=row[3],
                conditions=json.loads(row[4]),
                persistent=bool(row[5]),
                status=row[6],
                into=row[7],
                timeout_at=row[8],
                on_timeout=row[9],
                buffer=by_wait.get(row[0], []),
                joins=None if row[10] is None else [str(i) for i in json.loads(row[10])],
            )
            for row in rows
        ]

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
        found: dict[int, tuple[int, str, str, list[str]]] = {}
        for row, run_id, state, service_id in rows:
            found.setdefault(row, (row, run_id, state, []))[3].append(service_id)
        return list(found.values())

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
        return [_event_record(row) for row in rows]

    async def pending_commands(self, after: int, limit: int = 1000) -> list[CommandRecord]:
        """Commands not applied yet, oldest first."""
        rows = await self._fetch(f"SELECT {_COMMAND_COLUMNS} {_PENDING}", [after, limit])
        return [_command_record(row) for row in rows]

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
        events = [_event_record(row[2:]) for row in rows if row[0] == 0]
        commands = [_command_record(row[1:]) for row in rows if row[0] == 1]
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
        off = await self.disabled()
        ticks: dict[str, dict[str, int]] = {}
        for workflow_id, trigger_id, tick in await self._fetch(
            "SELECT workflow_id, trigger_id, next_tick FROM schedule_state"
            " WHERE next_tick IS NOT NULL"
        ):
            ticks.setdefault(workflow_id, {})[trigger_id] = tick
        records = []
        for row in rows:
            disabled = dict(off.get(row[0], {}))
            records.append(
                WorkflowRecord(
                    workflow_id=row[0],
                    version=row[1],
                    file=row[2],
                    triggers=json.loads(row[3]),
                    mode=row[4],
                    loaded_at=row[5],
                    disabled_at=disabled.pop("", None),
                    disabled_triggers=disabled,
                    next_ticks=ticks.get(row[0], {}),
                )
            )
        return records

    async def switches(self) -> list[SwitchRecord]:
        """Every disable or enable the daemon applied (the latest per key), by key."""
        rows = await self._fetch(
            "SELECT workflow_id, trigger_id, enabled, changed_at FROM switches"
            " ORDER BY workflow_id, trigger_id"
        )
        return [
            SwitchRecord(
                workflow_id=row[0],
                trigger_id=row[1] or None,
                enabled=bool(row[2]),
                changed_at=row[3],
            )
            for row in rows
        ]

    async def disabled(self) -> dict[str, dict[str, int]]:
        """Workflow id -> key ('' for the whole workflow, else a trigger id) -> disabled since."""
        off: dict[str, dict[str, int]] = {}
        for switch in await self.switches():
            if not switch.enabled:
                off.setdefault(switch.workflow_id, {})[switch.trigger_id or ""] = switch.changed_at
        return off

    async def pending_switches(self) -> list[CommandRecord]:
        """Disable and enable commands not applied yet, oldest first."""
        rows = await self._fetch(
            "SELECT id, command, workflow_id, trigger_id, created_at FROM inbox"
            " WHERE done_at IS NULL AND command IN ('disable', 'enable') ORDER BY id"
        )
        return [
            CommandRecord(
                id=row[0],
                command=row[1],
                run_id=None,
                workflow_id=row[2],
                trigger_id=row[3],
                payload=None,
                created_at=row[4],
            )
            for row in rows
        ]

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
            for row in rows:
                found[row[0]] = RunOutcome(
                    run_id=row[0],
                    status=RunStatus(row[1]),
                    state=_shown_state(row[4]),
                    error=row[2],
                    error_code=row[3],
                )
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
        async with conn.execute("PRAGMA application_id") as cursor:
            app_id = (await cursor.fetchone() or (0,))[0]
        async with conn.execute("PRAGMA user_version") as cursor:
            version = (await cursor.fetchone() or (0,))[0]
    except SQLITE_ERRORS as exc:
        raise open_error(path, exc, write=False) from exc
    if app_id != APPLICATION_ID or version == 0:
        raise JournalCorrupt(f"{path} is not a journal of this orchestrator; pass the right --db")
    if version > len(MIGRATIONS):
        raise JournalError(
            f"{path} was written by a newer orchestrator (schema {version}); upgrade"
        )


def _stored_fields(row: sqlite3.Row) -> dict[str, Any]:
    """The fields of an `UnfinishedRun` from a row of `_STORED_RUN`."""
    return {
        "row": row[0],
        "run_id": row[1],
        "workflow_id": row[2],
        "trigger_id": row[3],
        "version": row[4],
        "status": RunStatus(row[5]),
        "position": row[6],
        "step": row[7],
        "state": row[8],
        "created_at": row[9],
        "recoveries": row[10],
    }


def _run_info(row: sqlite3.Row) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        workflow_id=row["workflow_id"],
        trigger_id=row["trigger_id"],
        status=RunStatus(row["status"]),
        step=row["step"],
        state=_shown_state(row["state"]),
        error=row["error"],
        version=row["version"],
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        error_code=RunCode(row["error_code"]) if row["error_code"] is not None else None,
        forked_from=forked_from(row["forked_from_run"], row["forked_from_step"]),
        parent=row["parent"],
    )


def forked_from(run_id: str | None, step: str | None) -> dict[str, str] | None:
    """A run's ``forked_from`` as shown: ``{"run_id", "step"}``, or None (not a fork)."""
    return None if run_id is None else {"run_id": run_id, "step": step or ""}


def _payload(text: str | None, *, wrapped: bool = False) -> tuple[Any, str | None]:
    """A payload row decoded under the state bounds, or (None, why it cannot be).

    Rows that no process of this version writes (too deep, too big, not JSON) must fail
    only their event or command, never the process reading them. `wrapped`: any JSON
    value, not only an object.
    """
    if text is None:
        return None, None
    try:
        if wrapped:
            return parse_payload(f'{{"value":{text}}}')["value"], None
        return parse_payload(text), None
    except StateEncodingError as exc:
        return None, str(exc)


def _shown_state(text: str | None) -> dict[str, Any]:
    """A state to show; one that cannot be read says why instead of failing the reader."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return {"unreadable_state": f"the journal holds a state that is not readable JSON: {exc}"}
    if not isinstance(value, dict) or holds_lone_surrogate(text, value):
        return {"unreadable_state": f"not a valid state: {text[:80]}"}
    return value


_EVENT_COLUMNS = "id, event_id, type, data, source, created_at"
_UNROUTED = "FROM events WHERE routed_at IS NULL AND id > ? ORDER BY id LIMIT ?"
_COMMAND_COLUMNS = "id, command, run_id, workflow_id, trigger_id, payload, created_at"
_PENDING = "FROM inbox WHERE done_at IS NULL AND id > ? ORDER BY id LIMIT ?"


def _event_record(row: Sequence[Any]) -> EventRecord:
    data, problem = _payload(row[3])
    return EventRecord(
        id=row[0],
        event_id=row[1],
        type=row[2],
        data=data if isinstance(data, dict) else {},
        source=row[4],
        created_at=row[5],
        problem=problem,
    )


def _command_record(row: Sequence[Any]) -> CommandRecord:
    payload, problem = _payload(row[5], wrapped=True)
    return CommandRecord(
        id=row[0],
        command=row[1],
        run_id=row[2],
        workflow_id=row[3],
        trigger_id=row[4],
        payload=payload,
        created_at=row[6],
        problem=problem,
    )

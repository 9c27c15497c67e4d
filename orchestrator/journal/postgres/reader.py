"""Reading a PostgreSQL journal: the queries of `JournalQueries`, on one connection.

The connection is in autocommit, so no read transaction outlives a query. Rows come back
as `Row`: read by position or by column name, as ``sqlite3.Row`` is on SQLite, so the
decoding helpers the SQLite reader uses (`journal/decoding.py`, and the dashboard's views)
read both. Each query is the SQLite reader's, in PostgreSQL's dialect; a checkpoint's
state is read as its two parts and put together in Python (`states.py`); `data_version`
is the change feed's (`feed.py`).

PostgreSQL text holds no NUL character: a key that has one (a run id, a workflow id)
names nothing in the journal, and a lookup of it finds nothing, as on SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
    stored_fields,
    switch_commands,
    switch_records,
    wait_records,
    workflow_records,
)
from ..liveness import STALE_AFTER_US
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
from . import prefixes
from .connection import SCHEMA, connect, describe, load_psycopg
from .feed import POLL_SECONDS, POLL_SQL, RETRY_SECONDS, ChangeFeed
from .schema import MIGRATIONS
from .states import parts, state_text

if TYPE_CHECKING:
    import psycopg


class Row(tuple[Any, ...]):
    """One result row: ``row[0]`` or ``row["column"]``."""

    __slots__ = ()
    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)


def _row_type(names: Sequence[str]) -> type[Row]:
    return type("Row", (Row,), {"__slots__": (), "_names": {n: i for i, n in enumerate(names)}})


def row_factory(cursor: Any) -> Any:
    """A psycopg row factory making `Row`s (one class per result: names looked up once)."""
    names = [column.name for column in cursor.description or ()]
    made = _row_type(names)
    return lambda values: made(values)


_SERVICE_KINDS = "('service.opened', 'services.closed')"  # the timeline_services index's
_FINAL = "('completed', 'failed', 'aborted', 'dropped', 'rejected')"
# A run's step as shown (the SQLite reader's SHOWN_STEP): the step a paused run waits in,
# also once it ended there.
SHOWN_STEP = (
    "CASE WHEN r.status IN ('paused', 'failed', 'aborted') THEN coalesce(r.paused_in, r.step)"
    " ELSE r.step END"
)
# Columns of `run_info`, its state as the two parts of the run's last checkpoint (`l`).
_RUN_COLUMNS = f"""
    r.run_id, r.workflow_id, r.trigger_id, r.status, {SHOWN_STEP} AS step, r.error,
    r.error_code, r.version, r.created_at, r.updated_at, r.forked_from_run, r.forked_from_step,
    (SELECT p.parent FROM children p WHERE p.child = r.run_id) AS parent,
    l.position AS last_position, l.state_whole, l.state_patch
"""
_LAST_STATE = (
    f" LEFT JOIN LATERAL (SELECT c.position, {parts('c')} FROM checkpoints c WHERE c.run = r.id"
    " ORDER BY c.position DESC LIMIT 1) l ON TRUE"
)
# A run with its last checkpoint's state (columns 8, 9) and its recoveries at its step.
_STORED_RUN = (
    "SELECT r.id, r.run_id, r.workflow_id, r.trigger_id, r.version, r.status, r.position,"
    f" r.step, {parts('c')}, r.created_at, coalesce(v.count, 0) AS recoveries, r.error,"
    " r.error_code, r.updated_at FROM runs r"
    " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
    " LEFT JOIN recoveries v ON v.run = r.id AND v.step = r.step"
)
# A wait `dormant_waits` returns, as a condition on wait `w` (its run `r` is paused): parked
# on an event, with no timeout and no join, its run's only live wait.
_DORMANT = (
    "w.status = 'parked' AND w.event_type IS NOT NULL AND w.timeout_at IS NULL"
    " AND w.joins IS NULL AND NOT EXISTS (SELECT 1 FROM waits o WHERE o.run = w.run"
    " AND o.id <> w.id AND o.status IN ('armed', 'parked'))"
)
_EVENT_COLUMNS = "id, event_id, type, data, source, created_at"
_UNROUTED = "FROM events WHERE routed_at IS NULL AND id > %s ORDER BY id LIMIT %s"
_COMMAND_COLUMNS = "id, command, run_id, workflow_id, trigger_id, payload, created_at"
_PENDING = "FROM inbox WHERE done_at IS NULL AND id > %s ORDER BY id LIMIT %s"


class PostgresReader:
    """Queries over one autocommit connection, and the journal's change feed."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        url: str,
        *,
        poll_seconds: float = POLL_SECONDS,
        retry_seconds: tuple[float, float] = RETRY_SECONDS,
    ) -> None:
        self._conn = conn
        self.url = url  # may hold a password: `location` is what is shown
        self._closed = False
        self._reconnecting = asyncio.Lock()
        self.feed = ChangeFeed(
            url, self._poll, poll_seconds=poll_seconds, retry_seconds=retry_seconds
        )

    @property
    def location(self) -> str:
        """Where the journal is, without the password."""
        return describe(self.url)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        poll_seconds: float = POLL_SECONDS,
        retry_seconds: tuple[float, float] = RETRY_SECONDS,
    ) -> PostgresReader:
        """Open a reader on the journal at `url` (the change feed's timings: `feed.py`).

        Raises:
            JournalUnreachable: no connection could be made.
            JournalCorrupt: the database holds no journal (not migrated), as a SQLite file
                that is not a journal.
            JournalError: the journal is newer than this orchestrator.
        """
        conn = await connect(url, autocommit=True)
        conn.row_factory = row_factory
        reader = cls(conn, url, poll_seconds=poll_seconds, retry_seconds=retry_seconds)
        try:
            await reader._check_readable()
        except BaseException:
            await conn.close()
            raise
        return reader

    async def _check_readable(self) -> None:
        table = f"{SCHEMA}.schema_version"
        (row,) = await self.fetch("SELECT to_regclass(%s) IS NOT NULL", [table])
        version = (await self.fetch(f"SELECT version FROM {table}"))[0][0] if row[0] else 0
        if not version:
            raise JournalCorrupt(
                f"{self.location} holds no journal of this orchestrator; pass the right --db,"
                " or create one with `orchestrator journal migrate --db URL`"
            )
        if version > len(MIGRATIONS):
            raise JournalError(
                f"{self.location} was written by a newer orchestrator (schema {version}); upgrade"
            )

    async def close(self) -> None:
        """Stop the change feed and close the connection."""
        self._closed = True
        await self.feed.close()
        await self._conn.close()

    async def fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        """Run one read query (``%s`` placeholders) and return all its rows.

        A connection that was lost (the server restarted, an idle timeout) is opened again
        and the query run once more: reads change nothing, so running one twice is safe.

        Raises:
            JournalUnreachable: the connection was lost and cannot be made again.
            JournalError: the query failed.
        """
        pg = load_psycopg()
        conn = self._conn
        try:
            return await self._execute(sql, params)
        except pg.OperationalError as exc:
            if not conn.closed or self._closed:
                raise _read_failed(self.location, exc) from exc
        await self._reconnect(conn)
        try:
            return await self._execute(sql, params)
        except pg.Error as exc:
            raise _read_failed(self.location, exc) from exc

    async def _execute(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Row]:
        pg = load_psycopg()
        try:
            cursor = await self._conn.execute(sql, params)
            return await cursor.fetchall()
        except pg.OperationalError:
            raise  # `fetch` tells a lost connection from a failed query
        except pg.Error as exc:
            raise _read_failed(self.location, exc) from exc

    async def _reconnect(self, lost: psycopg.AsyncConnection[Any]) -> None:
        """A new connection in place of `lost` (`JournalUnreachable` if none can be made).

        Queries that lost it together make one new connection: the first one replaces it.
        """
        async with self._reconnecting:
            if self._conn is not lost:
                return
            conn = await connect(self.url, autocommit=True)
            conn.row_factory = row_factory
            self._conn = conn

    @property
    def backend_pid(self) -> int:
        """The server process of the reader's connection (tests end it to lose it)."""
        return int(self._conn.info.backend_pid)

    async def _poll(self) -> tuple[Any, ...]:
        return tuple((await self.fetch(POLL_SQL))[0])

    async def data_version(self) -> int:
        """Changes whenever another connection commits (the change feed, `feed.py`).

        Compare only values from one reader.
        """
        return await self.feed.data_version()

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run, or None if the journal has no such run."""
        if _nul(run_id):
            return None
        rows = await self.fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs r{_LAST_STATE} WHERE r.run_id = %s", [run_id]
        )
        return _run_info(rows[0]) if rows else None

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        sql = prefixes.sql(prefix)
        if sql is None:
            return RunMatches((), 0)
        return prefixes.matches(await self.fetch(sql, prefixes.params(prefix, limit)))

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        created_since: int | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally of one status and/or workflow, created since."""
        if _nul(status, workflow):
            return []
        where, params = ["TRUE"], list[Any]()
        for condition, value in (
            ("r.status = %s", status),
            ("r.workflow_id = %s", workflow),
            ("r.created_at >= %s", created_since),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        rows = await self.fetch(
            f"SELECT {_RUN_COLUMNS} FROM (SELECT * FROM runs r WHERE {' AND '.join(where)}"
            f" ORDER BY r.id DESC LIMIT %s) r{_LAST_STATE} ORDER BY r.id DESC",
            [*params, _limit(limit)],
        )
        return [_run_info(row) for row in rows]

    async def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """Every committed checkpoint of a run, in order (position 0 is its input)."""
        if _nul(run_id):
            return []
        rows = await self.fetch(
            f"SELECT c.position, c.step, c.started_at, c.ended_at, {parts('c')}, c.kind"
            " FROM checkpoints c"
            " JOIN runs r ON r.id = c.run WHERE r.run_id = %s ORDER BY c.position",
            [run_id],
        )
        return [checkpoint_of(row, state_text(row[4], row[5])) for row in rows]

    async def timeline(self, run_id: str) -> list[TimelineEntry] | None:
        """Everything a run did, in order; None if the journal has no such run."""
        if _nul(run_id):
            return None
        runs = await self.fetch(
            "SELECT id, status, step, step_started_at, position, error, error_code,"
            " created_at, updated_at FROM runs WHERE run_id = %s",
            [run_id],
        )
        if not runs:
            return None
        run = runs[0]
        checkpoints = await self.fetch(
            "SELECT position, step, started_at, ended_at FROM checkpoints"
            " WHERE run = %s AND position > 0 AND kind = 'step' ORDER BY position",
            [run["id"]],
        )
        entries = await self.fetch(
            "SELECT position, at, source, kind, step, message, data FROM timeline"
            " WHERE run = %s ORDER BY id",
            [run["id"]],
        )
        return assemble_timeline(run, checkpoints, entries)

    async def log_entries(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[LogEntry]:
        """Journaled timeline rows above `after`: the last `limit` (-1: all), oldest first."""
        if _nul(run_id):
            return []
        where, params = "t.id > %s", list[object]([after])
        if run_id is not None:
            where += " AND t.run = (SELECT id FROM runs WHERE run_id = %s)"
            params.append(run_id)
        rows = await self.fetch(
            "SELECT * FROM (SELECT t.id, r.run_id, r.workflow_id, t.position, t.at, t.source,"
            " t.kind, t.step, t.message, t.data FROM timeline t LEFT JOIN runs r ON r.id = t.run"
            f" WHERE {where} ORDER BY t.id DESC LIMIT %s) last ORDER BY id",
            [*params, _limit(limit)],
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
        rows = await self.fetch(
            f"{_STORED_RUN} WHERE r.status IN ('queued', 'running', 'paused'){skip}"
            # A row the CLI queued while no daemon ran is its invoke command's to start.
            " AND NOT (r.status = 'queued' AND r.run_id IN (SELECT i.run_id FROM inbox i"
            " WHERE i.done_at IS NULL AND i.command = 'invoke'))"
            " ORDER BY r.id"
        )
        return [UnfinishedRun(**_stored(row)) for row in rows]

    async def stored_run(self, run_id: str) -> StoredRun | None:
        """One run whatever its status, with its last state and how it ended; None if unknown."""
        if _nul(run_id):
            return None
        rows = await self.fetch(f"{_STORED_RUN} WHERE r.run_id = %s", [run_id])
        if not rows:
            return None
        row = rows[0]
        return StoredRun(
            **_stored(row),
            error=row["error"],
            error_code=row["error_code"],
            updated_at=row["updated_at"],
        )

    async def stored_checkpoints(self, run_id: str) -> list[StoredCheckpoint]:
        """A run's checkpoints in order, with their state as journaled (position 0: input)."""
        if _nul(run_id):
            return []
        rows = await self.fetch(
            "SELECT c.position, CASE WHEN c.kind = 'step' THEN c.step END,"
            f" {parts('c')}"
            " FROM checkpoints c JOIN runs r ON r.id = c.run WHERE r.run_id = %s"
            " ORDER BY c.position",
            [run_id],
        )
        return [StoredCheckpoint(row[0], row[1], state_text(row[2], row[3])) for row in rows]

    async def live_waits(self, *, dormant: bool = True) -> list[WaitRecord]:
        """Armed and parked waits, oldest first, each with its buffered events in order.

        `dormant` False: without the waits `dormant_waits` returns.
        """
        skip = "" if dormant else f" AND NOT (r.status = 'paused' AND {_DORMANT})"
        rows = await self.fetch(
            "SELECT w.id, w.run, r.run_id, w.event_type, w.conditions, w.persistent, w.status,"
            " w.into_key, w.timeout_at, w.on_timeout, w.joins"
            " FROM waits w JOIN runs r ON r.id = w.run"
            f" WHERE w.status IN ('armed', 'parked'){skip} ORDER BY w.id"
        )
        buffered = await self.fetch(
            "SELECT b.wait, b.seq, b.event_id, e.data FROM wait_buffer b"
            " JOIN waits w ON w.id = b.wait AND w.status = 'armed'"
            " JOIN events e ON e.event_id = b.event_id ORDER BY b.wait, b.seq"
        )
        return wait_records(rows, buffered)

    async def dormant_waits(self) -> list[DormantRow]:
        """Paused runs parked on their only live wait, an event wait with no timeout or join.

        In no particular order: routing orders the waits an event matches itself. Plain
        tuples of `DormantWait`'s fields (see there).
        """
        rows = await self.fetch(
            "SELECT w.id, r.id, r.run_id, r.workflow_id, r.trigger_id, r.version, r.position,"
            f" r.step, {parts('c')}, w.event_type, w.conditions, w.persistent, w.into_key,"
            " w.on_timeout FROM waits w JOIN runs r ON r.id = w.run"
            " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
            f" WHERE w.status = 'parked' AND r.status = 'paused' AND {_DORMANT}"
        )
        return [(*row[:8], state_text(row[8], row[9]), *row[10:]) for row in rows]

    async def unclosed_service_scopes(
        self, workflow_id: str
    ) -> list[tuple[int, str, str, list[str]]]:
        """Ended runs whose run-scoped services were built but whose scope was never closed.

        Each as (row, run id, last state, service ids), oldest first.
        """
        if _nul(workflow_id):
            return []
        rows = await self.fetch(
            f"SELECT r.id, r.run_id, {parts('c')}, t.message FROM timeline t"
            " JOIN runs r ON r.id = t.run"
            " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
            f" WHERE {_UNCLOSED} AND r.workflow_id = %s ORDER BY r.id, t.id",
            [workflow_id],
        )
        found: dict[int, tuple[int, str, str, list[str]]] = {}
        for row, run_id, whole, patch, service_id in rows:
            found.setdefault(row, (row, run_id, state_text(whole, patch), []))[3].append(service_id)
        return list(found.values())

    async def workflows_with_unclosed_service_scopes(self) -> set[str]:
        """Ids of the workflows that have ended runs with run-scoped services never closed."""
        rows = await self.fetch(
            f"SELECT DISTINCT r.workflow_id FROM timeline t JOIN runs r ON r.id = t.run"
            f" WHERE {_UNCLOSED}"
        )
        return {workflow_id for (workflow_id,) in rows}

    async def max_ids(self) -> tuple[int, int]:
        """The highest wait id and buffer sequence number in use."""
        rows = await self.fetch(
            "SELECT (SELECT coalesce(max(id), 0) FROM waits),"
            " (SELECT coalesce(max(seq), 0) FROM wait_buffer)"
        )
        return int(rows[0][0]), int(rows[0][1])

    async def schedule_ticks(self) -> dict[tuple[str, str], int]:
        """Each schedule's last fired tick (or when it was first armed)."""
        rows = await self.fetch("SELECT workflow_id, trigger_id, last_tick FROM schedule_state")
        return {(row[0], row[1]): row[2] for row in rows}

    async def files_seen(self, folder: str, glob: str) -> dict[str, int]:
        """Name -> inode of the files in `folder` that were events of this glob's watch."""
        if _nul(folder, glob):
            return {}
        rows = await self.fetch(
            "SELECT name, inode FROM files_seen WHERE dir = %s AND glob = %s AND inode IS NOT NULL",
            [folder, glob],
        )
        return {row[0]: row[1] for row in rows}

    async def unrouted_events(self, after: int, limit: int = 1000) -> list[EventRecord]:
        """Events written by other processes and not routed yet, oldest first."""
        rows = await self.fetch(f"SELECT {_EVENT_COLUMNS} {_UNROUTED}", [after, _limit(limit)])
        return [event_record(row) for row in rows]

    async def pending_commands(self, after: int, limit: int = 1000) -> list[CommandRecord]:
        """Commands not applied yet, oldest first."""
        rows = await self.fetch(f"SELECT {_COMMAND_COLUMNS} {_PENDING}", [after, _limit(limit)])
        return [command_record(row) for row in rows]

    async def inbox(
        self, after_event: int, after_command: int, limit: int = 1000
    ) -> tuple[list[EventRecord], list[CommandRecord]]:
        """`unrouted_events` and `pending_commands` as of one moment (one statement).

        Two statements would each see the journal as of their own start: a command
        committed between them would be seen without the events committed before it. The
        two kinds of rows share the columns of one UNION by type: id, created_at, then text.
        """
        rows = await self.fetch(
            "(SELECT 0 AS kind, id, created_at, event_id, type, data, source, NULL::text"
            f" {_UNROUTED}) UNION ALL (SELECT 1, id, created_at, command, run_id, workflow_id,"
            f" trigger_id, payload {_PENDING})",
            [after_event, _limit(limit), after_command, _limit(limit)],
        )
        events = sorted((r for r in rows if r[0] == 0), key=lambda r: int(r[1]))
        commands = sorted((r for r in rows if r[0] == 1), key=lambda r: int(r[1]))
        return (
            [event_record((r[1], r[3], r[4], r[5], r[6], r[2])) for r in events],
            [command_record((r[1], r[3], r[4], r[5], r[6], r[7], r[2])) for r in commands],
        )

    async def has_pending(self, after_event: int, after_command: int) -> bool:
        """Whether other processes wrote events or commands past these ids (one query)."""
        rows = await self.fetch(
            "SELECT EXISTS (SELECT 1 FROM events WHERE routed_at IS NULL AND id > %s)"
            " OR EXISTS (SELECT 1 FROM inbox WHERE done_at IS NULL AND id > %s)",
            [after_event, after_command],
        )
        return bool(rows[0][0])

    async def workflows(self) -> list[WorkflowRecord]:
        """Workflows registered now, by id, with their switches and next schedule ticks."""
        rows = await self.fetch(
            "SELECT workflow_id, version, file, triggers, mode, loaded_at FROM workflows"
            ' WHERE present = 1 ORDER BY workflow_id COLLATE "C"'
        )
        ticks = await self.fetch(
            "SELECT workflow_id, trigger_id, next_tick FROM schedule_state"
            " WHERE next_tick IS NOT NULL"
        )
        return workflow_records(rows, await self.disabled(), ticks)

    async def switches(self) -> list[SwitchRecord]:
        """Every disable or enable the daemon applied (the latest per key), by key."""
        rows = await self.fetch(
            "SELECT workflow_id, trigger_id, enabled, changed_at FROM switches"
            ' ORDER BY workflow_id COLLATE "C", trigger_id COLLATE "C"'
        )
        return switch_records(rows)

    async def disabled(self) -> dict[str, dict[str, int]]:
        """Workflow id -> key ('' for the whole workflow, else a trigger id) -> disabled since."""
        return disabled_of(await self.switches())

    async def pending_switches(self) -> list[CommandRecord]:
        """Disable and enable commands not applied yet, oldest first."""
        rows = await self.fetch(
            "SELECT id, command, workflow_id, trigger_id, created_at FROM inbox"
            " WHERE done_at IS NULL AND command IN ('disable', 'enable') ORDER BY id"
        )
        return switch_commands(rows)

    async def load_errors(self) -> list[LoadErrorRecord]:
        """Files that failed to load and have not loaded since, by file."""
        rows = await self.fetch(
            "SELECT file, line, message, at FROM load_errors WHERE message IS NOT NULL"
            ' ORDER BY file COLLATE "C"'
        )
        return [LoadErrorRecord(row[0], row[1], row[2], row[3]) for row in rows]

    async def daemon(self) -> DaemonRecord | None:
        """The newest live daemon (not fenced, not stopped, its heartbeat fresh), or None."""
        rows = await self.fetch(
            "SELECT pid, host, started_at, ready, degraded FROM daemons"
            " WHERE fenced_at IS NULL AND stopped_at IS NULL AND heartbeat_at > %s"
            " ORDER BY id DESC LIMIT 1",
            [Clock().now_us() - STALE_AFTER_US],
        )
        if not rows:
            return None
        pid, host, started_at, ready, degraded = rows[0]
        return DaemonRecord(pid, host, started_at, bool(ready), degraded)

    async def command_outcome(self, run_id: str) -> CommandOutcome | None:
        """The latest command about `run_id` (an invoke names its run), or None."""
        if _nul(run_id):
            return None
        rows = await self.fetch(
            "SELECT id, outcome FROM inbox WHERE run_id = %s ORDER BY id DESC LIMIT 1", [run_id]
        )
        return CommandOutcome(rows[0][0], rows[0][1]) if rows else None

    async def keyed(self, kind: str, key: str) -> str | None:
        """What the idempotency `key` of `kind` (``emit``, ``invoke``) made first, or None."""
        if _nul(kind, key):
            return None
        rows = await self.fetch(
            "SELECT target FROM idempotency_keys WHERE kind = %s AND key = %s", [kind, key]
        )
        return str(rows[0][0]) if rows else None

    async def children(self, run_id: str) -> list[str]:
        """The ids of the runs a run's steps started (`ctx.start`), in the order started."""
        if _nul(run_id):
            return []
        rows = await self.fetch(
            "SELECT child FROM children WHERE parent = %s ORDER BY created_at, n", [run_id]
        )
        return [row[0] for row in rows]

    async def outcomes(self, run_ids: Sequence[str]) -> dict[str, RunOutcome]:
        """Status, last state and error of each of `run_ids` the journal has (a join's)."""
        wanted = [run_id for run_id in dict.fromkeys(run_ids) if not _nul(run_id)]
        if not wanted:
            return {}
        rows = await self.fetch(
            f"SELECT r.run_id, r.status, r.error, r.error_code, {parts('c')} FROM runs r"
            " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
            " WHERE r.run_id = ANY(%s)",
            [wanted],
        )
        return {row[0]: outcome_of(row, state_text(row[4], row[5])) for row in rows}

    async def pending_invokes(self) -> set[str]:
        """The run ids of invoke commands not applied yet (runs that will exist)."""
        rows = await self.fetch(
            "SELECT run_id FROM inbox WHERE done_at IS NULL AND command = 'invoke'"
            " AND run_id IS NOT NULL"
        )
        return {row[0] for row in rows}

    async def run_status(self, run_id: str) -> tuple[int, RunStatus] | None:
        """The run's row id and status, or None if unknown."""
        if _nul(run_id):
            return None
        rows = await self.fetch("SELECT id, status FROM runs WHERE run_id = %s", [run_id])
        return (rows[0][0], RunStatus(rows[0][1])) if rows else None


# Service rows of an ended run `r` (timeline row `t`) with no `services.closed` after them.
# `kind IN (...)` repeats the partial index's condition, so the scan reads service rows only.
_UNCLOSED = (
    f"t.kind IN {_SERVICE_KINDS} AND t.kind = 'service.opened' AND r.status IN {_FINAL}"
    " AND NOT EXISTS (SELECT 1 FROM timeline x WHERE x.run = t.run"
    f" AND x.kind IN {_SERVICE_KINDS} AND x.kind = 'services.closed' AND x.id > t.id)"
)


def _read_failed(location: str, exc: BaseException) -> JournalError:
    reason = " ".join(str(exc).split())
    return JournalError(f"journal {location}: read failed: {reason}")


def _nul(*values: str | None) -> bool:
    """Whether any of `values` holds a NUL, which no text of a PostgreSQL journal holds."""
    return any(value is not None and "\x00" in value for value in values)


def _limit(limit: int) -> int | None:
    """A LIMIT's parameter: a negative one means all (as on SQLite), NULL on PostgreSQL."""
    return None if limit < 0 else limit


def _run_info(row: Row) -> RunInfo:
    """`run_info` of a row of `_RUN_COLUMNS`, its state put together."""
    named = dict(zip(row.keys(), row, strict=True))
    if row["last_position"] is not None:  # a run with no checkpoint has no state
        named["state"] = state_text(row["state_whole"], row["state_patch"])
    else:
        named["state"] = None
    return run_info(named)


def _stored(row: Row) -> dict[str, Any]:
    """`stored_fields` of a row of `_STORED_RUN`, its state put together."""
    return stored_fields((*row[:8], state_text(row[8], row[9]), *row[10:]))

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

from ...errors import JournalCorrupt, JournalError
from ...records import RunInfo
from ..decoding import (
    command_record,
    event_record,
    outcome_of,
    run_info,
    stored_fields,
)
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
from . import prefixes
from .connection import SCHEMA, connect, denied, describe, load_psycopg
from .daemon_rows import FRESH_STANDBY, LIVE_DAEMONS_SQL, newest_live, standby_alive
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


# Service rows of an ended run `r` (timeline row `t`) with no `services.closed` after them.
# `kind IN (...)` repeats the partial index's condition, so the scan reads service rows only.
_UNCLOSED = (
    f"t.kind IN {_SERVICE_KINDS} AND t.kind = 'service.opened' AND r.status IN {_FINAL}"
    " AND NOT EXISTS (SELECT 1 FROM timeline x WHERE x.run = t.run"
    f" AND x.kind IN {_SERVICE_KINDS} AND x.kind = 'services.closed' AND x.id > t.id)"
)

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

# The SQLite reader's statements in PostgreSQL's dialect: `%s` placeholders, a NULL limit
# for all, byte order (COLLATE "C") where SQLite sorts text, states as their two parts.
SQL = ReaderSQL(
    get_run=f"SELECT {_RUN_COLUMNS} FROM runs r{_LAST_STATE} WHERE r.run_id = %s",
    list_runs=(
        f"SELECT {_RUN_COLUMNS} FROM (SELECT * FROM runs r WHERE {{where}}"
        f" ORDER BY r.id DESC LIMIT %s) r{_LAST_STATE} ORDER BY r.id DESC"
    ),
    list_all="TRUE",
    list_filters=("r.status = %s", "r.workflow_id = %s", "r.created_at >= %s"),
    checkpoints=(
        f"SELECT c.position, c.step, c.started_at, c.ended_at, {parts('c')}, c.kind"
        " FROM checkpoints c"
        " JOIN runs r ON r.id = c.run WHERE r.run_id = %s ORDER BY c.position"
    ),
    timeline_run=(
        "SELECT id, status, step, step_started_at, position, error, error_code,"
        " created_at, updated_at FROM runs WHERE run_id = %s"
    ),
    timeline_checkpoints=(
        "SELECT position, step, started_at, ended_at FROM checkpoints"
        " WHERE run = %s AND position > 0 AND kind = 'step' ORDER BY position"
    ),
    timeline_entries=(
        "SELECT position, at, source, kind, step, message, data FROM timeline"
        " WHERE run = %s ORDER BY id"
    ),
    log_entries=(
        "SELECT * FROM (SELECT t.id, r.run_id, r.workflow_id, t.position, t.at, t.source,"
        " t.kind, t.step, t.message, t.data FROM timeline t LEFT JOIN runs r ON r.id = t.run"
        " WHERE {where} ORDER BY t.id DESC LIMIT %s) last ORDER BY id"
    ),
    log_after="t.id > %s",
    log_of_run=" AND t.run = (SELECT id FROM runs WHERE run_id = %s)",
    unfinished_runs=_UNFINISHED.format(skip=""),
    unfinished_awake=_UNFINISHED.format(
        skip=" AND NOT (r.status = 'paused' AND EXISTS (SELECT 1 FROM waits w"
        f" WHERE w.run = r.id AND {_DORMANT}))"
    ),
    stored_run=f"{_STORED_RUN} WHERE r.run_id = %s",
    stored_checkpoints=(
        "SELECT c.position, CASE WHEN c.kind = 'step' THEN c.step END,"
        f" {parts('c')}"
        " FROM checkpoints c JOIN runs r ON r.id = c.run WHERE r.run_id = %s"
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
        f"SELECT r.id, r.run_id, {parts('c')}, t.message FROM timeline t"
        " JOIN runs r ON r.id = t.run"
        " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
        f" WHERE {_UNCLOSED} AND r.workflow_id = %s ORDER BY r.id, t.id"
    ),
    unclosed_workflows=(
        f"SELECT DISTINCT r.workflow_id FROM timeline t JOIN runs r ON r.id = t.run"
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
        "SELECT name, inode FROM files_seen WHERE dir = %s AND glob = %s AND inode IS NOT NULL"
    ),
    unrouted_events=f"SELECT {_EVENT_COLUMNS} {_UNROUTED}",
    pending_commands=f"SELECT {_COMMAND_COLUMNS} {_PENDING}",
    has_pending=(
        "SELECT EXISTS (SELECT 1 FROM events WHERE routed_at IS NULL AND id > %s)"
        " OR EXISTS (SELECT 1 FROM inbox WHERE done_at IS NULL AND id > %s)"
    ),
    workflows=(
        "SELECT workflow_id, version, file, triggers, mode, loaded_at FROM workflows"
        ' WHERE present = 1 ORDER BY workflow_id COLLATE "C"'
    ),
    switches=(
        "SELECT workflow_id, trigger_id, enabled, changed_at FROM switches"
        ' ORDER BY workflow_id COLLATE "C", trigger_id COLLATE "C"'
    ),
    pending_switches=(
        "SELECT id, command, workflow_id, trigger_id, created_at FROM inbox"
        " WHERE done_at IS NULL AND command IN ('disable', 'enable') ORDER BY id"
    ),
    load_errors=(
        "SELECT file, line, message, at FROM load_errors WHERE message IS NOT NULL"
        ' ORDER BY file COLLATE "C"'
    ),
    command_outcome="SELECT id, outcome FROM inbox WHERE run_id = %s ORDER BY id DESC LIMIT 1",
    keyed="SELECT target FROM idempotency_keys WHERE kind = %s AND key = %s",
    children="SELECT child FROM children WHERE parent = %s ORDER BY created_at, n",
    pending_invokes=(
        "SELECT run_id FROM inbox WHERE done_at IS NULL AND command = 'invoke'"
        " AND run_id IS NOT NULL"
    ),
    run_status="SELECT id, status FROM runs WHERE run_id = %s",
)


class PostgresReader(SharedReads):
    """Queries over one autocommit connection, and the journal's change feed.

    Most queries are `SharedReads`'s, with `SQL`; what differs is here: keys holding a NUL
    name nothing, a negative limit is NULL, a state is read as its two parts.
    """

    _sql = SQL

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
        # Session settings (`set_config`) made on the connection, made again on a new one.
        self._settings: dict[str, str] = {}
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

    _fetch = fetch

    def _names_nothing(self, *keys: str | None) -> bool:
        return _nul(*keys)

    def limit_param(self, limit: int) -> int | None:
        """NULL for a negative limit: all rows (as SQLite's -1)."""
        return _all_if_negative(limit)

    def state_at(self, row: Sequence[Any], at: int) -> str:
        """The state of the two columns of `parts` at `at`, its patch applied."""
        return state_text(row[at], row[at + 1])

    def _run_info(self, row: Any) -> RunInfo:
        return _run_info(row)

    def _stored(self, row: Sequence[Any]) -> dict[str, Any]:
        return _stored(row)

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
            try:
                for name, value in self._settings.items():
                    await conn.execute(_SET_CONFIG, [name, value])
            except load_psycopg().Error as exc:
                await conn.close()
                raise _read_failed(self.location, exc) from exc
            self._conn = conn

    async def set_lock_timeout(self, milliseconds: int) -> None:
        """Wait at most `milliseconds` for a lock (``lock_timeout``), on every connection.

        The setting belongs to the connection: a connection made again after one was lost
        gets it too.
        """
        value = f"{max(0, int(milliseconds))}ms"
        self._settings["lock_timeout"] = value
        await self.fetch(_SET_CONFIG, ["lock_timeout", value])

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

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        sql = prefixes.sql(prefix)
        if sql is None:
            return RunMatches((), 0)
        return prefixes.matches(await self.fetch(sql, prefixes.params(prefix, limit)))

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
            [after_event, _all_if_negative(limit), after_command, _all_if_negative(limit)],
        )
        events = sorted((r for r in rows if r[0] == 0), key=lambda r: int(r[1]))
        commands = sorted((r for r in rows if r[0] == 1), key=lambda r: int(r[1]))
        return (
            [event_record((r[1], r[3], r[4], r[5], r[6], r[2])) for r in events],
            [command_record((r[1], r[3], r[4], r[5], r[6], r[7], r[2])) for r in commands],
        )

    async def daemon(self) -> DaemonRecord | None:
        """The newest live daemon (`daemon_rows`: as its writer judges it), or None."""
        return newest_live(await self.fetch(LIVE_DAEMONS_SQL))

    async def standbys(self) -> list[StandbyRecord]:
        """The daemons standing by whose row was renewed within the heartbeat's timeout.

        One of this host whose process is gone is left out at once, as `daemon` does.
        """
        rows = await self.fetch(
            "SELECT pid, host, started_at, (SELECT count(*) FROM step_jobs j"
            " WHERE j.claimed_by = s.token AND j.reply IS NULL AND j.cancelled = 0)"
            " + (SELECT count(*) FROM run_tasks t JOIN standbys x ON x.token = t.claimed_by"
            " WHERE x.executes_for = s.token AND t.reply IS NULL AND t.cancelled = 0)"
            f" FROM standbys s WHERE s.executes_for IS NULL AND s.{FRESH_STANDBY}"
            " ORDER BY s.started_at, s.token"
        )
        return [
            StandbyRecord(int(pid), str(host), int(started), int(running))
            for pid, host, started, running in rows
            if standby_alive(pid, host)
        ]

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


_SET_CONFIG = "SELECT set_config(%s, %s, false)"


def _read_failed(location: str, exc: BaseException) -> JournalError:
    refused = denied(location, "read", exc)
    if refused is not None:
        return refused
    reason = " ".join(str(exc).split())
    return JournalError(f"journal {location}: read failed: {reason}")


def _nul(*values: str | None) -> bool:
    """Whether any of `values` holds a NUL, which no text of a PostgreSQL journal holds."""
    return any(value is not None and "\x00" in value for value in values)


def _all_if_negative(limit: int) -> int | None:
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


def _stored(row: Sequence[Any]) -> dict[str, Any]:
    """`stored_fields` of a row of `_STORED_RUN`, its state put together."""
    return stored_fields((*row[:8], state_text(row[8], row[9]), *row[10:]))

"""What the dashboard reads, on PostgreSQL: the statements of ``sqlite/views.py``, ported.

Every query is the SQLite one with PostgreSQL's spelling (``%s``, ``string_agg``,
``ARRAY(...)``, ``= ANY``), over a `PostgresReader`'s autocommit connection; the rows are
decoded by the same Python as SQLite's (``journal/view_rows.py``, ``journal/timeline.py``),
so both backends show the same records. Differences that are not spelling:

- Orders that SQLite takes in BINARY collation (workflow ids, statuses, event types) are
  ``COLLATE "C"`` here: the same order whatever the database's default collation. On the
  run list, where an index must serve the order, only where the runs' columns do not sort
  in byte order already (`collate`).
- JSON columns are text holding the exact bytes SQLite keeps; where SQLite wraps them in
  ``json_valid``/``json_quote``, this module reads the text and `loads_or_text` decodes
  it (damaged text comes back as itself either way).
- A checkpoint's state is read as SQLite's ``state_of`` reads it (``sqlite/deltas.py``):
  a whole state, a spilled snapshot, or a merge patch against its base snapshot; the patch
  is applied here, in Python (`merge`: RFC 7396, as ``json_patch``: kept keys stay in
  place, new ones come last).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

from ...clock import to_datetime
from ...records import STATUSES, Checkpoint, TimelineEntry
from ..command_rules import pipeline_steps
from ..decoding import disabled_of, forked_from
from ..records import DaemonRecord, LogEntry, RunMatches
from ..timeline import assemble_timeline, loads_or_text
from ..view_records import (
    CHILDREN_SHOWN,
    FIGURES_CAP,
    FIGURES_RECENT,
    EventView,
    LoadErrorView,
    RouteView,
    RunDetail,
    RunFilter,
    RunPage,
    RunRow,
    WaitView,
    WorkflowFigures,
    WorkflowView,
)
from ..view_rows import (
    event_view,
    routes_by_event,
    run_row,
    wait_view,
    when,
    with_routes,
    workflow_figures,
    workflow_view,
)
from . import run_search
from .reader import PostgresReader, Row
from .states import parts, state_text

if TYPE_CHECKING:
    from ..protocol import JournalQueries

_ORDER_BY: Final = {
    "newest": "r.id DESC",
    "oldest": "r.id ASC",
    "workflow": "r.workflow_id{collate}, r.id DESC",
    "status": "r.status{collate}, r.id DESC",
}
BYTE_ORDER: Final = ' COLLATE "C"'  # SQLite's BINARY: text in byte (code point) order
# Whether the runs' text columns sort in byte order already: then a sort or a range needs no
# COLLATE "C", and their indexes serve it (an index serves its column's collation only).
# Libc's C and C.UTF-8 sort by code point; ICU collations and languages' do not.
_BYTE_ORDER_SQL = """
    SELECT CASE WHEN co.collname IN ('C', 'POSIX', 'ucs_basic') THEN true
        WHEN co.collname = 'default' THEN coalesce(to_jsonb(d) ->> 'datlocprovider', 'c') = 'c'
            AND d.datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8')
        ELSE false END
    FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation, pg_database d
    WHERE a.attrelid = 'runs'::regclass AND a.attname = 'run_id'
        AND d.datname = current_database()
"""

TIMELINE_LIMIT: Final = 2_000  # rows of a run's timeline shown (the latest)
CHECKPOINT_LIMIT: Final = 200  # checkpoints of a run shown (the latest)
# A run's step as shown: the step a paused run waits in (as the SQLite reader's SHOWN_STEP).
_SHOWN_STEP = (
    "CASE WHEN r.status IN ('paused', 'failed', 'aborted') THEN coalesce(r.paused_in, r.step)"
    " ELSE r.step END"
)
_RUN_COLUMNS = f"""
    r.run_id, r.workflow_id, r.trigger_id, r.status, {_SHOWN_STEP} AS step, r.error,
    r.error_code, r.version, r.created_at, r.updated_at
"""
# The pipeline a run's detail lists: the loaded version's, else the run's own.
_PIPELINE_SQL = (
    "SELECT v.definition FROM workflow_versions v WHERE v.workflow_id = %s AND v.version ="
    " coalesce((SELECT w.version FROM workflows w WHERE w.workflow_id = %s AND w.present = 1"
    " AND w.version <> ''), %s)"
)
_STATUS_LIST = ", ".join(f"'{status}'" for status in STATUSES)
# Per loaded workflow, ranges of runs_by_workflow_status only, as on SQLite; the durations
# of its latest completed runs as an array, newest first (ties: the newest row first).
_FIGURES_SQL = f"""
    SELECT w.workflow_id,
        (SELECT count(*) FROM (SELECT 1 FROM runs r WHERE r.workflow_id = w.workflow_id
            AND r.status IN ({_STATUS_LIST}) AND r.created_at >= %s LIMIT %s) x),
        (SELECT count(*) FROM (SELECT 1 FROM runs r WHERE r.workflow_id = w.workflow_id
            AND r.status = 'failed' AND r.created_at >= %s LIMIT %s) x),
        ARRAY(SELECT r.updated_at - r.created_at FROM runs r
            WHERE r.workflow_id = w.workflow_id AND r.status = 'completed'
            ORDER BY r.created_at DESC, r.id DESC LIMIT %s),
        (SELECT min(s.next_tick) FROM schedule_state s WHERE s.workflow_id = w.workflow_id)
    FROM workflows w WHERE w.present = 1 ORDER BY w.workflow_id COLLATE "C"
"""
# Snapshot ids: a run's row times this, plus the position (``sqlite/deltas.py``).
_SPAN: Final = 1 << 24


class PostgresViews:
    """The dashboard's queries over one PostgreSQL reader (`DashboardViews`)."""

    def __init__(self, reader: PostgresReader) -> None:
        self.reader = reader
        self._collate: str | None = None  # "" or BYTE_ORDER, once read (`collate`)
        # The reader's own queries (pgreader's part: `JournalQueries`), which some views are.
        self.queries = cast("JournalQueries", reader)

    @classmethod
    async def open(cls, url: str) -> PostgresViews:
        """Views on the journal at `url`, on a reader of their own."""
        return cls(await PostgresReader.open(url))

    async def close(self) -> None:
        """Close the reader's connection."""
        await self.reader.close()

    async def collate(self) -> str:
        """What makes the runs' text sort in byte order: nothing if they do already."""
        if self._collate is None:
            rows = await self.reader.fetch(_BYTE_ORDER_SQL)
            self._collate = "" if rows and rows[0][0] else BYTE_ORDER
        return self._collate

    async def set_busy_timeout(self, milliseconds: int) -> None:
        """Wait at most this long for a lock, so a stuck writer shows as an error soon.

        PostgreSQL's reads never wait for a writer's row locks (MVCC): only a lock a
        migration's DDL holds makes a read wait. ``lock_timeout`` bounds that wait, as
        SQLite's ``busy_timeout`` does; ``statement_timeout`` is left alone, so a slow but
        working query (a search in a million runs) is never cut short.
        """
        await self.reader.fetch(
            "SELECT set_config('lock_timeout', %s, false)", [f"{max(0, int(milliseconds))}ms"]
        )

    async def data_version(self) -> int:
        """Changes whenever another connection commits (the reader's change feed)."""
        return await self.queries.data_version()

    async def status_counts(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs are in each status (of one workflow, or all)."""
        return await run_search.status_counts(self.reader, workflow)

    async def workflow_ids(self) -> list[str]:
        """Workflows that have runs or are registered now, by id."""
        # A skip scan of the runs_by_workflow index (one seek per workflow), as on SQLite.
        rows = await self.reader.fetch(
            "WITH RECURSIVE seen(id) AS (SELECT min(workflow_id) FROM runs UNION ALL"
            " SELECT (SELECT min(workflow_id) FROM runs WHERE workflow_id > seen.id)"
            " FROM seen WHERE seen.id IS NOT NULL)"
            " SELECT id FROM (SELECT workflow_id AS id FROM workflows WHERE present = 1"
            ' UNION SELECT id FROM seen WHERE id IS NOT NULL) u ORDER BY id COLLATE "C"'
        )
        return [str(row[0]) for row in rows]

    async def runs_page(self, wanted: RunFilter, *, offset: int, limit: int) -> RunPage:
        """One page of the runs `wanted` selects, in its order, and how many there are."""
        where, params = _filter_sql(wanted)
        collate = await self.collate()
        order = _ORDER_BY.get(wanted.sort, _ORDER_BY["newest"]).format(collate=collate)
        offset = max(0, offset)
        if wanted.search.strip():  # by index: `run_search`
            rows, total = await run_search.search(
                self.reader,
                wanted,
                select=_RUN_COLUMNS,
                where=where,
                params=params,
                order=order,
                offset=offset,
                limit=limit,
                collate=collate,
            )
            return RunPage([run_row(row) for row in rows], total, offset)
        rows = await self.reader.fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {where} ORDER BY {order} LIMIT %s OFFSET %s",
            [*params, None if limit < 0 else limit, offset],
        )
        total = await run_search.total(self.reader, wanted.status, wanted.workflow)
        return RunPage([run_row(row) for row in rows], total, offset)

    async def run_fingerprint(self, run_id: str) -> tuple[Any, ...] | None:
        """A cheap value that changes whenever what `run_detail` returns may have changed."""
        rows = await self.reader.fetch(
            "SELECT r.status, r.updated_at, r.position, r.step, r.error, r.version,"
            " (SELECT max(t.id) FROM timeline t WHERE t.run = r.id),"
            " (SELECT string_agg(w.id || w.status, ',' ORDER BY w.id) FROM waits w"
            " WHERE w.run = r.id),"
            # Events reach the detail only through live waits: without one, new events
            # elsewhere do not make the detail read again.
            " CASE WHEN EXISTS (SELECT 1 FROM waits w WHERE w.run = r.id"
            " AND w.status IN ('armed', 'parked')) THEN (SELECT max(e.id) FROM events e) END,"
            # A fan-out's progress: its children change without touching its own rows.
            " (SELECT count(k.run_id) || ':' || max(k.updated_at) FROM children c"
            " LEFT JOIN runs k ON k.run_id = c.child WHERE c.parent = r.run_id)"
            " FROM runs r WHERE r.run_id = %s",
            [run_id],
        )
        return tuple(rows[0]) if rows else None

    async def run_detail(self, run_id: str, *, recent_events: int = 5) -> RunDetail | None:
        """One run: its timeline, checkpoints and live waits; None if there is no such run."""
        runs = await self.reader.fetch(
            f"SELECT r.id, r.position, r.step_started_at, r.forked_from_run,"
            f" r.forked_from_step, {_RUN_COLUMNS} FROM runs r WHERE r.run_id = %s",
            [run_id],
        )
        if not runs:
            return None
        row = runs[0]
        pipeline = await self.reader.fetch(
            _PIPELINE_SQL, [row["workflow_id"], row["workflow_id"], row["version"]]
        )
        steps = pipeline_steps(pipeline[0][0] if pipeline else None, row["trigger_id"])
        return RunDetail(
            run_row(row),
            await self._timeline(row),
            await self._checkpoints(row["id"]),
            await self._waits(row["id"], recent_events),
            forked_from=forked_from(row["forked_from_run"], row["forked_from_step"]),
            steps=steps or [],
            parent=await self._parent(run_id),
            children=await self._children(run_id),
            children_by_status=await self._children_by_status(run_id),
        )

    async def _parent(self, run_id: str) -> str | None:
        rows = await self.reader.fetch("SELECT parent FROM children WHERE child = %s", [run_id])
        return str(rows[0][0]) if rows else None

    async def _children(self, run_id: str) -> list[RunRow]:
        rows = await self.reader.fetch(
            f"SELECT {_RUN_COLUMNS} FROM children c JOIN runs r ON r.run_id = c.child"
            " WHERE c.parent = %s ORDER BY c.created_at, c.n LIMIT %s",
            [run_id, CHILDREN_SHOWN],
        )
        return [run_row(row) for row in rows]

    async def _children_by_status(self, run_id: str) -> dict[str, int]:
        rows = await self.reader.fetch(
            "SELECT coalesce(r.status, 'not started'), count(*) FROM children c"
            " LEFT JOIN runs r ON r.run_id = c.child WHERE c.parent = %s GROUP BY 1",
            [run_id],
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def recent_events(self, *, limit: int = 200, type_contains: str = "") -> list[EventView]:
        """The latest events, newest first, each with what it did to runs."""
        where, params = "TRUE", []
        if "\x00" in type_contains:  # no text holds a NUL on PostgreSQL: no event matches
            return []
        if type_contains:
            where, params = run_search.contains("e.type"), [run_search.like(type_contains)]
        rows = await self.reader.fetch(
            "SELECT e.event_id, e.type, e.data, e.source, e.created_at, e.routed_at"
            f" FROM events e WHERE {where} ORDER BY e.id DESC LIMIT %s",
            [*params, None if limit < 0 else limit],
        )
        events = [event_view(row) for row in rows]
        return with_routes(events, await self._routes([event.event_id for event in events]))

    async def workflows(self) -> list[WorkflowView]:
        """Workflows registered now, by id, with what is disabled of each."""
        rows = await self.reader.fetch(
            "SELECT workflow_id, version, file, triggers, mode, loaded_at FROM workflows"
            ' WHERE present = 1 ORDER BY workflow_id COLLATE "C"'
        )
        off = disabled_of(await self.queries.switches())
        return [workflow_view(row, off) for row in rows]

    async def workflow_figures(self, since: datetime) -> list[WorkflowFigures]:
        """Per loaded workflow: runs and failures since `since`, recent durations, next tick."""
        start = int(since.timestamp() * 1_000_000)
        rows = await self.reader.fetch(
            _FIGURES_SQL, [start, FIGURES_CAP + 1, start, FIGURES_CAP + 1, FIGURES_RECENT]
        )
        return [workflow_figures(row) for row in rows]

    async def waited_event_types(self) -> list[str]:
        """The event types armed or parked waits of runs wait for, sorted."""
        rows = await self.reader.fetch(
            "SELECT t FROM (SELECT DISTINCT event_type AS t FROM waits"
            " WHERE status IN ('armed', 'parked') AND event_type IS NOT NULL) x"
            ' ORDER BY t COLLATE "C"'
        )
        return [str(row[0]) for row in rows]

    async def log_entries(self, *, after: int = 0, limit: int = 100) -> list[LogEntry]:
        """Journaled timeline rows of all runs above row id `after`, the last `limit`."""
        return await self.queries.log_entries(after=after, limit=limit)

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        return await self.queries.match_runs(prefix, limit=limit)

    async def load_errors(self) -> list[LoadErrorView]:
        """Files that failed to load, by file."""
        return [
            LoadErrorView(error.file, error.line, error.message, when(error.at))
            for error in await self.queries.load_errors()
        ]

    async def daemon(self) -> DaemonRecord | None:
        """The live process holding the journal, or None."""
        return await self.queries.daemon()

    async def _timeline(self, run: Row) -> list[TimelineEntry]:
        checkpoints = await self.reader.fetch(
            "SELECT * FROM (SELECT position, step, started_at, ended_at FROM checkpoints"
            " WHERE run = %s AND position > 0 AND kind = 'step' ORDER BY position DESC"
            " LIMIT %s) x ORDER BY position",
            [run["id"], CHECKPOINT_LIMIT],
        )
        entries = await self.reader.fetch(
            "SELECT * FROM (SELECT id, position, at, source, kind, step, message, data"
            " FROM timeline WHERE run = %s ORDER BY id DESC LIMIT %s) x ORDER BY id",
            [run["id"], TIMELINE_LIMIT],
        )
        return assemble_timeline(run, checkpoints, entries)

    async def _checkpoints(self, row: int) -> list[Checkpoint]:
        rows = await self.reader.fetch(
            "SELECT * FROM (SELECT c.position, c.step, c.started_at, c.ended_at, c.kind,"
            f" {parts('c')} FROM checkpoints c WHERE c.run = %s"
            " ORDER BY c.position DESC LIMIT %s) x ORDER BY position",
            [row, CHECKPOINT_LIMIT],
        )
        return [
            Checkpoint(
                position=int(r["position"]),
                step=r["step"],
                started_at=to_datetime(int(r["started_at"])),
                ended_at=to_datetime(int(r["ended_at"])),
                state=loads_or_text(state_text(r["state_whole"], r["state_patch"])),
                kind=str(r["kind"]),
            )
            for r in rows
        ]

    async def _waits(self, row: int, recent_events: int) -> list[WaitView]:
        rows = await self.reader.fetch(
            "SELECT w.id, w.event_type, w.conditions, w.status, w.into_key, w.timeout_at,"
            " w.on_timeout, w.created_at,"
            " (SELECT count(*) FROM wait_buffer b WHERE b.wait = w.id)"
            " FROM waits w WHERE w.run = %s AND w.status IN ('armed', 'parked')"
            " ORDER BY w.status = 'parked' DESC, w.id DESC",
            [row],
        )
        return [wait_view(r, await self._events_since(r[1], r[7], recent_events)) for r in rows]

    async def _events_since(
        self, event_type: str | None, since: Any, limit: int
    ) -> list[EventView]:
        if event_type is None or not isinstance(since, int):
            return []
        rows = await self.reader.fetch(
            "SELECT event_id, type, data, source, created_at, routed_at FROM events"
            " WHERE type = %s AND created_at >= %s ORDER BY id DESC LIMIT %s",
            [event_type, since, None if limit < 0 else limit],
        )
        return [event_view(row) for row in rows]

    async def _routes(self, event_ids: list[str]) -> dict[str, list[RouteView]]:
        if not event_ids:
            return {}
        rows = await self.reader.fetch(
            "SELECT er.event_id, r.run_id, r.workflow_id, er.action FROM event_routes er"
            " JOIN runs r ON r.id = er.run WHERE er.event_id = ANY(%s) ORDER BY r.id",
            [event_ids],
        )
        return routes_by_event(rows)


def _filter_sql(wanted: RunFilter) -> tuple[str, list[Any]]:
    """A WHERE clause (fixed fragments only) and its parameters."""
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if wanted.status is not None:
        clauses.append("r.status = %s")
        params.append(wanted.status)
    if wanted.workflow is not None:
        clauses.append("r.workflow_id = %s")
        params.append(wanted.workflow)
    return " AND ".join(clauses), params


# Checkpoint states as SQLite's `state_of` reads them, the merge patch applied in Python.
# The same as the PostgreSQL reader's `postgres/states.py` (pgreader's branch): once merged,
# these four go and the views import `parts` and `state_text` from there.

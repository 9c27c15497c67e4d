"""What the dashboard reads: paged run lists, one run in detail, events and their routes.

Every statement the dashboard runs lives here, over a `JournalReader`'s read-only
connection. The dashboard re-queries whenever the journal changes, so each query is paged
or bounded and served by an index (migration 5) to stay fast with 100,000 runs. Rows
written by other versions, or damaged, are decoded defensively: a JSON column that does
not parse comes back as its text, a timestamp that is not a number as ``None``, so one bad
row never hides the rest.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, Final

from ...clock import to_datetime
from ...records import STATUSES, Checkpoint, TimelineEntry
from ..command_rules import pipeline_steps
from ..decoding import forked_from
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
from .commands import PIPELINE_SQL
from .deltas import state_of
from .reader import SHOWN_STEP, JournalReader

_ORDER_BY: Final = {
    "newest": "r.id DESC",
    "oldest": "r.id ASC",
    "workflow": "r.workflow_id, r.id DESC",
    "status": "r.status, r.id DESC",
}

TIMELINE_LIMIT: Final = 2_000  # rows of a run's timeline shown (the latest)
CHECKPOINT_LIMIT: Final = 200  # checkpoints of a run shown (the latest)
_RUN_COLUMNS = f"""
    r.run_id, r.workflow_id, r.trigger_id, r.status, {SHOWN_STEP} AS step, r.error,
    r.error_code, r.version, r.created_at, r.updated_at
"""
# Per loaded workflow, ranges of runs_by_workflow_status (migration 16) only: its runs since
# a time (every status, one range each), its failures since then, its latest completed runs
# (their durations as a JSON list); each count stops at FIGURES_CAP + 1 rows.
_STATUS_LIST = ", ".join(f"'{status}'" for status in STATUSES)
_FIGURES_SQL = f"""
    SELECT w.workflow_id,
        (SELECT count(*) FROM (SELECT 1 FROM runs r WHERE r.workflow_id = w.workflow_id
            AND r.status IN ({_STATUS_LIST}) AND r.created_at >= ?1 LIMIT ?2)),
        (SELECT count(*) FROM (SELECT 1 FROM runs r WHERE r.workflow_id = w.workflow_id
            AND r.status = 'failed' AND r.created_at >= ?1 LIMIT ?2)),
        (SELECT json_group_array(d) FROM (SELECT r.updated_at - r.created_at AS d FROM runs r
            WHERE r.workflow_id = w.workflow_id AND r.status = 'completed'
            ORDER BY r.created_at DESC LIMIT ?3)),
        (SELECT min(s.next_tick) FROM schedule_state s WHERE s.workflow_id = w.workflow_id)
    FROM workflows w WHERE w.present = 1 ORDER BY w.workflow_id
"""
# A JSON column as valid JSON: damaged text comes back as a JSON string of itself.
_JSON = "CASE WHEN json_valid({0}) THEN {0} ELSE json_quote({0}) END"


class DashboardQueries:
    """The dashboard's queries over one reader."""

    def __init__(self, reader: JournalReader) -> None:
        self.reader = reader

    async def close(self) -> None:
        """Close the reader's connection."""
        await self.reader.close()

    async def set_busy_timeout(self, milliseconds: int) -> None:
        """Wait at most this long for a lock, so a stuck writer shows as an error soon."""
        await self.reader.fetch(f"PRAGMA busy_timeout = {int(milliseconds)}")

    async def data_version(self) -> int:
        """Changes whenever another connection commits."""
        return await self.reader.data_version()

    async def status_counts(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs are in each status (of one workflow, or all)."""
        return await run_search.status_counts(self.reader, workflow)

    async def workflow_ids(self) -> list[str]:
        """Workflows that have runs or are registered now, by id."""
        # A skip scan: one seek of the runs_by_workflow index per workflow, not one step per
        # run (SELECT DISTINCT walks all 100,000 entries of the index).
        rows = await self.reader.fetch(
            "WITH RECURSIVE seen(id) AS (SELECT min(workflow_id) FROM runs UNION ALL"
            " SELECT (SELECT min(workflow_id) FROM runs WHERE workflow_id > seen.id)"
            " FROM seen WHERE seen.id IS NOT NULL)"
            " SELECT workflow_id FROM workflows WHERE present = 1"
            " UNION SELECT id FROM seen WHERE id IS NOT NULL ORDER BY 1"
        )
        return [str(row[0]) for row in rows]

    async def runs_page(self, wanted: RunFilter, *, offset: int, limit: int) -> RunPage:
        """One page of the runs `wanted` selects, in its order, and how many there are."""
        where, params = _filter_sql(wanted)
        order = _ORDER_BY.get(wanted.sort, _ORDER_BY["newest"])
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
            )
            return RunPage([run_row(row) for row in rows], total, offset)
        rows = await self.reader.fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await run_search.total(self.reader, wanted.status, wanted.workflow)
        return RunPage([run_row(row) for row in rows], total, offset)

    async def run_fingerprint(self, run_id: str) -> tuple[Any, ...] | None:
        """A cheap value that changes whenever what `run_detail` returns may have changed."""
        rows = await self.reader.fetch(
            "SELECT r.status, r.updated_at, r.position, r.step, r.error, r.version,"
            " (SELECT max(t.id) FROM timeline t WHERE t.run = r.id),"
            " (SELECT group_concat(w.id || w.status) FROM waits w WHERE w.run = r.id),"
            # Events reach the detail only through live waits: without one, new events
            # elsewhere do not make the detail read again.
            " CASE WHEN EXISTS (SELECT 1 FROM waits w WHERE w.run = r.id"
            " AND w.status IN ('armed', 'parked')) THEN (SELECT max(e.id) FROM events e) END,"
            # A fan-out's progress: its children change without touching its own rows.
            " (SELECT count(k.run_id) || ':' || max(k.updated_at) FROM children c"
            " LEFT JOIN runs k ON k.run_id = c.child WHERE c.parent = r.run_id)"
            " FROM runs r WHERE r.run_id = ?",
            [run_id],
        )
        return tuple(rows[0]) if rows else None

    async def run_detail(self, run_id: str, *, recent_events: int = 5) -> RunDetail | None:
        """One run: its timeline, checkpoints and live waits; None if there is no such run."""
        runs = await self.reader.fetch(
            f"SELECT r.id, r.position, r.step_started_at, r.forked_from_run,"
            f" r.forked_from_step, {_RUN_COLUMNS} FROM runs r WHERE r.run_id = ?",
            [run_id],
        )
        if not runs:
            return None
        row = runs[0]
        pipeline = await self.reader.fetch(PIPELINE_SQL, [row["workflow_id"], row["version"]])
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
        rows = await self.reader.fetch("SELECT parent FROM children WHERE child = ?", [run_id])
        return str(rows[0][0]) if rows else None

    async def _children(self, run_id: str) -> list[RunRow]:
        rows = await self.reader.fetch(
            f"SELECT {_RUN_COLUMNS} FROM children c JOIN runs r ON r.run_id = c.child"
            " WHERE c.parent = ? ORDER BY c.created_at, c.n LIMIT ?",
            [run_id, CHILDREN_SHOWN],
        )
        return [run_row(row) for row in rows]

    async def _children_by_status(self, run_id: str) -> dict[str, int]:
        rows = await self.reader.fetch(
            "SELECT coalesce(r.status, 'not started'), count(*) FROM children c"
            " LEFT JOIN runs r ON r.run_id = c.child WHERE c.parent = ? GROUP BY 1",
            [run_id],
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def recent_events(self, *, limit: int = 200, type_contains: str = "") -> list[EventView]:
        """The latest events, newest first, each with what it did to runs."""
        where, params = "1", []
        if type_contains:
            where, params = "e.type LIKE ? ESCAPE '\\'", [run_search.like(type_contains)]
        rows = await self.reader.fetch(
            f"SELECT e.event_id, e.type, {_JSON.format('e.data')} AS data, e.source,"
            f" e.created_at, e.routed_at FROM events e WHERE {where} ORDER BY e.id DESC LIMIT ?",
            [*params, limit],
        )
        events = [event_view(row) for row in rows]
        return with_routes(events, await self._routes([event.event_id for event in events]))

    async def workflows(self) -> list[WorkflowView]:
        """Workflows registered now, by id, with what is disabled of each."""
        rows = await self.reader.fetch(
            f"SELECT workflow_id, version, file, {_JSON.format('triggers')} AS triggers, mode,"
            " loaded_at FROM workflows WHERE present = 1 ORDER BY workflow_id"
        )
        off = await self.reader.disabled()
        return [workflow_view(row, off) for row in rows]

    async def workflow_figures(self, since: datetime) -> list[WorkflowFigures]:
        """Per loaded workflow: runs and failures since `since`, recent durations, next tick."""
        rows = await self.reader.fetch(
            _FIGURES_SQL,
            [int(since.timestamp() * 1_000_000), FIGURES_CAP + 1, FIGURES_RECENT],
        )
        return [workflow_figures(row) for row in rows]

    async def waited_event_types(self) -> list[str]:
        """The event types armed or parked waits of runs wait for, sorted."""
        rows = await self.reader.fetch(
            "SELECT DISTINCT event_type FROM waits WHERE status IN ('armed', 'parked')"
            " AND event_type IS NOT NULL ORDER BY 1"
        )
        return [str(row[0]) for row in rows]

    async def log_entries(self, *, after: int = 0, limit: int = 100) -> list[LogEntry]:
        """Journaled timeline rows of all runs above row id `after`, the last `limit`."""
        return await self.reader.log_entries(after=after, limit=limit)

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""
        return await self.reader.match_runs(prefix, limit=limit)

    async def load_errors(self) -> list[LoadErrorView]:
        """Files that failed to load, by file."""
        return [
            LoadErrorView(error.file, error.line, error.message, when(error.at))
            for error in await self.reader.load_errors()
        ]

    async def daemon(self) -> DaemonRecord | None:
        """The live process holding the journal's lease, or None."""
        return await self.reader.daemon()

    async def _timeline(self, run: sqlite3.Row) -> list[TimelineEntry]:
        checkpoints = await self.reader.fetch(
            "SELECT * FROM (SELECT position, step, started_at, ended_at FROM checkpoints"
            " WHERE run = ? AND position > 0 AND kind = 'step' ORDER BY position DESC LIMIT ?)"
            " ORDER BY position",
            [run["id"], CHECKPOINT_LIMIT],
        )
        entries = await self.reader.fetch(
            "SELECT * FROM (SELECT id, position, at, source, kind, step, message,"
            f" {_JSON.format('data')} AS data FROM timeline WHERE run = ? ORDER BY id DESC"
            " LIMIT ?) ORDER BY id",
            [run["id"], TIMELINE_LIMIT],
        )
        # Damaged data comes back as a JSON string, so an entry's data may be any JSON value.
        return assemble_timeline(run, checkpoints, entries)

    async def _checkpoints(self, row: int) -> list[Checkpoint]:
        rows = await self.reader.fetch(
            "SELECT position, step, started_at, ended_at,"
            f" {_JSON.format('state')} AS state, kind FROM (SELECT c.position, c.step,"
            f" c.started_at, c.ended_at, {state_of('c')} AS state, c.kind FROM checkpoints c"
            " WHERE c.run = ? ORDER BY c.position DESC LIMIT ?) ORDER BY position",
            [row, CHECKPOINT_LIMIT],
        )
        return [
            Checkpoint(
                position=int(r[0]),
                step=r[1],
                started_at=to_datetime(int(r[2])),
                ended_at=to_datetime(int(r[3])),
                state=loads_or_text(r[4]),
                kind=str(r[5]),
            )
            for r in rows
        ]

    async def _waits(self, row: int, recent_events: int) -> list[WaitView]:
        rows = await self.reader.fetch(
            f"SELECT w.id, w.event_type, {_JSON.format('w.conditions')}, w.status, w.into_key,"
            " w.timeout_at, w.on_timeout, w.created_at,"
            " (SELECT count(*) FROM wait_buffer b WHERE b.wait = w.id)"
            " FROM waits w WHERE w.run = ? AND w.status IN ('armed', 'parked')"
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
            f"SELECT event_id, type, {_JSON.format('data')} AS data, source, created_at,"
            " routed_at FROM events WHERE type = ? AND created_at >= ? ORDER BY id DESC LIMIT ?",
            [event_type, since, limit],
        )
        return [event_view(row) for row in rows]

    async def _routes(self, event_ids: list[str]) -> dict[str, list[RouteView]]:
        if not event_ids:
            return {}
        marks = ", ".join("?" * len(event_ids))
        rows = await self.reader.fetch(
            "SELECT er.event_id, r.run_id, r.workflow_id, er.action FROM event_routes er"
            f" JOIN runs r ON r.id = er.run WHERE er.event_id IN ({marks}) ORDER BY r.id",
            event_ids,
        )
        return routes_by_event(rows)


def _filter_sql(wanted: RunFilter) -> tuple[str, list[Any]]:
    """A WHERE clause (fixed fragments only) and its parameters."""
    clauses: list[str] = ["1"]
    params: list[Any] = []
    if wanted.status is not None:
        clauses.append("r.status = ?")
        params.append(wanted.status)
    if wanted.workflow is not None:
        clauses.append("r.workflow_id = ?")
        params.append(wanted.workflow)
    return " AND ".join(clauses), params

"""What both backends' dashboard views share: each view's Python, written once.

`SharedViews` holds the methods of `DashboardViews` whose only difference between the
backends is their SQL text: what they fetch and how rows become view records
(`view_rows.py`). Each backend's views subclass it with their dialect's statements as a
`ViewSQL` table and the few steps that differ in shape, not only in spelling: the run
search and counts (each backend's `run_search`), an event-type filter, a list of ids, the
pipeline's parameters. This module knows no SQL and imports no driver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from ..clock import to_datetime
from ..records import Checkpoint, TimelineEntry
from .command_rules import pipeline_steps
from .decoding import forked_from
from .reading import SharedReads
from .records import DaemonRecord, LogEntry, RunMatches, StandbyRecord
from .timeline import assemble_timeline, loads_or_text
from .view_records import (
    CHILDREN_SHOWN,
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
from .view_rows import (
    event_view,
    routes_by_event,
    run_row,
    wait_view,
    when,
    with_routes,
    workflow_figures,
    workflow_view,
)

TIMELINE_LIMIT = 2_000  # rows of a run's timeline shown (the latest)
CHECKPOINT_LIMIT = 200  # checkpoints of a run shown (the latest)


@dataclass(frozen=True, slots=True)
class ViewSQL:
    """One dialect's statements for `SharedViews`.

    `runs_page` holds ``{where}`` and ``{order}``; `recent_events` and `routes` hold
    ``{where}``; `order_by` may hold ``{collate}`` (see `SharedViews._collate`).
    """

    run_columns: str  # the columns of `run_row`, over ``runs r``
    runs_page: str
    filter_all: str
    filter_status: str
    filter_workflow: str
    order_by: Mapping[str, str]  # by `RunFilter.sort`; "newest" when unknown
    workflow_ids: str
    run_fingerprint: str
    run_detail: str
    parent: str
    children: str
    children_by_status: str
    recent_events: str
    workflows: str
    workflow_figures: str
    waited_event_types: str
    timeline_checkpoints: str
    timeline_entries: str
    checkpoints: str  # (position, step, started_at, ended_at, state..., kind)
    waits: str
    events_since: str
    routes: str


class SharedViews(ABC):
    """The dashboard's queries over one reader, for every backend (`DashboardViews`)."""

    _sql: ClassVar[ViewSQL]
    reader: SharedReads

    @abstractmethod
    async def status_counts(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs are in each status (of one workflow, or all)."""

    async def _collate(self) -> str:
        """What `order_by`'s ``{collate}`` stands for (text in byte order)."""
        return ""

    @abstractmethod
    async def _search(self, wanted: RunFilter, page: dict[str, Any]) -> tuple[list[Any], int]:
        """A page of the runs `wanted.search` matches, and how many (`run_search.search`).

        `page` holds its select, where, params, order, offset and limit.
        """

    @abstractmethod
    async def _total(self, wanted: RunFilter) -> int:
        """How many runs of `wanted`'s status and workflow there are."""

    @abstractmethod
    def _pipeline(self, row: Any) -> tuple[str, list[Any]]:
        """The statement and parameters of the pipeline a run's detail lists."""

    @abstractmethod
    def _type_filter(self, text: str) -> tuple[str, list[Any]] | None:
        """A condition on ``e.type`` containing `text`, or None when no type can."""

    @abstractmethod
    def _among(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        """A condition: `column` is one of `values`."""

    @abstractmethod
    def _figures_params(self, start: int) -> list[Any]:
        """The parameters of `workflow_figures` for runs since `start` (microseconds)."""

    async def data_version(self) -> int:
        """Changes whenever another connection commits."""
        return await self.reader.data_version()

    async def workflow_ids(self) -> list[str]:
        """Workflows that have runs or are registered now, by id."""
        return [str(row[0]) for row in await self.reader.fetch(self._sql.workflow_ids)]

    async def runs_page(self, wanted: RunFilter, *, offset: int, limit: int) -> RunPage:
        """One page of the runs `wanted` selects, in its order, and how many there are."""
        where, params = self._filter_sql(wanted)
        order_by = self._sql.order_by
        order = order_by.get(wanted.sort, order_by["newest"]).format(collate=await self._collate())
        offset = max(0, offset)
        if wanted.search.strip():  # by index: `run_search`
            page = {
                "select": self._sql.run_columns,
                "where": where,
                "params": params,
                "order": order,
                "offset": offset,
                "limit": limit,
            }
            rows, total = await self._search(wanted, page)
            return RunPage([run_row(row) for row in rows], total, offset)
        rows = await self.reader.fetch(
            self._sql.runs_page.format(where=where, order=order),
            [*params, self.reader.limit_param(limit), offset],
        )
        total = await self._total(wanted)
        return RunPage([run_row(row) for row in rows], total, offset)

    def _filter_sql(self, wanted: RunFilter) -> tuple[str, list[Any]]:
        """A WHERE clause (fixed fragments only) and its parameters."""
        clauses: list[str] = [self._sql.filter_all]
        params: list[Any] = []
        if wanted.status is not None:
            clauses.append(self._sql.filter_status)
            params.append(wanted.status)
        if wanted.workflow is not None:
            clauses.append(self._sql.filter_workflow)
            params.append(wanted.workflow)
        return " AND ".join(clauses), params

    async def run_fingerprint(self, run_id: str) -> tuple[Any, ...] | None:
        """A cheap value that changes whenever what `run_detail` returns may have changed."""
        rows = await self.reader.fetch(self._sql.run_fingerprint, [run_id])
        return tuple(rows[0]) if rows else None

    async def run_detail(self, run_id: str, *, recent_events: int = 5) -> RunDetail | None:
        """One run: its timeline, checkpoints and live waits; None if there is no such run."""
        runs = await self.reader.fetch(self._sql.run_detail, [run_id])
        if not runs:
            return None
        row = runs[0]
        pipeline = await self.reader.fetch(*self._pipeline(row))
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
        rows = await self.reader.fetch(self._sql.parent, [run_id])
        return str(rows[0][0]) if rows else None

    async def _children(self, run_id: str) -> list[RunRow]:
        rows = await self.reader.fetch(self._sql.children, [run_id, CHILDREN_SHOWN])
        return [run_row(row) for row in rows]

    async def _children_by_status(self, run_id: str) -> dict[str, int]:
        rows = await self.reader.fetch(self._sql.children_by_status, [run_id])
        return {str(row[0]): int(row[1]) for row in rows}

    async def recent_events(self, *, limit: int = 200, type_contains: str = "") -> list[EventView]:
        """The latest events, newest first, each with what it did to runs."""
        where, params = self._sql.filter_all, list[Any]()
        if type_contains:
            found = self._type_filter(type_contains)
            if found is None:
                return []
            where, params = found
        rows = await self.reader.fetch(
            self._sql.recent_events.format(where=where), [*params, self.reader.limit_param(limit)]
        )
        events = [event_view(row) for row in rows]
        return with_routes(events, await self._routes([event.event_id for event in events]))

    async def workflows(self) -> list[WorkflowView]:
        """Workflows registered now, by id, with what is disabled of each."""
        rows = await self.reader.fetch(self._sql.workflows)
        off = await self.reader.disabled()
        return [workflow_view(row, off) for row in rows]

    async def workflow_figures(self, since: datetime) -> list[WorkflowFigures]:
        """Per loaded workflow: runs and failures since `since`, recent durations, next tick."""
        params = self._figures_params(int(since.timestamp() * 1_000_000))
        rows = await self.reader.fetch(self._sql.workflow_figures, params)
        return [workflow_figures(row) for row in rows]

    async def waited_event_types(self) -> list[str]:
        """The event types armed or parked waits of runs wait for, sorted."""
        return [str(row[0]) for row in await self.reader.fetch(self._sql.waited_event_types)]

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
        """The live process holding the journal, or None."""
        return await self.reader.daemon()

    async def standbys(self) -> list[StandbyRecord]:
        """The daemons standing by to take the journal over, oldest first."""
        return await self.reader.standbys()

    async def _timeline(self, run: Any) -> list[TimelineEntry]:
        checkpoints = await self.reader.fetch(
            self._sql.timeline_checkpoints, [run["id"], CHECKPOINT_LIMIT]
        )
        entries = await self.reader.fetch(self._sql.timeline_entries, [run["id"], TIMELINE_LIMIT])
        # Damaged data comes back as a JSON string, so an entry's data may be any JSON value.
        return assemble_timeline(run, checkpoints, entries)

    async def _checkpoints(self, row: int) -> list[Checkpoint]:
        rows = await self.reader.fetch(self._sql.checkpoints, [row, CHECKPOINT_LIMIT])
        return [
            Checkpoint(
                position=int(r[0]),
                step=r[1],
                started_at=to_datetime(int(r[2])),
                ended_at=to_datetime(int(r[3])),
                state=loads_or_text(self.reader.state_at(r, 4)),
                kind=str(r[-1]),
            )
            for r in rows
        ]

    async def _waits(self, row: int, recent_events: int) -> list[WaitView]:
        rows = await self.reader.fetch(self._sql.waits, [row])
        return [wait_view(r, await self._events_since(r[1], r[7], recent_events)) for r in rows]

    async def _events_since(
        self, event_type: str | None, since: Any, limit: int
    ) -> list[EventView]:
        if event_type is None or not isinstance(since, int):
            return []
        rows = await self.reader.fetch(
            self._sql.events_since, [event_type, since, self.reader.limit_param(limit)]
        )
        return [event_view(row) for row in rows]

    async def _routes(self, event_ids: list[str]) -> dict[str, list[RouteView]]:
        if not event_ids:
            return {}
        where, params = self._among("er.event_id", event_ids)
        rows = await self.reader.fetch(self._sql.routes.format(where=where), params)
        return routes_by_event(rows)

"""What the dashboard reads: paged run lists, one run in detail, events and their routes.

Every statement the dashboard runs on SQLite lives here (`SQL`), over a `JournalReader`'s
read-only connection; the Python that runs them is `viewing.SharedViews`, the same for
every backend. The dashboard re-queries whenever the journal changes, so each query is
paged or bounded and served by an index (migration 5) to stay fast with 100,000 runs. Rows
written by other versions, or damaged, are decoded defensively: a JSON column that does
not parse comes back as its text, a timestamp that is not a number as ``None``, so one bad
row never hides the rest.
"""

from __future__ import annotations

from typing import Any, Final

from ...records import STATUSES
from ..view_records import FIGURES_CAP, FIGURES_RECENT, RunFilter
from ..viewing import SharedViews, ViewSQL
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


def _json(column: str) -> str:
    """A JSON column as valid JSON: damaged text comes back as a JSON string of itself."""
    return f"CASE WHEN json_valid({column}) THEN {column} ELSE json_quote({column}) END"


SQL: Final = ViewSQL(
    run_columns=_RUN_COLUMNS,
    runs_page=f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {{where}} ORDER BY {{order}}"
    " LIMIT ? OFFSET ?",
    filter_all="1",
    filter_status="r.status = ?",
    filter_workflow="r.workflow_id = ?",
    order_by=_ORDER_BY,
    # A skip scan: one seek of the runs_by_workflow index per workflow, not one step per
    # run (SELECT DISTINCT walks all 100,000 entries of the index).
    workflow_ids=(
        "WITH RECURSIVE seen(id) AS (SELECT min(workflow_id) FROM runs UNION ALL"
        " SELECT (SELECT min(workflow_id) FROM runs WHERE workflow_id > seen.id)"
        " FROM seen WHERE seen.id IS NOT NULL)"
        " SELECT workflow_id FROM workflows WHERE present = 1"
        " UNION SELECT id FROM seen WHERE id IS NOT NULL ORDER BY 1"
    ),
    run_fingerprint=(
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
        " FROM runs r WHERE r.run_id = ?"
    ),
    run_detail=(
        "SELECT r.id, r.position, r.step_started_at, r.forked_from_run,"
        f" r.forked_from_step, {_RUN_COLUMNS} FROM runs r WHERE r.run_id = ?"
    ),
    parent="SELECT parent FROM children WHERE child = ?",
    children=(
        f"SELECT {_RUN_COLUMNS} FROM children c JOIN runs r ON r.run_id = c.child"
        " WHERE c.parent = ? ORDER BY c.created_at, c.n LIMIT ?"
    ),
    children_by_status=(
        "SELECT coalesce(r.status, 'not started'), count(*) FROM children c"
        " LEFT JOIN runs r ON r.run_id = c.child WHERE c.parent = ? GROUP BY 1"
    ),
    recent_events=(
        f"SELECT e.event_id, e.type, {_json('e.data')} AS data, e.source,"
        " e.created_at, e.routed_at FROM events e WHERE {where} ORDER BY e.id DESC LIMIT ?"
    ),
    workflows=(
        f"SELECT workflow_id, version, file, {_json('triggers')} AS triggers, mode,"
        " loaded_at FROM workflows WHERE present = 1 ORDER BY workflow_id"
    ),
    workflow_figures=_FIGURES_SQL,
    waited_event_types=(
        "SELECT DISTINCT event_type FROM waits WHERE status IN ('armed', 'parked')"
        " AND event_type IS NOT NULL ORDER BY 1"
    ),
    timeline_checkpoints=(
        "SELECT * FROM (SELECT position, step, started_at, ended_at FROM checkpoints"
        " WHERE run = ? AND position > 0 AND kind = 'step' ORDER BY position DESC LIMIT ?)"
        " ORDER BY position"
    ),
    timeline_entries=(
        "SELECT * FROM (SELECT id, position, at, source, kind, step, message,"
        f" {_json('data')} AS data FROM timeline WHERE run = ? ORDER BY id DESC"
        " LIMIT ?) ORDER BY id"
    ),
    checkpoints=(
        "SELECT position, step, started_at, ended_at,"
        f" {_json('state')} AS state, kind FROM (SELECT c.position, c.step,"
        f" c.started_at, c.ended_at, {state_of('c')} AS state, c.kind FROM checkpoints c"
        " WHERE c.run = ? ORDER BY c.position DESC LIMIT ?) ORDER BY position"
    ),
    waits=(
        f"SELECT w.id, w.event_type, {_json('w.conditions')}, w.status, w.into_key,"
        " w.timeout_at, w.on_timeout, w.created_at,"
        " (SELECT count(*) FROM wait_buffer b WHERE b.wait = w.id)"
        " FROM waits w WHERE w.run = ? AND w.status IN ('armed', 'parked')"
        " ORDER BY w.status = 'parked' DESC, w.id DESC"
    ),
    events_since=(
        f"SELECT event_id, type, {_json('data')} AS data, source, created_at,"
        " routed_at FROM events WHERE type = ? AND created_at >= ? ORDER BY id DESC LIMIT ?"
    ),
    routes=(
        "SELECT er.event_id, r.run_id, r.workflow_id, er.action FROM event_routes er"
        " JOIN runs r ON r.id = er.run WHERE {where} ORDER BY r.id"
    ),
)


class DashboardQueries(SharedViews):
    """The dashboard's queries over one reader: `SharedViews` with SQLite's `SQL`."""

    _sql = SQL
    reader: JournalReader

    def __init__(self, reader: JournalReader) -> None:
        self.reader = reader

    async def close(self) -> None:
        """Close the reader's connection."""
        await self.reader.close()

    async def set_busy_timeout(self, milliseconds: int) -> None:
        """Wait at most this long for a lock, so a stuck writer shows as an error soon."""
        await self.reader.fetch(f"PRAGMA busy_timeout = {int(milliseconds)}")

    async def status_counts(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs are in each status (of one workflow, or all)."""
        return await run_search.status_counts(self.reader, workflow)

    async def _search(self, wanted: RunFilter, page: dict[str, Any]) -> tuple[list[Any], int]:
        return await run_search.search(self.reader, wanted, **page)

    async def _total(self, wanted: RunFilter) -> int:
        return await run_search.total(self.reader, wanted.status, wanted.workflow)

    def _pipeline(self, row: Any) -> tuple[str, list[Any]]:
        return PIPELINE_SQL, [row["workflow_id"], row["version"]]

    def _type_filter(self, text: str) -> tuple[str, list[Any]] | None:
        return "e.type LIKE ? ESCAPE '\\'", [run_search.like(text)]

    def _among(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", values

    def _figures_params(self, start: int) -> list[Any]:
        return [start, FIGURES_CAP + 1, FIGURES_RECENT]

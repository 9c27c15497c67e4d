"""What the dashboard reads, on PostgreSQL: the statements of ``sqlite/views.py``, ported.

Every query is the SQLite one with PostgreSQL's spelling (``%s``, ``string_agg``,
``ARRAY(...)``, ``= ANY``), over a `PostgresReader`'s autocommit connection; the Python
that runs them and decodes their rows is the same as SQLite's (``journal/viewing.py``,
``journal/view_rows.py``, ``journal/timeline.py``), so both backends show the same
records. Differences that are not spelling:

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

from typing import TYPE_CHECKING, Any, Final, cast

from ...records import STATUSES
from ..view_records import FIGURES_CAP, FIGURES_RECENT, RunFilter
from ..viewing import SharedViews, ViewSQL
from . import run_search
from .reader import SHOWN_STEP, PostgresReader
from .states import parts

if TYPE_CHECKING:
    from ..protocol import JournalQueries

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

_RUN_COLUMNS = f"""
    r.run_id, r.workflow_id, r.trigger_id, r.status, {SHOWN_STEP} AS step, r.error,
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

SQL: Final = ViewSQL(
    run_columns=_RUN_COLUMNS,
    runs_page=f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {{where}} ORDER BY {{order}}"
    " LIMIT %s OFFSET %s",
    filter_all="TRUE",
    filter_status="r.status = %s",
    filter_workflow="r.workflow_id = %s",
    order_by={
        "newest": "r.id DESC",
        "oldest": "r.id ASC",
        "workflow": "r.workflow_id{collate}, r.id DESC",
        "status": "r.status{collate}, r.id DESC",
    },
    # A skip scan of the runs_by_workflow index (one seek per workflow), as on SQLite.
    workflow_ids=(
        "WITH RECURSIVE seen(id) AS (SELECT min(workflow_id) FROM runs UNION ALL"
        " SELECT (SELECT min(workflow_id) FROM runs WHERE workflow_id > seen.id)"
        " FROM seen WHERE seen.id IS NOT NULL)"
        " SELECT id FROM (SELECT workflow_id AS id FROM workflows WHERE present = 1"
        ' UNION SELECT id FROM seen WHERE id IS NOT NULL) u ORDER BY id COLLATE "C"'
    ),
    run_fingerprint=(
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
        " FROM runs r WHERE r.run_id = %s"
    ),
    run_detail=(
        "SELECT r.id, r.position, r.step_started_at, r.forked_from_run,"
        f" r.forked_from_step, {_RUN_COLUMNS} FROM runs r WHERE r.run_id = %s"
    ),
    parent="SELECT parent FROM children WHERE child = %s",
    children=(
        f"SELECT {_RUN_COLUMNS} FROM children c JOIN runs r ON r.run_id = c.child"
        " WHERE c.parent = %s ORDER BY c.created_at, c.n LIMIT %s"
    ),
    children_by_status=(
        "SELECT coalesce(r.status, 'not started'), count(*) FROM children c"
        " LEFT JOIN runs r ON r.run_id = c.child WHERE c.parent = %s GROUP BY 1"
    ),
    recent_events=(
        "SELECT e.event_id, e.type, e.data, e.source, e.created_at, e.routed_at"
        " FROM events e WHERE {where} ORDER BY e.id DESC LIMIT %s"
    ),
    workflows=(
        "SELECT workflow_id, version, file, triggers, mode, loaded_at FROM workflows"
        ' WHERE present = 1 ORDER BY workflow_id COLLATE "C"'
    ),
    workflow_figures=_FIGURES_SQL,
    waited_event_types=(
        "SELECT t FROM (SELECT DISTINCT event_type AS t FROM waits"
        " WHERE status IN ('armed', 'parked') AND event_type IS NOT NULL) x"
        ' ORDER BY t COLLATE "C"'
    ),
    timeline_checkpoints=(
        "SELECT * FROM (SELECT position, step, started_at, ended_at FROM checkpoints"
        " WHERE run = %s AND position > 0 AND kind = 'step' ORDER BY position DESC"
        " LIMIT %s) x ORDER BY position"
    ),
    timeline_entries=(
        "SELECT * FROM (SELECT id, position, at, source, kind, step, message, data"
        " FROM timeline WHERE run = %s ORDER BY id DESC LIMIT %s) x ORDER BY id"
    ),
    checkpoints=(
        "SELECT * FROM (SELECT c.position, c.step, c.started_at, c.ended_at,"
        f" {parts('c')}, c.kind FROM checkpoints c WHERE c.run = %s"
        " ORDER BY c.position DESC LIMIT %s) x ORDER BY position"
    ),
    waits=(
        "SELECT w.id, w.event_type, w.conditions, w.status, w.into_key, w.timeout_at,"
        " w.on_timeout, w.created_at,"
        " (SELECT count(*) FROM wait_buffer b WHERE b.wait = w.id)"
        " FROM waits w WHERE w.run = %s AND w.status IN ('armed', 'parked')"
        " ORDER BY w.status = 'parked' DESC, w.id DESC"
    ),
    events_since=(
        "SELECT event_id, type, data, source, created_at, routed_at FROM events"
        " WHERE type = %s AND created_at >= %s ORDER BY id DESC LIMIT %s"
    ),
    routes=(
        "SELECT er.event_id, r.run_id, r.workflow_id, er.action FROM event_routes er"
        " JOIN runs r ON r.id = er.run WHERE {where} ORDER BY r.id"
    ),
)


class PostgresViews(SharedViews):
    """The dashboard's queries over one PostgreSQL reader: `SharedViews` with its `SQL`."""

    _sql = SQL
    reader: PostgresReader

    def __init__(self, reader: PostgresReader) -> None:
        self.reader = reader
        self._collate_sql: str | None = None  # "" or BYTE_ORDER, once read (`collate`)
        # The reader's own queries (`JournalQueries`), which some views are.
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
        if self._collate_sql is None:
            rows = await self.reader.fetch(_BYTE_ORDER_SQL)
            self._collate_sql = "" if rows and rows[0][0] else BYTE_ORDER
        return self._collate_sql

    async def set_busy_timeout(self, milliseconds: int) -> None:
        """Wait at most this long for a lock, so a stuck writer shows as an error soon.

        PostgreSQL's reads never wait for a writer's row locks (MVCC): only a lock a
        migration's DDL holds makes a read wait. ``lock_timeout`` bounds that wait, as
        SQLite's ``busy_timeout`` does; ``statement_timeout`` is left alone, so a slow but
        working query (a search in a million runs) is never cut short.
        """
        await self.reader.set_lock_timeout(milliseconds)

    async def status_counts(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs are in each status (of one workflow, or all)."""
        return await run_search.status_counts(self.reader, workflow)

    async def _collate(self) -> str:
        return await self.collate()

    async def _search(self, wanted: RunFilter, page: dict[str, Any]) -> tuple[list[Any], int]:
        return await run_search.search(self.reader, wanted, collate=await self.collate(), **page)

    async def _total(self, wanted: RunFilter) -> int:
        return await run_search.total(self.reader, wanted.status, wanted.workflow)

    def _pipeline(self, row: Any) -> tuple[str, list[Any]]:
        return _PIPELINE_SQL, [row["workflow_id"], row["workflow_id"], row["version"]]

    def _type_filter(self, text: str) -> tuple[str, list[Any]] | None:
        if "\x00" in text:  # no text holds a NUL on PostgreSQL: no event matches
            return None
        return run_search.contains("e.type"), [run_search.like(text)]

    def _among(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [values]

    def _figures_params(self, start: int) -> list[Any]:
        return [start, FIGURES_CAP + 1, start, FIGURES_CAP + 1, FIGURES_RECENT]

"""The main screen: runs, live, one page at a time, with counts, filters, search and sort.

The table shows `PAGE_SIZE` runs; the journal does the filtering, sorting and paging
(`DashboardViews.runs_page`), so 100,000 runs cost what one page costs. Each reload
updates the rows in place and keeps the cursor on the run it was on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Select, Static

from orchestrator.errors import OrchestratorError
from orchestrator.journal import SORTS, DashboardViews, RunFilter, RunPage, RunRow
from orchestrator.records import FINAL_STATUSES, STATUSES

from .format import (
    STATUS_STYLES,
    join,
    literal,
    run_duration,
    short_id,
    status_text,
    timestamp,
)
from .keybar import KeyBar
from .live import JournalBanner, RunScreen, show
from .tables import Table, selected_key, sync_rows
from .values import Value, record, when

PAGE_SIZE: Final = 100
MIN_PREFIX: Final = 4  # characters of a run id that name it (as `orchestrator show` takes)
COLUMNS: Final = (
    ("run", "run"),
    ("workflow", "workflow"),
    ("trigger", "trigger"),
    ("status", "status"),
    ("step", "step"),
    ("started", "started"),
    ("duration", "duration"),
    ("error", "error"),
)
NARROW: Final = 100  # below this width, the columns in `NARROW_DROPS` are not shown
NARROW_DROPS: Final = frozenset({"trigger", "started"})


class RunsScreen(RunScreen):
    """Runs, newest first by default."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search"),
        Binding("f", "cycle('status')", "Status"),
        Binding("w", "cycle('workflow')", "Workflow"),
        Binding("o", "cycle('sort')", "Sort"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("escape", "clear_filters", "Clear filters", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.run_filter = RunFilter()
        self.page_offset = 0
        self.run_page: RunPage | None = None
        self.counts: dict[str, int] = {}
        self._counted: tuple[int, str | None] | None = None  # (source.changes, workflow)
        self._drawn: dict[str, tuple[object, list[Text]]] = {}  # run id -> (what it shows, cells)
        self._clock_read: tuple[datetime, float] | None = None  # (now, monotonic) at a tick
        self._workflows: list[str] = []
        self._workflows_seen_at = -1  # the run count when workflows were last listed
        self._workflows_due = 0.0
        self._narrow: bool | None = None
        self._shown: list[int] = []  # the indexes in COLUMNS of the columns shown

    def compose(self) -> ComposeResult:
        """Banner, counts, filter bar, the table, the pager."""
        yield JournalBanner(id="banner")
        yield Static(id="counts")
        with Horizontal(id="filters"):
            yield Input(placeholder="search run id, workflow, trigger, error", id="search")
            yield Select[str](
                [(Text(s, style=STATUS_STYLES[s]), s) for s in STATUSES],
                prompt="any status",
                id="status",
            )
            yield Select[str]([], prompt="any workflow", id="workflow")
            yield Select[str](
                [(Text(f"sort: {name}"), name) for name in SORTS],
                allow_blank=False,
                value="newest",
                id="sort",
            )
        yield Table(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="pager")
        yield KeyBar()

    def on_mount(self) -> None:
        """Set up the columns; the table has the focus."""
        self._set_columns(self.app.size.width)
        self._table().focus()

    def on_resize(self) -> None:
        """Narrow or wide again: the columns that fit."""
        if self._set_columns(self.app.size.width) and self.run_page is not None:
            self._draw()

    def _set_columns(self, width: int) -> bool:
        """Drop the least needed columns below `NARROW` (rather than cut ids); True if changed."""
        narrow = width < NARROW
        if narrow == self._narrow:
            return False
        self._narrow = narrow
        self._shown = [
            i for i, (_, key) in enumerate(COLUMNS) if not (narrow and key in NARROW_DROPS)
        ]
        table = self._table()
        table.clear(columns=True)
        for index in self._shown:
            label, key = COLUMNS[index]
            table.add_column(label, key=key)
        return True

    def current_run_id(self) -> str | None:
        """The run under the cursor."""
        return selected_key(self._table())

    def current_run_status(self) -> str | None:
        """The status of the run under the cursor, as the page shows it."""
        run_id = self.current_run_id()
        rows = self.run_page.rows if self.run_page is not None else []
        return next((str(row.status) for row in rows if row.run_id == run_id), None)

    def current_value(self) -> Value | None:
        """The run under the cursor, every field in full."""
        run_id = self.current_run_id()
        rows = self.run_page.rows if self.run_page is not None else []
        row = next((row for row in rows if row.run_id == run_id), None)
        return (f"run {row.run_id}", run_record(row)) if row is not None else None

    def on_data_table_row_highlighted(self) -> None:
        """Another run under the cursor: offer the actions that fit it."""
        self.offer_actions()

    async def load(self, queries: DashboardViews) -> None:
        """Counts, the current page (clamped to the last page), the workflows to filter by."""
        # Counts depend on the journal and the workflow only: a search or a sort reuses them.
        counted = (self.dashboard.source.changes, self.run_filter.workflow)
        counts = self.counts
        if counted != self._counted:
            counts = await queries.status_counts(self.run_filter.workflow)
        page = await queries.runs_page(self.run_filter, offset=self.page_offset, limit=PAGE_SIZE)
        if not page.rows and page.total and self.page_offset > 0:
            self.page_offset = (page.total - 1) // PAGE_SIZE * PAGE_SIZE
            page = await queries.runs_page(
                self.run_filter, offset=self.page_offset, limit=PAGE_SIZE
            )
        self.counts, self.run_page, self._counted = counts, page, counted
        self._draw()
        total = sum(counts.values())
        if total != self._workflows_seen_at or time.monotonic() > self._workflows_due:
            # Only new runs (or, rarely, a reload) bring new workflows: look now and then.
            self._workflows_seen_at, self._workflows_due = total, time.monotonic() + 5
            self._set_workflows(await queries.workflow_ids())

    def tick(self) -> None:
        """Durations of runs that have not ended grow."""
        self._clock_read = None
        if self.run_page is not None:
            self._draw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter opens the run."""
        if event.row_key.value is not None:
            self.dashboard.open_run(event.row_key.value)

    async def on_input_changed(self, event: Input.Changed) -> None:
        """Search as you type."""
        if event.input.id == "search":
            await self._refilter(search=event.value)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search box goes back to the table, or opens the run its text names.

        It names one when it is a whole run id, or a prefix of `MIN_PREFIX` or more
        characters that one run's id starts with (as the CLI takes them).
        """
        self._table().focus()
        text, queries = event.value.strip(), self.dashboard.source.queries
        if len(text) < MIN_PREFIX or queries is None:
            return
        try:
            found = await queries.match_runs(text, limit=1)
        except OrchestratorError as exc:
            await self.dashboard.source.fail(exc)
            return
        if found.runs and (found.total == 1 or found.runs[0].run_id == text):
            self.dashboard.open_run(found.runs[0].run_id)

    async def on_select_changed(self, event: Select.Changed) -> None:
        """A filter or the sort changed."""
        value = event.select.selection
        if event.select.id == "status":
            await self._refilter(status=value)
        elif event.select.id == "workflow":
            await self._refilter(workflow=value)
        elif event.select.id == "sort" and value is not None:
            await self._refilter(sort=value)

    def action_focus_search(self) -> None:
        """Type to search."""
        self.query_one("#search", Input).focus()

    def action_cycle(self, which: str) -> None:
        """Step the status, workflow or sort selector to its next value."""
        select: Select[str] = self.query_one(f"#{which}", Select)
        choices: list[str | None] = list(SORTS) if which == "sort" else [None]
        if which == "status":
            choices += STATUSES
        elif which == "workflow":
            choices += self._workflows
        current = select.selection
        following = (
            choices[(choices.index(current) + 1) % len(choices)]
            if current in choices
            else choices[0]
        )
        if following is None:
            select.clear()
        else:
            select.value = following

    async def action_page(self, step: int) -> None:
        """The previous or next page."""
        total = self.run_page.total if self.run_page else 0
        offset = min(
            max(0, self.page_offset + step * PAGE_SIZE),
            max(0, (total - 1) // PAGE_SIZE * PAGE_SIZE),
        )
        if offset != self.page_offset:
            self.page_offset = offset
            await self.reload()

    def action_clear_filters(self) -> None:
        """Back to every run, newest first."""
        self.query_one("#search", Input).value = ""
        self.query_one("#status", Select).clear()
        self.query_one("#workflow", Select).clear()
        self.query_one("#sort", Select).value = "newest"
        self._table().focus()

    async def _refilter(self, **changes: Any) -> None:
        wanted = replace(self.run_filter, **changes)
        if wanted != self.run_filter:
            self.run_filter, self.page_offset = wanted, 0
            await self.reload()

    def _draw(self) -> None:
        assert self.run_page is not None
        now = self._now()
        rows = [(row.run_id, self._cells(row, now)) for row in self.run_page.rows]
        if len(self._shown) < len(COLUMNS):
            rows = [(key, [cells[i] for i in self._shown]) for key, cells in rows]
        self._drawn = {run_id: self._drawn[run_id] for run_id, _ in rows}
        sync_rows(self._table(), rows)
        counts = _counts_text(self.counts, self.run_filter.workflow)
        # Both lines have a fixed height: no layout pass (it would repaint the table too).
        show(self.query_one("#counts", Static), counts, layout=False)
        pager = _pager_text(self.run_page, self.run_filter)
        show(self.query_one("#pager", Static), pager, layout=False)
        self.offer_actions()

    def _now(self) -> datetime:
        """The clock as read at the last tick (within 1.5 s), else now.

        Durations move once a second, on `tick`; a reload in between (a daemon commits its
        lease heartbeat every second) draws with the same reading, so rows that did not
        change keep their cells and the table is not repainted twice a second.
        """
        if self._clock_read is None or time.monotonic() - self._clock_read[1] > 1.5:
            self._clock_read = (self.dashboard.now(), time.monotonic())
        return self._clock_read[0]

    def _cells(self, row: RunRow, now: datetime) -> list[Text]:
        """The row's cells, made again only when they may differ (every tick while not final)."""
        # A final run's cells change with the row or the local day (its start time's format).
        shows = (row, now.astimezone().date() if row.status in FINAL_STATUSES else now)
        drawn = self._drawn.get(row.run_id)
        if drawn is None or drawn[0] != shows:
            drawn = self._drawn[row.run_id] = (shows, _cells(row, now))
        return drawn[1]

    def _set_workflows(self, workflows: list[str]) -> None:
        if workflows == self._workflows:
            return
        self._workflows = workflows
        select: Select[str] = self.query_one("#workflow", Select)
        current = select.selection
        with self.prevent(Select.Changed):
            select.set_options([(literal(w, single_line=True), w) for w in workflows])
            if current in workflows:
                select.value = current
        if current is not None and current not in workflows:
            self.run_filter = replace(self.run_filter, workflow=None)

    def _table(self) -> DataTable[Text]:
        return self.query_one("#runs", DataTable)


def _cells(row: RunRow, now: datetime) -> list[Text]:
    return [
        literal(short_id(row.run_id), "bold", single_line=True),
        literal(row.workflow_id, single_line=True, limit=24),
        literal(row.trigger_id, single_line=True, limit=16),
        status_text(row.status),
        literal(row.step or "", single_line=True, limit=24),
        literal(timestamp(row.created_at, now), single_line=True),
        literal(run_duration(row.created_at, row.updated_at, row.status, now), single_line=True),
        literal(_error(row), "red", single_line=True, limit=60),
    ]


def run_record(row: RunRow) -> str:
    """A run's row, every field in full (the long-value view)."""
    return record(
        ("run", row.run_id),
        ("workflow", row.workflow_id),
        ("trigger", row.trigger_id),
        ("version", row.version),
        ("status", row.status),
        ("step", row.step),
        ("started", when(row.created_at)),
        ("updated", when(row.updated_at)),
        ("error", _error(row)),
    )


def _error(row: RunRow) -> str:
    if not row.error:
        return ""
    return f"{row.error_code}: {row.error}" if row.error_code else row.error


def _counts_text(counts: dict[str, int], workflow: str | None) -> Text:
    total = sum(counts.values())
    scope = join(literal("runs of "), literal(workflow, "bold")) if workflow else Text("all runs")
    parts = [join(scope, f" {total:,}")]
    for status in STATUSES:
        if counts.get(status):
            parts.append(join(status_text(status), f" {counts[status]:,}"))
    return Text("  ").join(parts)


def _pager_text(page: RunPage, wanted: RunFilter) -> Text:
    if not page.total:
        shown = "no run matches" if wanted != RunFilter(sort=wanted.sort) else "no runs yet"
        return literal(shown, "grey50")
    last = page.offset + len(page.rows)
    pages = (page.total - 1) // PAGE_SIZE + 1
    where = f"runs {page.offset + 1:,}-{last:,} of {page.total:,} · page "
    where += f"{page.offset // PAGE_SIZE + 1}/{pages} ([ ] to turn) · sort {wanted.sort}"
    return literal(where, "grey50")

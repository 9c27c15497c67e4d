"""The log pane: journaled timeline entries of every run as they come, like ``logs -f``.

One line an entry (time, short run id, workflow, kind, step, message), oldest at the top.
Each reload asks the journal only for rows past the last one shown (`log_entries`, the
query behind ``orchestrator logs``), and only when the app saw the journal change, so an
idle journal costs nothing more. The pane keeps the last `LOG_LINES` lines. It follows new
lines while the cursor is on the last one; moved up, it stays where it is (a line scrolled
out at the top is dropped, the cursor keeps its line). Enter opens the line's run.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import ClassVar, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from orchestrator.journal import DashboardViews, LogEntry

from .format import LEVEL_STYLES, literal, short_id, timestamp
from .keybar import KeyBar
from .live import JournalBanner, LiveScreen, show
from .tables import selected_key

LOG_LINES: Final = 1_000  # lines kept; older ones are dropped
TRIM_ROWS: Final = 50  # more lines to drop than this at once: the table is drawn again
COLUMNS: Final = ("at", "run", "workflow", "kind", "step", "message")


class LogsScreen(LiveScreen):
    """Every run's journaled entries, newest at the bottom, followed as they are written."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "follow", "Follow"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.last_id = 0  # the row id of the newest entry shown
        self.following = True
        # The lines shown: row key (the entry's row id), cells, run id.
        self._lines: deque[tuple[str, list[Text], str | None]] = deque(maxlen=LOG_LINES)

    def compose(self) -> ComposeResult:
        """Banner, the lines, a status line."""
        yield JournalBanner(id="banner")
        yield DataTable[Text](id="log", cursor_type="row", zebra_stripes=False)
        yield Static(id="log-note")
        yield KeyBar()

    def on_mount(self) -> None:
        """Columns; the table has the focus."""
        table = self._table()
        for column in COLUMNS:
            table.add_column(column, key=column)
        table.focus()

    async def load(self, queries: DashboardViews) -> None:
        """Append what was journaled since the last line shown."""
        entries = await queries.log_entries(after=self.last_id, limit=LOG_LINES)
        if entries:
            self._append(entries, self.dashboard.now())
        self._note()

    def _append(self, entries: list[LogEntry], now: datetime) -> None:
        table = self._table()
        self.last_id = entries[-1].id
        selected = selected_key(table)
        new = [(str(item.id), _cells(item, now), item.run_id) for item in entries]
        self._lines.extend(new)
        extra = table.row_count + len(new) - LOG_LINES
        if extra > TRIM_ROWS:  # many lines at once: draw the kept ones again
            table.clear()
            for key, cells, _ in self._lines:
                table.add_row(*cells, key=key)
        else:
            for key, cells, _ in new:
                table.add_row(*cells, key=key)
            for row in list(table.ordered_rows[: max(0, extra)]):
                table.remove_row(row.key)
        if self.following or selected is None:
            table.move_cursor(row=table.row_count - 1, animate=False)
        elif selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)

    def _note(self) -> None:
        table = self._table()
        if not table.row_count:
            text = literal("no log entries yet: they appear here as runs write them", "grey50")
        elif self.following:
            text = literal(f"{table.row_count:,} line(s) · following new entries", "grey50")
        else:
            text = literal(
                f"{table.row_count:,} line(s) · paused at your line (f to follow again)", "yellow"
            )
        show(self.query_one("#log-note", Static), text, layout=False)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The cursor on the last line follows new ones; anywhere else it stays put."""
        table = self._table()
        last = table.ordered_rows[-1].key.value if table.row_count else None
        self.following = event.row_key.value == last
        self._note()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter opens the line's run."""
        key = event.row_key.value
        run_id = next((run for line, _, run in self._lines if line == key), None)
        if run_id is None:
            self.dashboard.notify("this entry belongs to no run", severity="warning")
            return
        self.dashboard.open_run(run_id)

    def action_follow(self) -> None:
        """Jump to the newest line and follow new ones again."""
        table = self._table()
        self.following = True
        if table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._note()

    def _table(self) -> DataTable[Text]:
        return self.query_one("#log", DataTable)


def _cells(item: LogEntry, now: datetime) -> list[Text]:
    entry = item.entry
    level = entry.data.get("level") if isinstance(entry.data, dict) else None
    style = LEVEL_STYLES.get(str(level), "") if level else ""
    if entry.kind.endswith(("failed", "timed_out")):
        style = "bold red"
    return [
        literal(timestamp(entry.at, now), single_line=True),
        literal(short_id(item.run_id) if item.run_id else "-", "bold", single_line=True),
        literal(item.workflow_id or "-", single_line=True, limit=24),
        literal(entry.kind, single_line=True, limit=24),
        literal(entry.step or "", single_line=True, limit=24),
        literal(entry.message or "", style, single_line=True, limit=200),
    ]

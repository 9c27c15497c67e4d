"""Recent events, and what each one did: the runs it started, resumed, buffered or signalled."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input

from orchestrator.journal import DashboardViews, EventView

from .format import compact_json, literal, short_id, timestamp
from .keybar import KeyBar
from .live import JournalBanner, LiveScreen
from .tables import Table, selected_key, sync_rows
from .values import Value, pretty, record, when

EVENT_LIMIT: Final = 200
COLUMNS: Final = ("at", "type", "event", "source", "outcome", "data")


class EventsScreen(LiveScreen):
    """The latest events, newest first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Filter by type"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.recent: list[EventView] = []
        self._type_filter = ""

    def compose(self) -> ComposeResult:
        """Banner, the type filter, the table."""
        yield JournalBanner(id="banner")
        yield Input(placeholder="filter by event type", id="event-search")
        yield Table(id="events", cursor_type="row", zebra_stripes=True)
        yield KeyBar()

    def on_mount(self) -> None:
        """Columns."""
        table = self.query_one("#events", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        table.focus()

    async def load(self, queries: DashboardViews) -> None:
        """The latest events and their routes."""
        self.recent = await queries.recent_events(
            limit=EVENT_LIMIT, type_contains=self._type_filter
        )
        now = self.dashboard.now()
        rows = [(e.event_id, _cells(e, now)) for e in self.recent]
        sync_rows(self.query_one("#events", DataTable), rows)

    async def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as you type."""
        self._type_filter = event.value.strip()
        await self.reload()

    def on_input_submitted(self) -> None:
        """Enter goes back to the table."""
        self.query_one("#events", DataTable).focus()

    def action_focus_search(self) -> None:
        """Type to filter."""
        self.query_one("#event-search", Input).focus()

    def current_value(self) -> Value | None:
        """The event under the cursor, in full, data included."""
        key = selected_key(self.query_one("#events", DataTable))
        chosen = next((e for e in self.recent if e.event_id == key), None)
        if chosen is None:
            return None
        text = record(
            ("event", chosen.event_id),
            ("type", chosen.type),
            ("source", chosen.source),
            ("at", when(chosen.created_at)),
            ("routed", when(chosen.routed_at)),
            ("outcome", "\n".join(outcome(chosen).split("; "))),
            ("data", pretty(chosen.data)),
        )
        return f"event {chosen.type}", text

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter opens the first run this event started or resumed."""
        key = selected_key(event.data_table)
        chosen = next((e for e in self.recent if e.event_id == key), None)
        if chosen is None or not chosen.routes:
            self.notify("this event did not reach any run", severity="warning")
            return
        self.dashboard.open_run(chosen.routes[0].run_id)


def outcome(event: EventView) -> str:
    """What the event did, in words."""
    if event.routes:
        return "; ".join(f"{r.action} {short_id(r.run_id)} ({r.workflow_id})" for r in event.routes)
    if event.routed_at is None:
        return "not routed yet"
    return "no trigger or wait matched"


def _cells(event: EventView, now: datetime) -> list[Text]:
    style = "" if event.routes else "grey50"
    return [
        literal(timestamp(event.created_at, now)),
        literal(event.type, "bold", single_line=True, limit=40),
        literal(short_id(event.event_id)),
        literal(event.source, single_line=True),
        literal(outcome(event), style, single_line=True, limit=80),
        literal(compact_json(event.data, 120), "grey50", single_line=True),
    ]

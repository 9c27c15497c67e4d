"""Workflows registered by the daemon, their triggers and modes, and files that failed to load.

A disabled workflow (or trigger) says so; ``d`` disables the selected workflow, or enables
it again, through the journal's commands (the daemon applies it). Each workflow's figures
(runs and failures in the last 24 hours, the p95 duration of its last 100 completed runs,
its next scheduled fire) are bounded reads of the journal (`workflow_figures`), read again
after the journal changed, at most every `FIGURES_SECONDS`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Label, Static

from orchestrator.define.conditions import Conditions
from orchestrator.errors import DefinitionError
from orchestrator.journal import (
    FIGURES_CAP,
    FIGURES_RECENT,
    DashboardViews,
    LoadErrorView,
    WorkflowFigures,
    WorkflowView,
)
from orchestrator.records import RunStatus

from .format import compact_json, duration, literal, status_style, timestamp
from .keybar import KeyBar
from .live import JournalBanner, LiveScreen
from .tables import Table, selected_key, sync_rows
from .values import Value, record, when

FIGURES_SECONDS: Final = 5.0  # the figures are read again at most this often
WINDOW: Final = timedelta(hours=24)  # runs and failures are counted over this much time
COLUMNS: Final = (
    ("workflow", "workflow"),
    ("state", "state"),
    ("runs 24h", "runs"),
    ("failed 24h", "failed"),
    (f"p95 last {FIGURES_RECENT}", "p95"),
    ("next fire", "next"),
    ("triggers", "triggers"),
    ("mode", "mode"),
    ("version", "version"),
    ("file", "file"),
)


class WorkflowsScreen(LiveScreen):
    """What is loaded, and what is broken."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "switch", "Disable/Enable", priority=True),  # see live.RunScreen
    ]

    def __init__(self) -> None:
        super().__init__()
        self._disabled: set[str] = set()  # the workflows shown disabled, by id
        self._workflows: list[WorkflowView] = []
        self._errors: list[LoadErrorView] = []
        self.figures: dict[str, WorkflowFigures] = {}
        self._figured = -1  # the source's change count when the figures were read
        self._figures_due = 0.0  # monotonic time before which they are not read again

    def compose(self) -> ComposeResult:
        """Banner, workflows, load errors."""
        yield JournalBanner(id="banner")
        yield Label("Workflows", classes="section")
        yield Table(id="workflows", cursor_type="row", zebra_stripes=True)
        yield Label("Load errors", classes="section")
        yield Table(id="errors", cursor_type="row", zebra_stripes=True)
        yield Static(id="errors-note")
        yield KeyBar()

    def on_mount(self) -> None:
        """Columns."""
        workflows = self.query_one("#workflows", DataTable)
        for label, key in COLUMNS:
            workflows.add_column(label, key=key)
        errors = self.query_one("#errors", DataTable)
        for column in ("file", "line", "message", "at"):
            errors.add_column(column, key=column)
        workflows.focus()

    async def load(self, queries: DashboardViews) -> None:
        """Both lists."""
        workflows = await queries.workflows()
        errors = await queries.load_errors()
        now = self.dashboard.now()
        if self._figures_stale():
            self._figured = self.dashboard.source.changes
            self._figures_due = time.monotonic() + FIGURES_SECONDS
            found = await queries.workflow_figures(now - WINDOW)
            self.figures = {f.workflow_id: f for f in found}
        self._disabled = {w.workflow_id for w in workflows if w.disabled_at is not None}
        self._workflows, self._errors = workflows, errors
        rows = [(w.workflow_id, _cells(w, self.figures.get(w.workflow_id), now)) for w in workflows]
        sync_rows(self.query_one("#workflows", DataTable), rows)
        sync_rows(
            self.query_one("#errors", DataTable), [(e.file, _error_cells(e, now)) for e in errors]
        )
        note = "no load errors" if not errors else f"{len(errors)} file(s) failed to load"
        self.query_one("#errors-note", Static).update(literal(note, "grey50"))

    def current_value(self) -> Value | None:
        """The workflow, or the load error, under the cursor, in full."""
        if self.focused is not None and self.focused.id == "errors":
            key = selected_key(self.query_one("#errors", DataTable))
            error = next((e for e in self._errors if e.file == key), None)
            if error is None:
                return None
            fields = (("file", error.file), ("line", error.line), ("at", when(error.at)))
            return f"load error in {error.file}", record(*fields, ("message", error.message))
        key = selected_key(self.query_one("#workflows", DataTable))
        flow = next((w for w in self._workflows if w.workflow_id == key), None)
        if flow is None:
            return None
        triggers = triggers_text(flow.triggers, flow.disabled_triggers).replace("; ", "\n")
        text = record(
            ("workflow", flow.workflow_id),
            ("version", flow.version),
            ("mode", flow.mode),
            ("file", flow.file),
            ("loaded", when(flow.loaded_at)),
            ("disabled", when(flow.disabled_at) if flow.disabled_at else "no"),
            ("triggers", triggers),
        )
        return f"workflow {flow.workflow_id}", text

    def tick(self) -> None:
        """Figures held back by `FIGURES_SECONDS` after a change are read once it passed."""
        if self._figures_stale():
            self.run_worker(self.reload(), group="figures", exclusive=True)

    def _figures_stale(self) -> bool:
        """The journal changed since the figures were read, and `FIGURES_SECONDS` passed."""
        changed = self.dashboard.source.changes != self._figured
        return changed and time.monotonic() >= self._figures_due

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In a read-only dashboard the switch key is hidden (and refused)."""
        return not (action == "switch" and self.dashboard.read_only)

    async def action_switch(self) -> None:
        """Disable the selected workflow, or enable it if it is disabled (after a question)."""
        workflow = selected_key(self.query_one("#workflows", DataTable))
        if workflow is None:
            self.dashboard.notify("no workflow selected", severity="warning")
            return
        command = "enable" if workflow in self._disabled else "disable"
        await self.dashboard.actions.run(command, workflow=workflow)


def _cells(workflow: WorkflowView, figures: WorkflowFigures | None, now: datetime) -> list[Text]:
    return [
        literal(workflow.workflow_id, "bold", single_line=True),
        _state(workflow),
        *_figure_cells(figures, now),
        literal(
            triggers_text(workflow.triggers, workflow.disabled_triggers),
            single_line=True,
            limit=120,
        ),
        literal(workflow.mode, single_line=True, limit=50),
        literal(workflow.version, single_line=True),
        literal(workflow.file or "-", single_line=True),
    ]


def _figure_cells(figures: WorkflowFigures | None, now: datetime) -> list[Text]:
    """Runs and failures in the window, p95 duration, next fire (``…`` until read)."""
    if figures is None:
        return [literal("…", "grey50") for _ in range(4)]
    p95 = figures.p95
    return [
        literal(_count(figures.runs)),
        literal(_count(figures.failed), "bold red" if figures.failed else "grey50"),
        literal("-" if p95 is None else duration(p95), "" if p95 is not None else "grey50"),
        literal(next_fire(figures.next_fire, now)),
    ]


def _count(count: int) -> str:
    return f"{FIGURES_CAP:,}+" if count > FIGURES_CAP else f"{count:,}"


def next_fire(when: datetime | None, now: datetime) -> str:
    """``14:05:00 (in 3m12s)``; ``due`` once passed; ``-`` without an armed schedule."""
    if when is None:
        return "-"
    if when <= now:
        return f"{timestamp(when, now)} (due)"
    return f"{timestamp(when, now)} (in {duration((when - now).total_seconds())})"


def _state(workflow: WorkflowView) -> Text:
    if workflow.disabled_at is not None:
        return literal("disabled", status_style(RunStatus.DROPPED))  # off, not a failure
    if workflow.disabled_triggers:
        return literal(f"{len(workflow.disabled_triggers)} trigger(s) disabled", "yellow")
    return literal("enabled", status_style(RunStatus.COMPLETED))


def _error_cells(error: LoadErrorView, now: datetime) -> list[Text]:
    return [
        literal(error.file, single_line=True),
        literal("-" if error.line is None else str(error.line)),
        literal(error.message, status_style(RunStatus.FAILED), single_line=True, limit=200),
        literal(timestamp(error.at, now)),
    ]


def triggers_text(triggers: Any, disabled: frozenset[str] = frozenset()) -> str:
    """Triggers as one line: ``new: event order.created where total > 0; nightly: cron ...``.

    A trigger in `disabled` ends with `` (disabled)``.
    """
    if not isinstance(triggers, list):
        return compact_json(triggers)
    shown = []
    for trigger in triggers:
        text = _trigger(trigger)
        if isinstance(trigger, dict) and trigger.get("trigger_id") in disabled:
            text += " (disabled)"
        shown.append(text)
    return "; ".join(shown) or "-"


def _trigger(trigger: Any) -> str:
    if not isinstance(trigger, dict):
        return compact_json(trigger)
    name, kind = trigger.get("trigger_id", "?"), trigger.get("type")
    if kind == "event":
        where = _where(trigger.get("where"))
        return f"{name}: event {trigger.get('event')}" + (f" where {where}" if where else "")
    if kind == "schedule":
        tz = f" {trigger['tz']}" if trigger.get("tz") else ""
        return f"{name}: cron {trigger.get('cron')}{tz}"
    if kind == "file":
        return f"{name}: files {trigger.get('dir')}/{trigger.get('glob')}"
    if kind == "invoke":
        return f"{name}: invoke"
    return f"{name}: {compact_json(trigger)}"


def _where(where: Any) -> str:
    if not where:
        return ""
    try:
        return Conditions.from_json(where, label="trigger").describe()
    except DefinitionError:
        return compact_json(where)

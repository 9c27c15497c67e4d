"""One run: its summary and error, its timeline, states and diffs, wait, parent and children.

A fan-out's progress (how many children are final, how many failed) is in the summary and
the Children tab; Enter on a child opens it, ``p`` opens the parent.

The screen re-queries only when the run's fingerprint (status, progress, last timeline
row, waits, last event, its children's last change) changed, so a busy journal costs one
small query per change.
The state tree is rebuilt only when another checkpoint is selected or that checkpoint
changed, so expanding nodes survives refreshes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static, TabbedContent, TabPane, Tree

from orchestrator.journal import DashboardViews, RunDetail, RunRow
from orchestrator.records import FINAL_STATUSES, Checkpoint, TimelineEntry

from .format import join, literal, run_duration, status_text, timestamp
from .jsonview import TREE_BUDGET, diff, diff_text, fill_tree
from .keybar import KeyBar
from .live import JournalBanner, RunScreen, show
from .runs import run_record
from .tables import Table, ValueTree, selected_key, sync_rows
from .timeline import COLUMNS as TIMELINE_COLUMNS
from .timeline import timeline_rows
from .values import Value, pretty, record, when
from .waits import explain_waits


class RunDetailScreen(RunScreen):
    """Everything about one run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("t", "tab('timeline')", "Timeline"),
        Binding("s", "tab('state')", "State"),
        Binding("w", "tab('wait')", "Wait"),
        Binding("h", "tab('children')", "Children"),
        Binding("b", "tab('traceback')", "Traceback"),
        Binding("p", "parent", "Parent"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.detail: RunDetail | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._shown_checkpoint: tuple[int, datetime, str] | None = None

    def compose(self) -> ComposeResult:
        """Summary on top, then tabs."""
        yield JournalBanner(id="banner")
        yield Static(literal(f"run {self.run_id}", "bold"), id="summary")
        with TabbedContent(initial="timeline"):
            with TabPane("Timeline", id="timeline"):
                yield Table(id="timeline-table", cursor_type="row", zebra_stripes=True)
            with TabPane("State", id="state"), Horizontal():
                yield Table(id="checkpoints", cursor_type="row")
                with Vertical(id="state-panes"):
                    yield ValueTree(Text("state"), id="state-tree")
                    with VerticalScroll(id="diff-scroll"):
                        yield Static(id="diff")
            with TabPane("Wait", id="wait"), VerticalScroll():
                yield Static(id="wait-text")
            with TabPane("Children", id="children"), Vertical():
                yield Static(id="children-text")
                yield Table(id="children-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Traceback", id="traceback"), VerticalScroll():
                yield Static(id="traceback-text")
        yield KeyBar()

    def on_mount(self) -> None:
        """Columns of the two tables."""
        timeline = self.query_one("#timeline-table", DataTable)
        for column in TIMELINE_COLUMNS:
            timeline.add_column(column, key=column)
        checkpoints = self.query_one("#checkpoints", DataTable)
        for column in ("#", "kind", "step", "at"):
            checkpoints.add_column(column, key=column)
        children = self.query_one("#children-table", DataTable)
        for column in CHILD_COLUMNS:
            children.add_column(column, key=column)

    def current_run_id(self) -> str | None:
        """This run."""
        return self.run_id

    def current_run_status(self) -> str | None:
        """This run's status, once it is read."""
        return str(self.detail.run.status) if self.detail is not None else None

    async def load(self, queries: DashboardViews) -> None:
        """Re-read the run if anything about it changed."""
        fingerprint = await queries.run_fingerprint(self.run_id)
        if fingerprint is None:
            self._summary().update(literal(f"no run {self.run_id} in this journal", "bold red"))
            return
        if fingerprint == self._fingerprint:
            return
        detail = await queries.run_detail(self.run_id)
        if detail is None:
            return
        self.detail = detail
        self._draw(detail)
        self._fingerprint = fingerprint  # only once drawn: a failed draw is tried again

    def tick(self) -> None:
        """The duration of a run that has not ended grows."""
        if self.detail is not None:
            show(self._summary(), _summary(self.detail, self.dashboard.now()))

    def action_back(self) -> None:
        """Back to the list."""
        self.dismiss()

    def action_tab(self, tab: str) -> None:
        """Show a tab."""
        self.query_one(TabbedContent).active = tab

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``p`` is offered only for a run a step started."""
        if action == "parent":
            return self.detail is not None and self.detail.parent is not None
        return super().check_action(action, parameters)

    def action_parent(self) -> None:
        """Open the run whose step started this one."""
        if self.detail is not None and self.detail.parent is not None:
            self.app.push_screen(RunDetailScreen(self.detail.parent))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a child: open it."""
        if event.data_table.id == "children-table" and event.row_key.value is not None:
            self.app.push_screen(RunDetailScreen(event.row_key.value))

    def current_value(self) -> Value | None:
        """What has the focus, in full.

        A timeline row, a state node, a checkpoint or a child; else the run itself (its
        error and traceback whole).
        """
        detail, focused = self.detail, self.focused
        if detail is None:
            return None
        where = focused.id if focused is not None else None
        if isinstance(focused, ValueTree) and focused.cursor_node is not None:
            node = focused.cursor_node
            return str(node.label)[:200], pretty(node.data)
        if isinstance(focused, DataTable):
            key = selected_key(focused)
            if where == "timeline-table" and key is not None:
                return _entry_value(detail.timeline[int(key)])
            if where == "checkpoints" and key is not None:
                point = next(c for c in detail.checkpoints if str(c.position) == key)
                return f"state after #{point.position} {point.step or point.kind}", pretty(
                    point.state
                )
            child = next((c for c in detail.children if c.run_id == key), None)
            if where == "children-table" and child is not None:
                return f"run {child.run_id}", run_record(child)
        text = run_record(detail.run)
        trace = last_traceback(detail)
        if trace is not None:
            text += "\n\n" + trace
        return f"run {detail.run.run_id}", text

    async def on_tree_node_selected(self, event: Tree.NodeSelected[Any]) -> None:
        """Enter on a leaf of the state: its value in full."""
        if not event.node.children and event.node.parent is not None:
            await self.action_view()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Another checkpoint: show its state and what changed."""
        if event.data_table.id == "checkpoints":
            self._show_state()

    def _draw(self, detail: RunDetail) -> None:
        now = self.dashboard.now()
        self._summary().update(_summary(detail, now))
        sync_rows(self.query_one("#timeline-table", DataTable), timeline_rows(detail.timeline, now))
        table: DataTable[Text] = self.query_one("#checkpoints", DataTable)
        first = table.row_count == 0
        sync_rows(table, [(str(c.position), _checkpoint_cells(c, now)) for c in detail.checkpoints])
        if first and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._show_state()
        wait = explain_waits(detail.waits, detail.run.status, now)
        self.query_one("#wait-text", Static).update(wait)
        self.query_one("#children-text", Static).update(_children_text(detail))
        self.query_one("#traceback-text", Static).update(traceback_text(detail))
        sync_rows(
            self.query_one("#children-table", DataTable),
            [(child.run_id, _child_cells(child, now)) for child in detail.children],
        )
        self.offer_actions()

    def _show_state(self) -> None:
        if self.detail is None:
            return
        key = selected_key(self.query_one("#checkpoints", DataTable))
        checkpoints = self.detail.checkpoints
        index = next((i for i, c in enumerate(checkpoints) if str(c.position) == key), None)
        if index is None:
            return
        current = checkpoints[index]
        shown = (current.position, current.ended_at, current.kind)
        if shown == self._shown_checkpoint:
            return
        self._shown_checkpoint = shown
        tree: ValueTree = self.query_one("#state-tree", ValueTree)
        tree.clear()
        tree.root.data = current.state
        tree.root.set_label(
            literal(f"state after #{current.position} {current.step or current.kind}")
        )
        left = fill_tree(tree.root, current.state)
        if left > TREE_BUDGET - 100:  # small: open it all
            tree.root.expand_all()
        else:
            tree.root.expand()
        self.query_one("#diff", Static).update(_diff_of(checkpoints, index))

    def _summary(self) -> Static:
        return self.query_one("#summary", Static)


def _summary(detail: RunDetail, now: datetime) -> Text:
    run = detail.run
    lines = [
        join(literal("run "), literal(run.run_id, "bold"), "  ", status_text(run.status)),
        join(
            literal("workflow "),
            literal(run.workflow_id, "bold"),
            literal(" · trigger "),
            literal(run.trigger_id, "bold"),
            literal(" · version "),
            literal(run.version, "bold"),
            literal(" · step "),
            literal(run.step or "-", "bold"),
        ),
        literal(
            f"started {timestamp(run.created_at, now)} · updated {timestamp(run.updated_at, now)}"
            f" · duration {run_duration(run.created_at, run.updated_at, run.status, now)}",
            "grey50",
        ),
    ]
    if detail.forked_from is not None:
        origin = detail.forked_from
        lines.append(
            join(
                literal("forked from run "),
                literal(origin["run_id"], "bold"),
                literal(" at step "),
                literal(origin["step"], "bold"),
            )
        )
    if detail.parent is not None:
        lines.append(
            join(literal("started by run "), literal(detail.parent, "bold"), literal(" (p)"))
        )
    if detail.children_total:
        lines.append(join(literal("children "), progress(detail), literal(" (h)")))
    if run.error:
        code = literal(run.error_code or "ERROR", "bold red")
        lines.append(join(literal("error "), code, ": ", literal(run.error, "red")))
        if last_traceback(detail) is not None:
            lines.append(literal("traceback (b)", "grey50"))
    return Text("\n").join(lines)


def _entry_value(entry: TimelineEntry) -> Value:
    text = record(
        ("at", when(entry.at)),
        ("kind", entry.kind),
        ("source", entry.source),
        ("step", entry.step),
        ("message", entry.message),
        ("data", pretty(entry.data) if entry.data is not None else None),
    )
    return f"{entry.kind} at {when(entry.at)}", text


def last_traceback(detail: RunDetail) -> str | None:
    """The traceback of the run's last failed step (``data["traceback"]``), if any."""
    for entry in reversed(detail.timeline):
        trace = (entry.data or {}).get("traceback") if entry.kind == "step.failed" else None
        if isinstance(trace, str) and trace:
            return trace
    return None


def traceback_text(detail: RunDetail) -> Text:
    """The Traceback tab: where the failed step raised (the user's frames), or why none."""
    trace = last_traceback(detail)
    if trace is None:
        return literal("no traceback: no step of this run raised", "grey50")
    return literal(trace.rstrip("\n"), "red")


CHILD_COLUMNS = ("run", "workflow", "trigger", "status", "step", "updated")


def progress(detail: RunDetail) -> Text:
    """A fan-out's progress: how many children are final, and how many did not complete."""
    counts = detail.children_by_status
    final = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
    failed = sum(
        n for status, n in counts.items() if status in FINAL_STATUSES and status != "completed"
    )
    text = literal(f"{final} of {detail.children_total} final", "bold")
    if failed:
        text = join(text, literal(" · "), literal(f"{failed} failed or aborted", "bold red"))
    return text


def _children_text(detail: RunDetail) -> Text:
    if not detail.children_total:
        return literal("no step of this run started a child run (ctx.start)", "grey50")
    counts = ", ".join(f"{n} {status}" for status, n in sorted(detail.children_by_status.items()))
    lines = [join(progress(detail), literal(f" ({counts}) · Enter opens a child", "grey50"))]
    if detail.children_total > len(detail.children):
        shown = f"the first {len(detail.children)} of {detail.children_total} are listed"
        lines.append(literal(shown, "grey50"))
    return Text("\n").join(lines)


def _child_cells(child: RunRow, now: datetime) -> list[Text]:
    return [
        literal(child.run_id),
        literal(child.workflow_id, single_line=True),
        literal(child.trigger_id, single_line=True),
        status_text(str(child.status)),
        literal(child.step or "-", single_line=True),
        literal(timestamp(child.updated_at, now)),
    ]


def _checkpoint_cells(checkpoint: Checkpoint, now: datetime) -> list[Text]:
    return [
        literal(str(checkpoint.position)),
        literal(checkpoint.kind, single_line=True),
        literal(
            checkpoint.step or ("input" if checkpoint.position == 0 else "-"), single_line=True
        ),
        literal(timestamp(checkpoint.ended_at, now)),
    ]


def _diff_of(checkpoints: list[Checkpoint], index: int) -> Text:
    if index == 0:
        return literal("the run's input", "grey50")
    before, after = checkpoints[index - 1], checkpoints[index]
    title = literal(f"changes from #{before.position} to #{after.position}:\n", "bold")
    return join(title, diff_text(diff(before.state, after.state)))

"""The dashboard, driven with Textual's Pilot against real journals written by a real runtime.

One journal is seeded once per session (runs that complete, fail, pause; events that
started, resumed or matched nothing); each test works on its own copy. Waits poll the app
(`until`) with a generous bound: nothing here asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pilots import copy_journal, until
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import (
    DataTable,
    Input,
    OptionList,
    Select,
    Static,
    TabbedContent,
    TextArea,
    Tree,
)

from orchestrator import Runtime, Trigger, Workflow, WorkflowDisabled
from orchestrator.testing import eventually
from tui.app import DashboardApp
from tui.detail import RunDetailScreen
from tui.dialogs import ConfirmDialog, ForkDialog, HelpScreen, JsonDialog, parse_object
from tui.format import clean, duration, literal
from tui.jsonview import diff
from tui.keybar import KeyBar
from tui.live import JournalBanner
from tui.runs import RunsScreen
from tui.workflows import WorkflowsScreen

SIZE = (140, 40)
MARKUP_LOG = "[bold red]x[/] reserving"
MARKUP_STATE = "[link=https://evil.example]click[/link]"


def reserve(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.log.info("%s %s", MARKUP_LOG, state["order_id"])
    return {**state, "reserved": True}


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="payment.received",
        where={"order_id": ("==", state["order_id"]), "amount": (">", 10)},
        into="payment",
    )


def ship(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "shipped": True}


def boom(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("card [red]declined[/red]")


def label(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "note": MARKUP_STATE}


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created")},
    pipelines={"new": [reserve, wait_for_payment, ship], "charge": [ship, boom]},
)
LABELS = Workflow(id="labels", triggers={}, pipelines={"print": [label]})


async def _seed(db: Path) -> dict[str, str]:
    async with Runtime(db, workflows=[ORDERS, LABELS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 1})
        await rt.emit("payment.received", {"order_id": 1, "amount": 5})
        await rt.emit("payment.received", {"order_id": 2, "amount": 50})
        failed = await rt.invoke("orders", "charge", {"order_id": 2})
        done = await rt.invoke("orders", "new", {"order_id": 3})
        await rt.emit("payment.received", {"order_id": 3, "amount": 50})
        await rt.wait(done.run_id, timeout=10)
        labelled = await rt.invoke("labels", "print", {"order_id": 4})
        await rt.emit("order.created", {"order_id": 5})  # starts a run that pauses too
        await rt.emit("nobody.listens", {"x": 1})
        assert (paused.status, failed.status, labelled.status) == ("paused", "failed", "completed")
        ids = {
            "paused": paused.run_id,
            "failed": failed.run_id,
            "done": done.run_id,
            "labelled": labelled.run_id,
        }
        (triggered,) = [r.run_id for r in await rt.list_runs() if r.run_id not in ids.values()]
        ids["triggered"] = triggered
        await rt.wait(triggered, timeout=10)
    return ids


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    db = tmp_path_factory.mktemp("tui") / "template.db"
    return db, asyncio.run(_seed(db))


@pytest.fixture
def journal(template: tuple[Path, dict[str, str]], db: Path) -> Path:
    """A private copy of the seeded journal."""
    copy_journal(template[0], db)
    return db


@pytest.fixture
def ids(template: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return template[1]


def keys(table: DataTable[Any]) -> list[str]:
    return [row.key.value for row in table.ordered_rows if row.key.value is not None]


def row_text(table: DataTable[Any], key: str) -> str:
    return " | ".join(_plain(cell) for cell in table.get_row(key))


def table_text(table: DataTable[Any]) -> str:
    return "\n".join(row_text(table, key) for key in keys(table))


def static_text(widget: Static) -> str:
    return _plain(widget.content)


def rendered(widget: Any) -> str:
    """What the widget draws on screen, line by line."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


def _plain(value: object) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def runs_table(app: DashboardApp) -> DataTable[Any]:
    return app.screen.query_one("#runs", DataTable)


def rows_of(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def open_run(pilot: Pilot[Any], app: DashboardApp, run_id: str) -> RunDetailScreen:
    await until(pilot, lambda: run_id in keys(runs_table(app)), "the run in the list")
    table = runs_table(app)
    table.move_cursor(row=keys(table).index(run_id))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run screen")
    screen = app.screen
    assert isinstance(screen, RunDetailScreen)
    await until(pilot, lambda: screen.detail is not None, "the run's detail")
    return screen


# --- the runs screen --------------------------------------------------------------------


async def test_runs_appear_with_status_counts(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "five runs")
        table = runs_table(app)
        assert set(keys(table)) == set(ids.values())
        assert keys(table)[0] == ids["triggered"]  # newest first
        assert "paused" in row_text(table, ids["paused"])
        failed = row_text(table, ids["failed"])
        assert "failed" in failed and "STEP_FAILED" in failed and "boom" in failed
        counts = static_text(app.screen.query_one("#counts", Static))
        assert "all runs 5" in counts and "paused 2" in counts and "completed 2" in counts
        assert "failed 1" in counts
        banner = static_text(app.screen.query_one(JournalBanner))
        assert str(journal) in banner and "no daemon" in banner


async def test_a_new_run_appears_live_and_the_cursor_stays_on_its_run(
    journal: Path, ids: dict[str, str]
) -> None:
    async with Runtime(journal, workflows=[ORDERS, LABELS]) as rt:
        app = DashboardApp(journal)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(keys(runs_table(app))) == 5, "five runs")
            await until(pilot, lambda: app.daemon is not None, "the daemon in the banner")
            await pilot.press("down")
            chosen = keys(runs_table(app))[1]
            result = await rt.invoke("labels", "print", {"order_id": 9})
            await until(pilot, lambda: len(keys(runs_table(app))) == 6, "the new run")
            table = runs_table(app)
            assert keys(table)[0] == result.run_id
            assert keys(table)[table.cursor_row] == chosen
            assert app.screen.current_run_id() == chosen  # type: ignore[attr-defined]
            assert "daemon pid" in static_text(app.screen.query_one(JournalBanner))


async def test_filters_search_and_sort_narrow_and_order_the_table(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "five runs")
        screen = app.screen
        screen.query_one("#status", Select).value = "failed"
        await until(pilot, lambda: keys(runs_table(app)) == [ids["failed"]], "failed only")
        await pilot.press("f")  # next status after failed
        await until(pilot, lambda: keys(runs_table(app)) == [], "no aborted runs")
        assert "no run matches" in static_text(screen.query_one("#pager", Static))
        await pilot.press("escape")  # clear every filter
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "all runs again")

        screen.query_one("#workflow", Select).value = "labels"
        await until(pilot, lambda: keys(runs_table(app)) == [ids["labelled"]], "labels only")
        counts = static_text(screen.query_one("#counts", Static))
        assert "runs of labels 1" in counts
        await pilot.press("escape")

        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"declined")  # in the failed run's error
        await until(pilot, lambda: keys(runs_table(app)) == [ids["failed"]], "search on error")
        search = screen.query_one("#search", Input)
        search.value = ids["paused"][:10]  # a run id prefix
        await until(pilot, lambda: keys(runs_table(app)) == [ids["paused"]], "search on id")
        search.value = "%"  # LIKE wildcards are searched literally
        await until(pilot, lambda: keys(runs_table(app)) == [], "literal %")
        search.value = ""
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "all runs again")

        newest = keys(runs_table(app))
        await pilot.press("enter", "o")  # back to the table, then sort: oldest
        await until(pilot, lambda: keys(runs_table(app)) == newest[::-1], "oldest first")


async def test_pages_turn_with_brackets(
    journal: Path, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tui.runs

    monkeypatch.setattr(tui.runs, "PAGE_SIZE", 3)
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 3, "a page of three")
        first = keys(runs_table(app))
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: len(keys(runs_table(app))) == 2, "the last page")
        assert keys(runs_table(app))[-1] == ids["paused"] and ids["paused"] not in first
        assert "runs 4-5 of 5" in static_text(app.screen.query_one("#pager", Static))
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: keys(runs_table(app)) == first, "the first page")


async def test_durations_follow_the_injected_clock(journal: Path, ids: dict[str, str]) -> None:
    (created,) = rows_of(journal, "SELECT created_at FROM runs WHERE run_id = ?", (ids["paused"],))[
        0
    ]
    from orchestrator.clock import to_datetime

    frozen = to_datetime(created) + timedelta(minutes=4, seconds=5)
    app = DashboardApp(journal, now=lambda: frozen)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: ids["paused"] in keys(runs_table(app)), "the paused run")
        cells = runs_table(app).get_row(ids["paused"])
        assert _plain(cells[6]) == "4m05s"  # a paused run's duration runs until now


# --- one run --------------------------------------------------------------------------


async def test_detail_shows_summary_error_timeline_states_and_diff(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["failed"])
        summary = static_text(screen.query_one("#summary", Static))
        assert ids["failed"] in summary and "failed" in summary
        assert "STEP_FAILED" in summary and "card [red]declined[/red]" in summary
        (version,) = rows_of(
            journal, "SELECT version FROM runs WHERE run_id = ?", (ids["failed"],)
        )[0]
        assert f"version {version}" in summary
        timeline = table_text(screen.query_one("#timeline-table", DataTable))
        assert "run.started" in timeline and "step.completed" in timeline
        assert "step.failed" in timeline and "run.failed" in timeline and "█" in timeline

    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["done"])
        timeline = table_text(screen.query_one("#timeline-table", DataTable))
        assert "run.paused" in timeline and "run.resumed" in timeline and "info" in timeline
        await pilot.press("s")
        checkpoints = screen.query_one("#checkpoints", DataTable)
        assert keys(checkpoints) == ["0", "1", "2", "3", "4"]  # input, 2 steps, resume, ship
        assert "resume" in row_text(checkpoints, "3")
        tree = screen.query_one("#state-tree", Tree)
        labels = [_plain(node.label) for node in _walk(tree.root)]
        assert "shipped: true" in labels and "amount: 50" in labels
        assert "+ shipped: true" in static_text(screen.query_one("#diff", Static))
        checkpoints.move_cursor(row=3)  # the resume: the payment came in
        await until(
            pilot,
            lambda: "+ payment:" in static_text(screen.query_one("#diff", Static)),
            "the resume's diff",
        )
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back to the list")


class HeldMount(RunDetailScreen):
    """A run screen whose mount waits for `release` (a slow machine, held still)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.composed, self.release = asyncio.Event(), asyncio.Event()

    async def on_mount(self) -> None:
        """Wait; then RunDetailScreen.on_mount adds the tables' columns."""
        self.composed.set()
        await self.release.wait()


async def test_a_run_opened_as_the_journal_changes_shows_all_of_it(
    journal: Path, ids: dict[str, str]
) -> None:
    """The poll reloads the screen on top, which may be one not yet mounted.

    That reload used to draw into tables that had no columns yet: the draw failed, was
    remembered as done, and the timeline and children stayed empty until the run changed.
    """
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the list")
        screen = HeldMount(ids["failed"])
        app.push_screen(screen)
        await eventually(screen.composed.is_set, what="the screen composed")
        assert app.screen is screen and not screen.is_mounted
        await screen.reload()  # as the poll does when something was committed
        screen.release.set()
        timeline = screen.query_one("#timeline-table", DataTable)
        await until(pilot, lambda: timeline.row_count > 0, "the run's timeline")
        assert "run.failed" in table_text(timeline)
        assert ids["failed"] in static_text(screen.query_one("#summary", Static))


async def test_a_failed_run_shows_its_traceback(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["failed"])
        assert "traceback (b)" in static_text(screen.query_one("#summary", Static))
        await pilot.press("b")
        assert screen.query_one(TabbedContent).active == "traceback"
        text = static_text(screen.query_one("#traceback-text", Static))
        assert f'{Path(__file__).name}", line' in text and "in boom" in text
        assert 'raise ValueError("card [red]declined[/red]")' in text  # the source, literally
        assert "orchestrator/engine" not in text

    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["done"])
        text = static_text(screen.query_one("#traceback-text", Static))
        assert "no traceback" in text


async def test_detail_explains_why_the_wait_has_not_matched(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["paused"])
        await pilot.press("w")
        text = static_text(screen.query_one("#wait-text", Static))
        assert "payment.received where order_id == 1 and amount > 10" in text
        assert "amount > 10 failed: actual 5 (false)" in text
        assert "order_id == 1 failed: actual 2 (false)" in text
        assert "order_id == 1 failed: actual 3 (false)" in text  # the one that resumed run 3

    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["done"])
        text = static_text(screen.query_one("#wait-text", Static))
        assert "not waiting: the run is completed" in text


async def test_journal_text_is_rendered_literally(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["done"])
        timeline = screen.query_one("#timeline-table", DataTable)
        assert f"{MARKUP_LOG} 3" in rendered(timeline)
        await pilot.press("escape")
        screen = await open_run(pilot, app, ids["labelled"])
        await pilot.press("s")
        tree = screen.query_one("#state-tree", Tree)
        await pilot.pause()
        assert f'note: "{MARKUP_STATE}"' in rendered(tree)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back to the list")
        assert "ValueError: card [red]decl" in rendered(runs_table(app))  # cut at 60
    assert literal("\x1b[31mred").plain == "\\x1b[31mred"  # no escape reaches the terminal
    assert clean("a\nb", single_line=True) == "a ⏎ b"


async def test_damaged_rows_are_shown_not_fatal(journal: Path, ids: dict[str, str]) -> None:
    conn = sqlite3.connect(journal)
    with conn:
        row = "(SELECT id FROM runs WHERE run_id = ?)"
        conn.execute(f"UPDATE checkpoints SET state = '{{oops' WHERE run = {row}", (ids["paused"],))
        conn.execute(f"UPDATE timeline SET data = 'not json' WHERE run = {row}", (ids["paused"],))
        conn.execute(f"UPDATE waits SET conditions = '7' WHERE run = {row}", (ids["paused"],))
        conn.execute("UPDATE workflows SET triggers = '[garbage'")
        conn.execute("UPDATE events SET data = 'nope'")
    conn.close()
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["paused"])
        assert "cannot be read" in static_text(screen.query_one("#wait-text", Static))
        tree = screen.query_one("#state-tree", Tree)
        assert any("{oops" in _plain(node.label) for node in _walk(tree.root))
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "workflows")
        workflows = app.screen.query_one("#workflows", DataTable)
        await until(pilot, lambda: "[garbage" in table_text(workflows), "raw triggers")
        await pilot.press("3")
        events = app.screen.query_one("#events", DataTable)
        await until(pilot, lambda: "nope" in table_text(events), "raw event data")
        assert app.is_running


# --- workflows and events --------------------------------------------------------------


async def test_workflows_screen_shows_workflows_and_load_errors(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "good.py").write_text(
        "from orchestrator import Workflow, Trigger\n"
        "def step(state):\n    return state\n"
        "flow = Workflow(id='good', triggers={'go': Trigger(event='go', where={'n': ('>', 1)})},"
        " pipelines={'go': [step]})\n"
    )
    (folder / "broken.py").write_text("x = 1\ndef oops(:\n")
    db = tmp_path / "folder.db"
    async with Runtime(db, workflows_dir=folder):
        pass
    app = DashboardApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "workflows")
        errors = app.screen.query_one("#errors", DataTable)
        await until(pilot, lambda: keys(errors), "a load error")
        broken = row_text(errors, str(folder / "broken.py"))
        assert "| 2 |" in broken and "syntax" in broken.lower()
        good = row_text(app.screen.query_one("#workflows", DataTable), "good")
        assert "go: event go where n > 1" in good and str(folder / "good.py") in good


async def test_disable_and_enable_from_the_workflows_screen(tmp_path: Path) -> None:
    db = tmp_path / "switch.db"
    async with Runtime(db, workflows=[ORDERS, LABELS]) as rt:
        app = DashboardApp(db)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "workflows")
            table = app.screen.query_one("#workflows", DataTable)
            await until(pilot, lambda: keys(table) == ["labels", "orders"], "two workflows")
            await pilot.press("down", "d")
            await _dialog(pilot, app, ConfirmDialog)
            await pilot.press("y")
            rows = await _inbox(pilot, db, 1)
            assert rows == [("disable", None, "orders", None, None)]
            await until(pilot, lambda: "| disabled |" in row_text(table, "orders"), "disabled")
            assert "| enabled |" in row_text(table, "labels")
            with pytest.raises(WorkflowDisabled):
                await rt.invoke("orders", "new", {"order_id": 1})
            await pilot.press("d")
            await _dialog(pilot, app, ConfirmDialog)
            await pilot.press("y")
            rows = await _inbox(pilot, db, 2)
            assert rows[1] == ("enable", None, "orders", None, None)
            await until(pilot, lambda: "| enabled |" in row_text(table, "orders"), "enabled")
            await rt.disable("orders", "charge")
            await until(
                pilot, lambda: "charge: invoke (disabled)" in row_text(table, "orders"), "trigger"
            )
            assert "1 trigger(s) disabled" in row_text(table, "orders")


async def test_events_screen_shows_what_each_event_did(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        table = app.screen.query_one("#events", DataTable)
        await until(pilot, lambda: len(keys(table)) == 5, "five events")
        text = table_text(table)
        assert f"resumed {ids['done'][:8]} (orders)" in text
        assert "started " in text and "no trigger or wait matched" in text
        first_started = next(k for k in keys(table) if "started" in row_text(table, k))
        table.move_cursor(row=keys(table).index(first_started))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run it started")
        assert app.current_mode == "runs"


# --- actions ------------------------------------------------------------------------


async def _dialog(pilot: Pilot[Any], app: DashboardApp, kind: type) -> Any:
    await until(pilot, lambda: isinstance(app.screen, kind), kind.__name__)
    return app.screen


async def _inbox(pilot: Pilot[Any], db: Path, count: int) -> list[tuple[Any, ...]]:
    query = "SELECT command, run_id, workflow_id, trigger_id, payload FROM inbox ORDER BY id"
    await until(pilot, lambda: len(rows_of(db, query)) >= count, f"{count} inbox rows")
    return rows_of(db, query)


async def test_abort_asks_then_queues_the_command(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["paused"])
        await pilot.press("a")
        await _dialog(pilot, app, ConfirmDialog)
        await pilot.press("n")  # no: nothing written
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "dialog closed")
        assert rows_of(journal, "SELECT * FROM inbox") == []
        await pilot.press("a")
        await _dialog(pilot, app, ConfirmDialog)
        await pilot.press("y")
        rows = await _inbox(pilot, journal, 1)
        assert rows == [("abort", ids["paused"], None, None, None)]


async def test_abort_of_a_run_queued_while_no_daemon_runs_ends_it_at_once(
    journal: Path, ids: dict[str, str]
) -> None:
    from orchestrator.journal import open_journal

    queued = open_journal(journal).commands.queue_invoke("orders", "new", {"order_id": 3})
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, queued)
        await pilot.press("a")
        await _dialog(pilot, app, ConfirmDialog)
        await pilot.press("y")
        status = "SELECT status FROM runs WHERE run_id = ?"
        await until(pilot, lambda: rows_of(journal, status, (queued,)) == [("aborted",)], "abort")
    # Ended here, in its own transaction: no abort command for a daemon to apply.
    commands = rows_of(journal, "SELECT command FROM inbox")
    assert commands == [("invoke",)]


async def test_resume_validates_the_patch_inline_then_queues_it(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["paused"])
        await pilot.press("r")
        dialog = await _dialog(pilot, app, JsonDialog)
        editor = dialog.query_one("#json", TextArea)
        editor.text = "[1, 2]"
        await pilot.press("ctrl+s")
        error = dialog.query_one("#error", Static)
        await until(pilot, lambda: "must be a JSON object" in static_text(error), "inline error")
        editor.text = '{"approved": tru'
        await pilot.click("#submit")
        await until(pilot, lambda: "not valid JSON" in static_text(error), "syntax error")
        assert isinstance(app.screen, JsonDialog)
        editor.text = '{"approved": true, "by": "[b]me[/b]"}'
        await pilot.press("ctrl+s")
        rows = await _inbox(pilot, journal, 1)
        assert rows[0][:2] == ("resume", ids["paused"])
        assert json.loads(rows[0][4]) == {"approved": True, "by": "[b]me[/b]"}


async def test_refused_commands_are_notifications(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["done"])
        # A completed run is not offered a resume; one started anyway (from a screen that
        # showed the run paused a moment ago) is refused by the journal.
        app.actions.start("resume", ids["done"])
        dialog = await _dialog(pilot, app, JsonDialog)
        dialog.query_one("#json", TextArea).text = "{}"
        await pilot.press("ctrl+s")
        await until(
            pilot,
            lambda: any("refused" in n.message for n in app._notifications),
            "a refusal",
        )
        assert rows_of(journal, "SELECT * FROM inbox") == [] and app.is_running


async def test_signal_emit_and_invoke_write_their_rows(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: ids["paused"] in keys(runs_table(app)), "the paused run")
        table = runs_table(app)
        table.move_cursor(row=keys(table).index(ids["paused"]))
        await pilot.press("S")
        dialog = await _dialog(pilot, app, JsonDialog)
        dialog.query_one("#json", TextArea).text = '{"priority": 1}'
        await pilot.press("ctrl+s")
        rows = await _inbox(pilot, journal, 1)
        assert rows[0][:2] == ("signal", ids["paused"]) and json.loads(rows[0][4]) == {
            "priority": 1
        }

        await pilot.press("e")
        dialog = await _dialog(pilot, app, JsonDialog)
        await pilot.press(*"order.created")
        dialog.query_one("#json", TextArea).text = '{"order_id": 42}'
        await pilot.press("ctrl+s")
        query = "SELECT type, data, source FROM events WHERE source = 'dashboard'"
        await until(pilot, lambda: rows_of(journal, query), "the event")
        assert rows_of(journal, query) == [("order.created", '{"order_id":42}', "dashboard")]

        await pilot.press("i")
        dialog = await _dialog(pilot, app, JsonDialog)
        dialog.query_one("#field-workflow", Input).value = "labels"
        dialog.query_one("#field-trigger", Input).value = ""
        await pilot.press("ctrl+s")  # the trigger is missing: said inline
        error = dialog.query_one("#error", Static)
        await until(pilot, lambda: "Trigger must not be empty" in static_text(error), "error")
        dialog.query_one("#field-trigger", Input).value = "print"
        dialog.query_one("#json", TextArea).text = '{"order_id": 7}'
        await pilot.press("ctrl+s")
        rows = await _inbox(pilot, journal, 2)
        command, run_id, workflow, trigger, payload = rows[1]
        assert (command, workflow, trigger) == ("invoke", "labels", "print")
        assert json.loads(payload) == {"data": {"order_id": 7}} and len(run_id) == 32


async def test_copy_run_id_and_command_palette_entries(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["paused"])
        await pilot.press("c")
        assert app.clipboard == ids["paused"]
        titles = [command.title for command in app.get_system_commands(screen)]
        short = ids["paused"][:8]
        for title in ("Runs", "Workflows", "Events", "Emit an event", f"Abort run {short}"):
            assert title in titles
        commands = {command.title: command for command in app.get_system_commands(screen)}
        commands[f"Abort run {short}"].callback()
        await _dialog(pilot, app, ConfirmDialog)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "dialog closed")
        await pilot.press("question_mark")
        await _dialog(pilot, app, HelpScreen)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "help closed")


async def test_the_key_bar_follows_the_focus_and_a_click_presses_its_key(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "five runs")
        bar = app.screen.query_one(KeyBar)
        await until(pilot, lambda: "a Abort" in rendered(bar), "the table's keys")
        assert rendered(bar).rstrip().endswith("^p palette")
        await pilot.press("slash")  # the search box takes the focus: the table's keys go
        await until(pilot, lambda: "Abort" not in rendered(bar), "the search box's keys")
        runs_table(app).focus()
        await until(pilot, lambda: "a Abort" in rendered(bar), "the table's keys again")
        await pilot.click(KeyBar, offset=(rendered(bar).index("2 Workflows"), 0))
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "the clicked key's")


async def test_read_only_hides_and_refuses_actions(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, ids["paused"])
        bound = {b.binding.action for b in screen.active_bindings.values()}
        assert not {"run_action('abort')", "emit", "invoke"} & bound
        await pilot.press("a", "r", "S", "e", "i")
        await pilot.pause()
        assert isinstance(app.screen, RunDetailScreen)
        app.actions.start("abort", ids["paused"])  # as the command palette would
        await pilot.pause()
        assert isinstance(app.screen, RunDetailScreen)
        assert any("read-only" in n.message for n in app._notifications)
        assert "read-only" in static_text(screen.query_one(JournalBanner))
        assert rows_of(journal, "SELECT * FROM inbox") == []


async def test_quitting_runs_the_quit_hook_once(journal: Path) -> None:
    calls: list[str] = []

    async def stop_daemon() -> None:
        calls.append("stopped")

    app = DashboardApp(journal, on_quit=stop_daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        await pilot.press("e")  # a dialog: the app's screen keys wait until it is closed
        await _dialog(pilot, app, JsonDialog)
        await pilot.press("escape", "q")
        await until(pilot, lambda: not app.is_running, "the app to exit")
    assert calls == ["stopped"]


# --- the journal itself ------------------------------------------------------------------


async def test_a_missing_journal_is_waited_for(tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    app = DashboardApp(db)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one(JournalBanner)
        await until(pilot, lambda: "waiting for journal" in static_text(banner), "waiting")
        assert str(db) in static_text(banner)
        async with Runtime(db, workflows=[LABELS]) as rt:
            result = await rt.invoke("labels", "print", {"order_id": 1})
            await until(pilot, lambda: keys(runs_table(app)) == [result.run_id], "the run")


async def test_a_file_that_is_not_a_journal_is_reported_and_retried(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not a database at all" * 100)
    app = DashboardApp(db)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one(JournalBanner)
        await until(pilot, lambda: "not a journal" in static_text(banner), "the error")
        assert "retrying" in static_text(banner)
        db.unlink()
        async with Runtime(db, workflows=[LABELS]) as rt:
            result = await rt.invoke("labels", "print", {"order_id": 1})
            await until(pilot, lambda: keys(runs_table(app)) == [result.run_id], "the run")


async def test_a_fifo_named_as_the_journal_is_reported_and_retried(tmp_path: Path) -> None:
    """The FIFO's check raised out of the dashboard's poll: a traceback, no dashboard."""
    db = tmp_path / "pipe.db"
    os.mkfifo(db)
    app = DashboardApp(db)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one(JournalBanner)
        await until(pilot, lambda: "FIFO" in static_text(banner), "the error")
        assert "not a regular file" in static_text(banner)
        assert "retrying" in static_text(banner)
        db.unlink()
        async with Runtime(db, workflows=[LABELS]) as rt:
            result = await rt.invoke("labels", "print", {"order_id": 1})
            await until(pilot, lambda: keys(runs_table(app)) == [result.run_id], "the run")


def test_the_dashboard_imports_no_runtime_module() -> None:
    code = (
        "import sys, tui.app\n"
        "core = ['runtime', 'executor', 'loader', 'watcher', 'control', 'supervisor',"
        " 'dispatcher', 'journal.sqlite.writer']\n"
        "print([m for m in core if 'orchestrator.' + m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- pure helpers ------------------------------------------------------------------------


def test_helpers() -> None:
    assert [duration(s) for s in (0.85, 12.34, 245, 7380, 273600)] == [
        "850ms",
        "12.3s",
        "4m05s",
        "2h03m",
        "3d04h",
    ]
    assert diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": None}) == [
        *diff({"b": {"c": 2}}, {"b": {"c": 3}}),
        *diff({}, {"d": None}),
    ]
    changes = diff({"a": 1, "gone": 2}, {"a": True})
    assert [(c.path, c.kind) for c in changes] == [("a", "changed"), ("gone", "removed")]
    assert parse_object("[]")[1] == "must be a JSON object {...}, not list"
    assert parse_object("") == ({}, None)


def _walk(node: Any) -> list[Any]:
    found = [node]
    for child in node.children:
        found.extend(_walk(child))
    return found


def offers(app: DashboardApp, actions: set[str]) -> bool:
    return offered(app) == actions


def offered(app: DashboardApp) -> set[str]:
    """The run actions the key bar offers now (abort, resume, signal, retry, fork)."""
    return {
        str(active.binding.action).split("'")[1]
        for active in app.screen.active_bindings.values()
        if active.binding.action.startswith("run_action(")
    }


async def test_the_actions_offered_fit_the_runs_status(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: ids["done"] in keys(runs_table(app)), "the runs")
        table = runs_table(app)
        expected = {
            "done": {"fork"},
            "failed": {"retry", "fork"},
            "paused": {"abort", "resume", "signal", "fork"},
        }
        for name, actions in expected.items():  # in the list, as the cursor moves
            table.move_cursor(row=keys(table).index(ids[name]))
            await until(pilot, functools.partial(offers, app, actions), name)
        screen = await open_run(pilot, app, ids["done"])  # and on the run's own screen
        await until(pilot, lambda: offered(app) == {"fork"}, "a completed run's actions")
        await pilot.press("a", "r")  # not offered: nothing happens
        await pilot.pause()
        assert app.screen is screen and rows_of(journal, "SELECT * FROM inbox") == []


async def test_retry_from_the_dashboard_writes_the_command(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["failed"])
        await pilot.press("y")
        dialog = await _dialog(pilot, app, JsonDialog)
        dialog.query_one("#json", TextArea).text = '{"card": "new"}'
        await pilot.press("ctrl+s")
        [row] = await _inbox(pilot, journal, 1)
        assert row[:2] == ("retry", ids["failed"]) and json.loads(row[4]) == {"card": "new"}


async def test_fork_from_the_dashboard_picks_a_step_and_shows_where_a_fork_came_from(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["done"])
        await pilot.press("F")
        dialog = await _dialog(pilot, app, ForkDialog)
        steps = dialog.query_one("#steps", OptionList)
        assert [str(steps.get_option_at_index(i).prompt) for i in range(steps.option_count)] == [
            "reserve",
            "wait_for_payment",
            "ship",
        ]
        await pilot.press("down", "down")  # ship
        dialog.query_one("#json", TextArea).text = '{"express": true}'
        await pilot.press("ctrl+s")
        [row] = await _inbox(pilot, journal, 1)
        payload = json.loads(row[4])
        assert row[:2] == ("fork", ids["done"]) and payload["from_step"] == "ship"
        assert payload["patch"] == {"express": True}
        await until(
            pilot,
            lambda: any(payload["new_run_id"] in n.message for n in app._notifications),
            "the new run's id",
        )

    async with Runtime(journal, workflows=[ORDERS, LABELS]) as rt:  # the daemon applies it
        await rt.idle(timeout=10)
        forked = await rt.wait(payload["new_run_id"], timeout=10)
        assert forked.state["express"] is True and forked.state["shipped"] is True
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, payload["new_run_id"])
        summary = _plain(screen.query_one("#summary", Static).render())
        assert f"forked from run {ids['done']} at step ship" in summary

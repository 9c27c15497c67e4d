"""The dashboard's data: the log pane, dialogs that complete and check names, per-workflow
figures, short run ids in the search box. Pilot against real journals written by a real
runtime (the seeded journal of ``test_tui``); waits poll the app, nothing here is timed.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_tui
from pilots import until
from test_tui import (
    LABELS,
    MARKUP_LOG,
    ORDERS,
    SIZE,
    _dialog,
    _inbox,
    keys,
    row_text,
    rows_of,
    runs_table,
    static_text,
)
from textual.widgets import Button, DataTable, Input, Static

import tui.logs
import tui.workflows
from orchestrator import Runtime, Schedule, Workflow
from orchestrator.journal import WorkflowFigures
from orchestrator.journal.sqlite import views
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.views import DashboardQueries
from tui.app import DashboardApp
from tui.detail import RunDetailScreen
from tui.dialogs import JsonDialog
from tui.logs import LogsScreen
from tui.runs import RunsScreen
from tui.workflows import WorkflowsScreen

# The seeded journal's fixtures, as `test_tui` defines them.
template, journal, ids = test_tui.template, test_tui.journal, test_tui.ids


def log_table(app: DashboardApp) -> DataTable[Any]:
    return app.screen.query_one("#log", DataTable)


def cursor_key(table: DataTable[Any]) -> str | None:
    return keys(table)[table.cursor_row] if table.row_count else None


def timeline_ids(db: Path) -> list[str]:
    return [str(row[0]) for row in rows_of(db, "SELECT id FROM timeline ORDER BY id")]


async def open_logs(pilot: Any, app: DashboardApp, count: int) -> DataTable[Any]:
    await pilot.press("4")
    await until(pilot, lambda: isinstance(app.screen, LogsScreen), "the log pane")
    table = log_table(app)
    await until(pilot, lambda: table.row_count == count, f"{count} log lines")
    return table


# --- the log pane -----------------------------------------------------------------------


async def test_the_log_pane_shows_every_runs_entries_literally(
    journal: Path, ids: dict[str, str]
) -> None:
    stored = timeline_ids(journal)
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        table = await open_logs(pilot, app, len(stored))
        assert keys(table) == stored  # oldest first, one line a journaled entry
        text = "\n".join(row_text(table, key) for key in keys(table))
        # Logs of three runs of orders, their markup shown as written.
        assert text.count(f"{MARKUP_LOG} ") == 3
        assert text.count("| orders |") >= 4
        failed = next(k for k in keys(table) if "step.failed" in row_text(table, k))
        assert row_text(table, failed).split(" | ")[1] == ids["failed"][:8]
        assert "card [red]declined[/red]" in row_text(table, failed)
        assert cursor_key(table) == stored[-1]  # at the bottom
        note = static_text(app.screen.query_one("#log-note", Static))
        assert "following" in note


async def test_the_log_pane_follows_new_entries_unless_moved_up(
    journal: Path, ids: dict[str, str]
) -> None:
    async with Runtime(journal, workflows=[ORDERS, LABELS]) as rt:
        app = DashboardApp(journal)
        async with app.run_test(size=SIZE) as pilot:
            table = await open_logs(pilot, app, len(timeline_ids(journal)))
            first = await rt.invoke("orders", "new", {"order_id": 10})
            await until(pilot, lambda: keys(table) == timeline_ids(journal), "the new entries")
            newest = keys(table)[-1]
            assert cursor_key(table) == newest  # followed
            assert first.run_id[:8] in "\n".join(row_text(table, k) for k in keys(table)[-2:])

            await pilot.press("up")  # the user moves up: the pane stays where it is
            await until(pilot, lambda: not app.screen.following, "not following")  # type: ignore[attr-defined]
            chosen = cursor_key(table)
            assert chosen is not None and chosen != newest
            await rt.invoke("orders", "new", {"order_id": 11})
            await until(pilot, lambda: keys(table) == timeline_ids(journal), "more entries")
            assert cursor_key(table) == chosen
            assert "f to follow" in static_text(app.screen.query_one("#log-note", Static))

            await pilot.press("f")  # back to the bottom, following again
            assert cursor_key(table) == keys(table)[-1]
            third = await rt.invoke("orders", "new", {"order_id": 12})
            await until(pilot, lambda: keys(table) == timeline_ids(journal), "the third run")
            assert cursor_key(table) == keys(table)[-1]

            await pilot.press("enter")  # opens the run of the line
            await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run")
            assert app.screen.run_id == third.run_id  # type: ignore[attr-defined]


async def test_the_log_pane_keeps_the_last_lines_only(
    journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tui.logs, "LOG_LINES", 4)
    monkeypatch.setattr(tui.logs, "TRIM_ROWS", 2)
    async with Runtime(journal, workflows=[ORDERS, LABELS]) as rt:
        app = DashboardApp(journal)
        async with app.run_test(size=SIZE) as pilot:
            table = await open_logs(pilot, app, 4)
            assert keys(table) == timeline_ids(journal)[-4:]  # the last 4 of many
            for order in (20, 21, 22):  # one entry at a time: trimmed one by one
                await rt.invoke("orders", "new", {"order_id": order})
                await until(
                    pilot, lambda: keys(table) == timeline_ids(journal)[-4:], "the last four"
                )
                assert table.row_count == 4 and cursor_key(table) == keys(table)[-1]
            for order in range(30, 36):  # many at once: drawn again from the kept lines
                await rt.invoke("orders", "new", {"order_id": order})
            await until(pilot, lambda: keys(table) == timeline_ids(journal)[-4:], "the last four")
            assert len(app.screen._lines) == 4  # type: ignore[attr-defined]


# --- the invoke and emit dialogs --------------------------------------------------------


async def open_dialog(pilot: Any, app: DashboardApp, key: str) -> JsonDialog:
    """Press `key` once the journal is open (the dialog's names come from it)."""
    await until(pilot, lambda: app.source.queries is not None, "the journal")
    await pilot.press(key)
    dialog: JsonDialog = await _dialog(pilot, app, JsonDialog)
    return dialog


def field(dialog: JsonDialog, name: str) -> Input:
    return dialog.query_one(f"#field-{name}", Input)


async def complete(pilot: Any, dialog: JsonDialog, name: str, typed: str) -> str:
    """Type `typed` into field `name`, take the completion offered (→): the field's value."""
    await pilot.press(*typed)
    await until(pilot, lambda: field(dialog, name).value == typed, "typed")
    await pilot.press("right")
    return field(dialog, name).value


def error_text(dialog: JsonDialog) -> str:
    return static_text(dialog.query_one("#error", Static))


async def test_invoke_completes_names_and_refuses_unknown_ones(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, "i")
        known = dialog.query_one("#known-workflow", Static)
        await until(pilot, lambda: "completes: labels, orders" in static_text(known), "workflows")
        assert await complete(pilot, dialog, "workflow", "ord") == "orders"
        triggers = dialog.query_one("#known-trigger", Static)
        await until(pilot, lambda: "completes: new, charge" in static_text(triggers), "triggers")

        field(dialog, "trigger").value = "chrage"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "no trigger 'chrage'" in error_text(dialog), "refused")
        assert "did you mean 'charge'?" in error_text(dialog)
        assert "It has: new, charge." in error_text(dialog)
        field(dialog, "workflow").value = "ordres"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "no workflow 'ordres'" in error_text(dialog), "refused")
        assert "did you mean 'orders'?" in error_text(dialog)
        assert isinstance(app.screen, JsonDialog)
        assert rows_of(journal, "SELECT * FROM inbox") == []  # nothing queued

        field(dialog, "workflow").value = "orders"
        field(dialog, "trigger").value = "charge"
        await pilot.press("ctrl+s")
        rows = await _inbox(pilot, journal, 1)
        assert rows[0][0] == "invoke" and rows[0][2:4] == ("orders", "charge")


async def test_invoke_of_a_disabled_workflow_is_refused(journal: Path) -> None:
    async with Runtime(journal, workflows=[ORDERS, LABELS]) as rt:
        await rt.disable("labels")
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, "i")
        field(dialog, "workflow").value = "labels"
        field(dialog, "trigger").value = "print"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "is disabled" in error_text(dialog), "refused")
        assert rows_of(journal, "SELECT * FROM inbox") == []


async def test_emit_completes_event_types_and_warns_about_unknown_ones(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot, app, "e")
        known = dialog.query_one("#known-type", Static)
        # A trigger's type, and the type the paused runs wait for.
        await until(pilot, lambda: "order.created, payment.received" in static_text(known), "types")
        assert await complete(pilot, dialog, "type", "pay") == "payment.received"

        field(dialog, "type").value = "order.craeted"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "listens to 'order.craeted'" in error_text(dialog), "warned")
        assert "did you mean 'order.created'?" in error_text(dialog)
        assert "Emit anyway" in str(dialog.query_one("#submit", Button).label)
        query = "SELECT type FROM events WHERE source = 'dashboard'"
        assert rows_of(journal, query) == []

        field(dialog, "type").value = "order.created"  # fixed: sent at once
        await until(pilot, lambda: str(dialog.query_one("#submit", Button).label) == "Emit", "")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: rows_of(journal, query), "the event")
        assert rows_of(journal, query) == [("order.created",)]

        await pilot.press("e")  # confirmed: an event nobody listens to yet, as typed
        dialog = await _dialog(pilot, app, JsonDialog)
        field(dialog, "type").value = "audit.started"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "listens to 'audit.started'." in error_text(dialog), "warned")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: len(rows_of(journal, query)) == 2, "the second event")
        assert rows_of(journal, query)[1] == ("audit.started",)


# --- per-workflow figures ---------------------------------------------------------------


def nightly(state: dict[str, Any]) -> dict[str, Any]:
    return state


async def test_the_workflows_screen_shows_runs_failures_p95_and_next_fire(
    journal: Path,
) -> None:
    reports = Workflow(
        id="reports",
        triggers={"nightly": Schedule(cron="0 2 * * *", tz="UTC")},
        pipelines={"nightly": [nightly]},
    )
    async with Runtime(journal, workflows=[ORDERS, LABELS, reports]):
        pass
    [(next_tick,)] = rows_of(journal, "SELECT next_tick FROM schedule_state")
    durations = rows_of(
        journal,
        "SELECT updated_at - created_at FROM runs WHERE workflow_id = 'orders'"
        " AND status = 'completed'",
    )
    assert next_tick is not None and len(durations) == 1
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "workflows")
        table = app.screen.query_one("#workflows", DataTable)
        await until(pilot, lambda: keys(table) == ["labels", "orders", "reports"], "three")
        await until(pilot, lambda: "…" not in row_text(table, "orders"), "the figures")
        headers = [str(column.label) for column in table.ordered_columns]
        assert headers[2:6] == ["runs 24h", "failed 24h", "p95 last 100", "next fire"]
        orders = row_text(table, "orders").split(" | ")
        assert orders[2:4] == ["4", "1"]  # paused twice, completed, failed
        assert orders[4].endswith(("ms", "s")) and orders[5] == "-"
        labels = row_text(table, "labels").split(" | ")
        assert labels[2:5] == ["1", "0", labels[4]] and labels[4] != "-"
        reports_row = row_text(table, "reports").split(" | ")
        assert reports_row[2:5] == ["0", "0", "-"]
        assert "(in " in reports_row[5]  # the next 02:00 UTC


async def test_the_figures_follow_new_runs(journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tui.workflows, "FIGURES_SECONDS", 0.5)
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "workflows")
        table = app.screen.query_one("#workflows", DataTable)
        await until(pilot, lambda: "labels" in keys(table), "labels")
        assert row_text(table, "labels").split(" | ")[2:4] == ["1", "0"]
        async with Runtime(journal, workflows=[ORDERS, LABELS]) as rt:  # then quiet again
            await rt.invoke("labels", "print", {"order_id": 8})
            await rt.invoke("orders", "charge", {"order_id": 9})

        def figures(workflow: str) -> list[str]:  # the table is redrawn as workflows register
            return row_text(table, workflow).split(" | ")[2:4] if workflow in keys(table) else []

        await until(pilot, lambda: figures("labels")[:1] == ["2"], "the new run")
        await until(pilot, lambda: figures("orders") == ["5", "2"], "the orders' figures")


async def test_workflow_figures_count_a_bounded_window(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Runtime(db, workflows=[ORDERS, LABELS]) as rt:
        for order in range(5):
            await rt.invoke("labels", "print", {"order_id": order})
        await rt.invoke("orders", "charge", {"order_id": 9})  # fails
    conn = sqlite3.connect(db)
    plan = " ".join(
        str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + views._FIGURES_SQL, [0, 1, 1])
    )
    conn.close()
    assert "SCAN r" not in plan and plan.count("runs_by_workflow_status") == 3
    monkeypatch.setattr(views, "FIGURES_CAP", 2)  # counts stop after 3 rows
    reader = await JournalReader.open(db)
    try:
        queries = DashboardQueries(reader)
        old = datetime.now(UTC) - timedelta(hours=1)
        labels, orders = await queries.workflow_figures(old)
        assert (labels.workflow_id, labels.runs, labels.failed) == ("labels", 3, 0)
        assert len(labels.durations) == 5 and labels.p95 == max(labels.durations)
        assert (orders.runs, orders.failed, orders.durations) == (1, 1, ())
        later = await queries.workflow_figures(datetime.now(UTC) + timedelta(hours=1))
        assert [(f.runs, f.failed) for f in later] == [(0, 0), (0, 0)]
    finally:
        await reader.close()


def test_p95_is_the_nearest_rank() -> None:
    def p95(durations: tuple[float, ...]) -> float | None:
        return WorkflowFigures(
            workflow_id="w", runs=0, failed=0, durations=durations, next_fire=None
        ).p95

    assert p95(()) is None
    assert p95((3.0,)) == 3.0
    assert p95(tuple(float(n) for n in range(100, 0, -1))) == 95.0
    assert p95(tuple(float(n) for n in range(1, 21))) == 19.0


# --- short run ids ----------------------------------------------------------------------


async def test_the_search_box_takes_the_short_ids_the_dashboard_shows(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "five runs")
        short = ids["failed"][:8]
        assert short in row_text(runs_table(app), ids["failed"])  # as the table shows it
        await pilot.press("slash", *short)
        await until(pilot, lambda: keys(runs_table(app)) == [ids["failed"]], "found")
        await pilot.press("enter")  # a unique prefix opens its run, as the CLI takes it
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run")
        assert app.screen.run_id == ids["failed"]  # type: ignore[attr-defined]

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the runs")
        search = app.screen.query_one("#search", Input)
        search.value = "ord"  # too short to name a run: Enter only goes back to the table
        search.focus()
        await pilot.press("enter")
        await until(pilot, lambda: runs_table(app).has_focus, "the table")
        assert isinstance(app.screen, RunsScreen)


async def test_a_poll_that_ends_while_the_app_closes_draws_nothing(journal: Path) -> None:
    # The poll awaits the journal; the app may close meanwhile (its screens are gone): the
    # banner and the reload that follow must not raise (found in CI: ScreenStackError).
    app = DashboardApp(journal)
    async with app.run_test(size=SIZE):
        pass
    app.update_banner()
    await app._reload()

"""The dashboard's habits: colours by meaning, keys on every screen, long values, 80x24,
dialogs that default to Cancel and get the keys typed at once, screenshots, the clipboard.

Pilot tests on a copy of the journal `test_tui` seeds (its fixtures and helpers are reused).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import test_tui
from pilots import until
from rich.style import Style
from rich.text import Text
from test_tui import (
    MARKUP_STATE,
    _dialog,
    _inbox,
    keys,
    open_run,
    rendered,
    rows_of,
    runs_table,
)
from textual import events
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, OptionList, Static, TextArea, Tree

from orchestrator.records import STATUSES, RunStatus
from tui.app import DashboardApp
from tui.detail import RunDetailScreen
from tui.dialogs import ConfirmDialog, ForkDialog, HelpScreen, JsonDialog
from tui.format import STATUS_STYLES, kind_style, status_style
from tui.keybar import KeyBar
from tui.runs import RunsScreen
from tui.terminal import osc52, screenshot_dir, tmux_passthrough
from tui.timeline import timeline_rows
from tui.values import ValueScreen

NARROW, WIDE = (80, 24), (160, 48)
KEY_NAMES = {
    "{": "left_curly_bracket",
    "}": "right_curly_bracket",
    '"': "quotation_mark",
    ":": "colon",
    " ": "space",
}


# The seeded journal's fixtures, as `test_tui` defines them.
template, journal, ids = test_tui.template, test_tui.journal, test_tui.ids


def notes(app: DashboardApp) -> list[str]:
    return [n.message for n in app._notifications]


def is_red(style: str) -> bool:
    color = Style.parse(style).color
    return color is not None and color.name in ("red", "bright_red", "dark_red")


# --- 1. a colour per status, one mapping -----------------------------------------------


def test_each_status_has_its_own_colour_and_paused_is_not_the_failure_colour() -> None:
    assert set(STATUS_STYLES) == set(STATUSES)
    assert len(set(STATUS_STYLES.values())) == len(STATUSES)
    assert is_red(status_style(RunStatus.FAILED))
    assert not is_red(status_style(RunStatus.PAUSED))
    # Timeline kinds by meaning, from the same mapping.
    assert kind_style("run.paused") == status_style(RunStatus.PAUSED)
    assert kind_style("run.failed") == kind_style("step.failed") == status_style("failed")
    assert kind_style("run.completed") == kind_style("step.completed") == status_style("completed")
    assert kind_style("run.resumed") == status_style(RunStatus.RUNNING)
    assert kind_style("step.started") == ""


def _style_of(cells: list[Text], text: str) -> str:
    cell = next(c for c in cells if c.plain.strip().endswith(text))
    return str(cell.style)


async def test_the_screens_colour_statuses_and_kinds_from_the_one_mapping(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: ids["paused"] in keys(runs_table(app)), "the runs")
        table = runs_table(app)
        for name, status in (("paused", "paused"), ("failed", "failed"), ("done", "completed")):
            cells = list(table.get_row(ids[name]))
            assert _style_of(cells, status) == status_style(status)
        screen = await open_run(pilot, app, ids["paused"])
        assert screen.detail is not None
        rows = dict(timeline_rows(screen.detail.timeline, app.now()))
        paused = [cells for cells in rows.values() if cells[1].plain == "run.paused"]
        assert paused and str(paused[0][1].style) == status_style("paused")
        assert not is_red(str(paused[0][1].style))


async def test_help_has_a_legend_of_the_status_colours(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("question_mark")
        help_screen = await _dialog(pilot, app, HelpScreen)
        legend = help_screen.query_one("#legend", Static).content
        assert isinstance(legend, Text)
        for status in STATUSES:
            start = legend.plain.index(f"● {status}")
            styles = [s.style for s in legend.spans if s.start <= start < s.end]
            assert status_style(status) in [str(s) for s in styles], status


# --- 2. ctrl+c is q ----------------------------------------------------------------------


@pytest.mark.parametrize("focus_search", [False, True], ids=["table", "search box"])
async def test_ctrl_c_quits_like_q(journal: Path, focus_search: bool) -> None:
    quits: list[bool] = []
    app = DashboardApp(journal, on_quit=lambda: quits.append(True))
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        if focus_search:
            await pilot.press("slash")
            await until(pilot, lambda: isinstance(app.focused, Input), "the search box")
        await pilot.press("ctrl+c")
        await until(pilot, lambda: quits, "the quit hook")
    assert quits == [True]


async def test_ctrl_c_asks_first_while_runs_execute_as_q_does(journal: Path) -> None:
    quits: list[bool] = []
    app = DashboardApp(journal, on_quit=lambda: quits.append(True), active_runs=lambda: 2)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("ctrl+c")
        await _dialog(pilot, app, ConfirmDialog)
        assert quits == []


# --- 3. j/k/g/G/home/end -----------------------------------------------------------------


def is_highlighted(options: OptionList, index: int) -> bool:
    return options.highlighted == index


def at_row(table: DataTable[Any], row: int) -> bool:
    return table.cursor_row == row


async def _moves(pilot: Pilot[Any], table: DataTable[Any]) -> None:
    last = table.row_count - 1
    assert last >= 2
    table.focus()
    table.move_cursor(row=0)
    for key, row in (("j", 1), ("j", 2), ("k", 1), ("G", last), ("g", 0), ("end", last)):
        await pilot.press(key)
        await until(pilot, functools.partial(at_row, table, row), f"{key} to row {row}")
    await pilot.press("home")
    await until(pilot, lambda: table.cursor_row == 0, "home to the first row")


async def test_j_k_g_G_home_end_move_in_every_table(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "the runs")
        await _moves(pilot, runs_table(app))
        await pilot.press("3")
        await until(pilot, lambda: app.screen.query_one("#events", DataTable).row_count > 2, "ev")
        await _moves(pilot, app.screen.query_one("#events", DataTable))
        await pilot.press("1")
        screen = await open_run(pilot, app, ids["done"])
        timeline = screen.query_one("#timeline-table", DataTable)
        await until(pilot, lambda: timeline.row_count > 2, "the timeline")
        await _moves(pilot, timeline)
        await pilot.press("s")
        tree = screen.query_one("#state-tree", Tree)
        await until(pilot, lambda: tree.last_line > 1, "the state tree")
        tree.focus()
        tree.cursor_line = 0
        await pilot.press("j", "j")
        await until(pilot, lambda: tree.cursor_line == 2, "j in the tree")
        await pilot.press("k")
        await until(pilot, lambda: tree.cursor_line == 1, "k in the tree")
        await pilot.press("G")
        await until(pilot, lambda: tree.cursor_line == tree.last_line, "G in the tree")
        await pilot.press("g")
        await until(pilot, lambda: tree.cursor_line == 0, "g in the tree")


async def test_j_k_g_G_move_in_the_fork_dialogs_list_of_steps(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await open_run(pilot, app, ids["done"])
        await pilot.press("F")
        dialog = await _dialog(pilot, app, ForkDialog)
        steps = dialog.query_one("#steps", OptionList)
        last = steps.option_count - 1
        assert last >= 2
        for key, index in (("j", 1), ("j", 2), ("k", 1), ("G", last), ("g", 0)):
            await pilot.press(key)
            await until(pilot, functools.partial(is_highlighted, steps, index), f"{key} to {index}")


async def test_help_names_the_moves(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("question_mark")
        help_screen = await _dialog(pilot, app, HelpScreen)
        text = "\n".join(str(s.content) for s in help_screen.query(Static))
        for words in ("j/k", "G or end", "g or home", "of the page shown", "v the highlighted"):
            assert words in text


# --- 4. long values ------------------------------------------------------------------------


async def test_v_shows_a_cut_value_in_full_literally_and_c_copies_it(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=NARROW) as pilot:
        await until(pilot, lambda: ids["failed"] in keys(runs_table(app)), "the runs")
        table = runs_table(app)
        table.move_cursor(row=keys(table).index(ids["failed"]))
        await pilot.press("v")
        view = await _dialog(pilot, app, ValueScreen)
        text = view.query_one("#value", TextArea).text
        assert ids["failed"] in text  # the whole id, not 8 characters
        assert "ValueError: card [red]declined[/red]" in text  # literal: markup as typed
        await pilot.press("c")
        assert app.clipboard == view.value
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the view closed")


async def test_enter_on_a_state_leaf_shows_its_value_in_full(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_run(pilot, app, ids["labelled"])
        await pilot.press("s")
        tree = screen.query_one("#state-tree", Tree)
        await until(pilot, lambda: tree.last_line > 1, "the state tree")
        tree.focus()
        labels = [str(getattr(tree.get_node_at_line(i), "label", "")) for i in range(99)]
        line = next(i for i, label in enumerate(labels) if label.startswith("note"))
        tree.cursor_line = line
        await pilot.press("enter")
        view = await _dialog(pilot, app, ValueScreen)
        assert json.loads(view.query_one("#value", TextArea).text) == MARKUP_STATE


def test_the_value_view_escapes_control_characters() -> None:
    view = ValueScreen("log", "\x1b[31mred\x1b[0m [bold]x[/bold]")
    assert "\x1b" not in view.value
    assert "\\x1b[31mred" in view.value and "[bold]x[/bold]" in view.value


# --- 5. 80x24 and 160x48 ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["80x24", "160x48"])
async def test_the_runs_screen_fits(
    journal: Path, ids: dict[str, str], size: tuple[int, int]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: len(keys(runs_table(app))) == 5, "the runs")
        search = app.screen.query_one("#search", Input)
        assert search.size.width >= 30  # room to type, not "se"
        bar = app.screen.query_one(KeyBar)
        shown = rendered(bar)
        for label in ("v View", "a Abort", "/ Search", "e Emit", "? Help", "q Quit", "^p palette"):
            assert label in shown, (label, shown)
        assert all(len(line.rstrip()) <= size[0] for line in shown.splitlines())
        columns = [str(c.label) for c in runs_table(app).ordered_columns]
        assert columns[:2] == ["run", "workflow"] and "status" in columns
        assert ("trigger" in columns) == (size == WIDE)  # dropped when narrow, ids kept whole
        first = runs_table(app).get_row_at(0)[0]
        assert len(first.plain) == 8


async def test_the_help_scrolls_at_80x24(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=NARROW) as pilot:
        await pilot.press("question_mark")
        help_screen = await _dialog(pilot, app, HelpScreen)
        scroll = help_screen.query_one(VerticalScroll)
        await until(pilot, lambda: scroll.max_scroll_y > 0, "a help taller than the screen")
        assert scroll.size.width <= NARROW[0]
        await pilot.press("G")
        await until(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y, "the end of the help")
        await pilot.press("g")
        await until(pilot, lambda: scroll.scroll_y == 0, "the top of the help")
        await pilot.press("q")  # closes the help, as escape does; the dashboard stays
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the help closed")
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        await pilot.press("v")
        await _dialog(pilot, app, ValueScreen)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the view closed")
        assert app.is_running


# --- 6. the quit dialog defaults to Cancel -----------------------------------------------------


@pytest.mark.parametrize("key", ["enter", "escape"])
async def test_the_quit_dialog_defaults_to_cancel(journal: Path, key: str) -> None:
    quits: list[bool] = []
    app = DashboardApp(journal, on_quit=lambda: quits.append(True), active_runs=lambda: 1)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        await pilot.press("q")
        dialog = await _dialog(pilot, app, ConfirmDialog)
        focused = dialog.focused
        assert isinstance(focused, Button) and str(focused.label) == "Cancel"
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the dialog closed")
        assert quits == []
        await pilot.press("q")
        await _dialog(pilot, app, ConfirmDialog)
        await pilot.press("tab", "enter")  # Stop, chosen on purpose
        await until(pilot, lambda: quits, "the quit hook")


# --- 7. keys typed at once arrive in order -------------------------------------------------------


def burst(app: DashboardApp, *keys: str) -> None:
    """Keys as a fast typist (or a paste) sends them: all queued before any is handled."""
    for key in keys:
        if len(key) == 1:
            app.post_message(events.Key(KEY_NAMES.get(key, key), key))
        else:
            app.post_message(events.Key(key, None))


async def test_keys_typed_right_after_a_dialog_opens_reach_it_in_order(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_run(pilot, app, ids["paused"])
        burst(app, "r", *'{"approved": false}', "ctrl+s")
        rows = await _inbox(pilot, journal, 1)
        assert rows[0][:2] == ("resume", ids["paused"])
        assert json.loads(rows[0][4]) == {"approved": False}
        await until(pilot, lambda: app.screen is screen, "back on the run")
        assert app.screen_stack[-1] is screen  # no dialog opened by a stray letter


async def test_enter_typed_right_after_abort_cancels(journal: Path, ids: dict[str, str]) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_run(pilot, app, ids["paused"])
        burst(app, "a", "enter")
        await until(pilot, lambda: app.screen is screen, "the dialog closed")
        for _ in range(3):
            await pilot.pause()
        assert rows_of(journal, "SELECT * FROM inbox") == []


async def test_letters_typed_in_the_search_box_are_text_not_actions(journal: Path) -> None:
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.focused, Input), "the search box")
        await pilot.press(*"area qie")
        search = app.screen.query_one("#search", Input)
        await until(pilot, lambda: search.value == "area qie", "the typed text")
        assert isinstance(app.screen, RunsScreen) and app.is_running


# --- 8. screenshots --------------------------------------------------------------------------


async def test_a_screenshot_is_saved_where_it_can_be_and_its_path_said(
    journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/Downloads
    monkeypatch.delenv("XDG_PICTURES_DIR", raising=False)
    monkeypatch.chdir(here)
    assert screenshot_dir(home=home) == here
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        saved = app.deliver_screenshot()
        assert saved is not None
        [shot] = list(here.glob("*.svg"))
        assert Path(saved) == shot.resolve()
        path = str(shot.resolve())
        await until(pilot, lambda: any(path in note for note in notes(app)), "the path said")
        (home / "Downloads").mkdir()  # once it exists, it is used
        assert screenshot_dir(home=home) == home / "Downloads"


async def test_a_screenshot_that_cannot_be_written_is_a_notification(
    journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pictures = tmp_path / "pictures"
    (pictures / "shot.svg").mkdir(parents=True)  # the file's name is taken by a folder
    monkeypatch.setenv("XDG_PICTURES_DIR", str(pictures))
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: keys(runs_table(app)), "the runs")
        assert app.deliver_screenshot(filename="shot.svg") is None
        said = lambda: any(n.startswith("screenshot not saved") for n in notes(app))  # noqa: E731
        await until(pilot, said, "the error said")
        assert app.is_running


# --- 9. the clipboard inside tmux ------------------------------------------------------------


def test_tmux_passthrough_wraps_osc52_with_its_escapes_doubled() -> None:
    assert osc52("abc") == "\x1b]52;c;YWJj\a"
    assert tmux_passthrough(osc52("abc")) == "\x1bPtmux;\x1b\x1b]52;c;YWJj\a\x1b\\"


@pytest.mark.parametrize("tmux", [False, True], ids=["terminal", "tmux"])
async def test_copy_writes_osc52_and_inside_tmux_the_wrapped_sequence_too(
    journal: Path, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmux: bool
) -> None:
    if tmux:
        monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")
    else:
        monkeypatch.delenv("TMUX", raising=False)
    app = DashboardApp(journal)
    async with app.run_test(size=WIDE) as pilot:
        await open_run(pilot, app, ids["paused"])
        assert app._driver is not None
        written: list[str] = []
        monkeypatch.setattr(app._driver, "write", written.append)
        await pilot.press("c")
        await until(pilot, lambda: app.clipboard == ids["paused"], "the copy")
        sequence = osc52(ids["paused"])
        assert sequence in written
        assert (tmux_passthrough(sequence) in written) == tmux
        sent = "sent to the terminal's clipboard (OSC 52"
        await until(pilot, lambda: any(sent in note for note in notes(app)), "said honestly")


# --- 10. actions that fit the status -------------------------------------------------------------


async def test_a_completed_run_is_offered_no_abort_resume_or_signal_anywhere(
    journal: Path, ids: dict[str, str]
) -> None:
    app = DashboardApp(journal)
    unfit = ("Abort", "Resume", "Signal")
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: ids["done"] in keys(runs_table(app)), "the runs")
        table = runs_table(app)
        table.move_cursor(row=keys(table).index(ids["done"]))
        bar = app.screen.query_one(KeyBar)
        await until(pilot, lambda: "Abort" not in rendered(bar), "the list's key bar")
        assert "F Fork" in rendered(bar)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not [t for t in titles if t.split()[0] in unfit], titles
        screen = await open_run(pilot, app, ids["done"])
        bar = screen.query_one(KeyBar)
        await until(pilot, lambda: "F Fork" in rendered(bar), "the run's key bar")
        assert not [word for word in unfit if word in rendered(bar)]
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not [t for t in titles if t.split()[0] in unfit], titles
        assert isinstance(app.screen, RunDetailScreen)
        assert not isinstance(app.screen, JsonDialog)

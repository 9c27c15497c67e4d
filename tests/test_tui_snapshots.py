"""Snapshots of the dashboard's screens, as text, against a journal seeded the same way each time.

Each test draws one screen of `DashboardApp` at a fixed size, with a frozen clock, local
time pinned to UTC and the journal path shown relative, and compares what is on screen
(characters, not colours) with ``tests/__snapshots__/test_tui_snapshots/NAME.txt``. After a
deliberate change to a screen, rewrite them and review the diff::

    UPDATE_SNAPSHOTS=1 pytest tests/test_tui_snapshots.py

The last test checks the queries behind the runs screen on the same journal.

Text, not SVG: pytest-textual-snapshot 1.1.0 pins syrupy 4.8.0, which requires pytest < 9
(this suite runs pytest 9). Waits poll the app until what is drawn is there; nothing here
asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import NOW, pinned_utc, seed
from pilots import copy_journal, until
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable

from orchestrator.journal import RunFilter
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.views import DashboardQueries
from tui.app import DashboardApp
from tui.detail import RunDetailScreen
from tui.dialogs import HelpScreen

SIZE = (160, 48)
# The screens a newcomer sees first, at 80x24 (the least the dashboard is made for) too.
SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    db = tmp_path_factory.mktemp("snapshots") / "seed.db"
    return db, asyncio.run(seed(db))


@pytest.fixture
def ids(seeded: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return seeded[1]


@pytest.fixture
def app(
    seeded: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DashboardApp]:
    """The dashboard on a private copy of the journal, shown as ``journal.db``, in UTC."""
    copy_journal(seeded[0], tmp_path / "journal.db")
    monkeypatch.chdir(tmp_path)
    with pinned_utc():
        yield DashboardApp(Path("journal.db"), now=lambda: NOW)


def screen_text(app: DashboardApp) -> str:
    """What `App.export_screenshot` draws, as plain text (no trailing blanks)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


async def assert_snapshot(pilot: Pilot[Any], name: str) -> None:
    await pilot.pause()  # let pending refreshes land
    assert isinstance(pilot.app, DashboardApp)
    text = screen_text(pilot.app)
    width, height = pilot.app.size
    path = SNAPSHOTS / f"{name}_{width}x{height}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text(), f"{name} differs from {path}"


def row_count(app: DashboardApp, selector: str) -> int:
    return app.screen.query_one(selector, DataTable).row_count


async def open_run(pilot: Pilot[Any], app: DashboardApp, run_id: str) -> RunDetailScreen:
    await until(pilot, lambda: row_count(app, "#runs") == 8, "the runs")
    table = app.screen.query_one("#runs", DataTable)
    keys = [row.key.value for row in table.ordered_rows]
    table.move_cursor(row=keys.index(run_id), animate=False)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run screen")
    screen = app.screen
    assert isinstance(screen, RunDetailScreen)
    await until(pilot, lambda: screen.detail is not None, "the run's detail")
    return screen


@SIZES
async def test_runs(app: DashboardApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: row_count(app, "#runs") == 8, "the runs")
        await assert_snapshot(pilot, "runs")


@SIZES
async def test_run_detail_timeline_of_a_failed_run(
    app: DashboardApp, ids: dict[str, str], size: tuple[int, int]
) -> None:
    async with app.run_test(size=size) as pilot:
        await open_run(pilot, app, ids["failed"])
        await until(pilot, lambda: row_count(app, "#timeline-table") > 0, "the timeline")
        await assert_snapshot(pilot, "run_detail_timeline")


async def test_run_detail_state_and_diff(app: DashboardApp, ids: dict[str, str]) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["shipped"])
        await pilot.press("s")
        await until(pilot, lambda: row_count(app, "#checkpoints") > 0, "the checkpoints")
        await assert_snapshot(pilot, "run_detail_state")


async def test_run_detail_wait(app: DashboardApp, ids: dict[str, str]) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await open_run(pilot, app, ids["waiting"])
        await pilot.press("w")
        await assert_snapshot(pilot, "run_detail_wait")


@SIZES
async def test_workflows(app: DashboardApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: row_count(app, "#workflows") == 4, "the workflows")
        await until(pilot, lambda: row_count(app, "#errors") == 1, "the load error")
        await assert_snapshot(pilot, "workflows")


async def test_events(app: DashboardApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: row_count(app, "#events") == 6, "the events")
        await assert_snapshot(pilot, "events")


@SIZES
async def test_help(app: DashboardApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: row_count(app, "#runs") == 8, "the runs")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        await assert_snapshot(pilot, "help")


async def test_queries_behind_the_runs_screen(seeded: tuple[Path, dict[str, str]]) -> None:
    """Pages count their runs (a last page without a second scan), workflows by skip scan."""
    reader = await JournalReader.open(seeded[0])
    queries = DashboardQueries(reader)
    try:
        assert await queries.workflow_ids() == ["billing", "deploys", "orders", "reports"]
        pages = [
            await queries.runs_page(RunFilter(), offset=offset, limit=3) for offset in (0, 6, 9)
        ]
        assert [(len(p.rows), p.total) for p in pages] == [(3, 8), (2, 8), (0, 8)]
        found = await queries.runs_page(RunFilter(search="declined"), offset=0, limit=3)
        assert (len(found.rows), found.total) == (1, 1)
        none = await queries.runs_page(RunFilter(search="nothing like it"), offset=0, limit=3)
        assert (none.rows, none.total) == ([], 0)
    finally:
        await reader.close()

"""The dashboard's queries on PostgreSQL return exactly what they return on SQLite.

A differential test: a rich journal written by a real `Runtime` on SQLite
(``pg_views_seed``) is copied into PostgreSQL (`copy_journal`, ids kept), and every
`DashboardViews` method is asked the same thing on both: every filter, search texts with
LIKE's wildcards, its escape, case and non-ASCII letters, every sort, pages, run details,
events, workflows and their figures. The PostgreSQL side runs on a database with the
default (C) collation and, where the server has ICU, on one with a language's collation
(en-US), where text orders and case folding differ from SQLite's unless the queries say
otherwise.

The few views that are the reader's own queries (`DELEGATED`) are compared too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_views_seed import seed
from pilots import until
from postgres import Cluster
from test_tui import keys, row_text, runs_table, static_text
from textual.widgets import DataTable, Static

from orchestrator.journal import DashboardViews, RunFilter, open_journal, ops
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.copy import copy_journal
from orchestrator.journal.postgres import run_search as pg_search
from orchestrator.journal.postgres import schema
from orchestrator.journal.postgres.states import UNREADABLE, merge, state_text
from orchestrator.journal.postgres.views import PostgresViews
from orchestrator.journal.postgres.writer import PostgresWriter
from orchestrator.journal.sqlite import run_search as sqlite_search
from orchestrator.journal.view_records import SORTS
from orchestrator.records import RunStatus
from orchestrator.testing import eventually
from tui.app import DashboardApp
from tui.detail import RunDetailScreen
from tui.events import EventsScreen
from tui.workflows import WorkflowsScreen

# What the reader (pgreader's part) answers, which some views pass on.
DELEGATED = ("data_version", "switches", "load_errors", "daemon", "log_entries", "match_runs")
SEARCHES = (
    "100%",  # a wildcard, literally
    "%",
    "_",  # another
    "card_",
    "\\",  # the escape character
    "back\\s",
    "card",  # case-insensitive: CARD, card
    "DECLINED",
    "ü",  # non-ASCII: exact, as SQLite's LIKE (no folding beyond ASCII)
    "Ü",
    "échec",  # SQLite folds no É: no match in lower case
    "ÉCHEC",
    "Größe",
    "orders",  # workflow ids: orders and Orders-EU_1
    "ORDERS",
    "eu_1",
    "hold",  # a trigger id
    "step_failed",  # an error code
    "9",  # a run id prefix or anywhere else
    "zzz-nothing",
)


@pytest.fixture(scope="module")
def sqlite_journal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    db = tmp_path_factory.mktemp("pgviews") / "journal.db"
    return db, asyncio.run(seed(db))


def _icu_database(cluster: Cluster) -> str:
    """A database whose default collation is a language's (ICU en-US), or skip."""
    url = cluster.create_database("pgviews_icu")
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}"')
        try:
            conn.execute(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"
                " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        except psycopg.Error as exc:
            pytest.skip(f"this PostgreSQL has no ICU collation: {exc}")
    return url


@pytest.fixture(scope="module", params=["c", "icu"])
def pg_journal(
    request: pytest.FixtureRequest,
    pg_cluster: Cluster,
    sqlite_journal: tuple[Path, dict[str, str]],
) -> str:
    """The seeded journal copied into PostgreSQL, under each collation; its URL."""
    if request.param == "icu":
        url = _icu_database(pg_cluster)
    else:
        url = pg_cluster.create_database("pgviews")
    asyncio.run(copy_journal(sqlite_journal[0], url))
    return url


@pytest.fixture
def ids(sqlite_journal: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return sqlite_journal[1]


@pytest.fixture
async def both(
    sqlite_journal: tuple[Path, dict[str, str]], pg_journal: str
) -> AsyncIterator[tuple[DashboardViews, PostgresViews]]:
    lite = await open_journal(sqlite_journal[0]).open_views()
    pg = await PostgresViews.open(pg_journal)
    try:
        yield lite, pg
    finally:
        await lite.close()
        await pg.close()


# --- the differential tests ----------------------------------------------------------------


async def test_counts_and_workflow_ids_match(
    both: tuple[DashboardViews, PostgresViews],
) -> None:
    lite, pg = both
    assert await pg.workflow_ids() == await lite.workflow_ids()
    assert "Orders-EU_1" in await pg.workflow_ids()
    for workflow in [None, *(await lite.workflow_ids()), "no-such-workflow"]:
        counts = await pg.status_counts(workflow)
        assert counts == await lite.status_counts(workflow)
        assert list(counts) == list(await lite.status_counts(workflow))
    assert sum((await pg.status_counts()).values()) > 30


def _filters(workflows: list[str]) -> Iterator[RunFilter]:
    for status in (None, "completed", "failed", "paused", "queued", "aborted", "running"):
        for workflow in (None, *workflows):
            for sort in (*SORTS, "no-such-sort"):
                yield RunFilter(status=status, workflow=workflow, sort=sort)  # type: ignore[arg-type]


async def test_every_filter_sort_and_page_matches(
    both: tuple[DashboardViews, PostgresViews],
) -> None:
    lite, pg = both
    compared = 0
    for wanted in _filters(await lite.workflow_ids()):
        for offset, limit in ((0, 7), (5, 7), (35, 10), (0, 200), (3, -1)):
            page = await pg.runs_page(wanted, offset=offset, limit=limit)
            assert page == await lite.runs_page(wanted, offset=offset, limit=limit), wanted
            compared += len(page.rows)
    assert compared > 1_000  # the filters selected runs, not only empty pages


@pytest.mark.parametrize("dense", [False, True])
async def test_every_search_matches(
    both: tuple[DashboardViews, PostgresViews],
    ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    dense: bool,
) -> None:
    """Searches read by index (sparse) or in order (dense: many runs match) agree."""
    if dense:  # every matched workflow counts as dense: the other plan
        monkeypatch.setattr(sqlite_search, "DENSE", 0)
        monkeypatch.setattr(pg_search, "DENSE", 0)
    lite, pg = both
    texts = [*SEARCHES, ids["parent"][:6], ids["parent"][:6].upper(), ids["fork"]]
    found = 0
    for text in texts:
        for status in (None, "failed", "paused"):
            for workflow in (None, "billing", "orders"):
                for sort in SORTS:
                    wanted = RunFilter(status, workflow, f" {text} ", sort)  # type: ignore[arg-type]
                    for offset in (0, 3):
                        page = await pg.runs_page(wanted, offset=offset, limit=4)
                        assert page == await lite.runs_page(wanted, offset=offset, limit=4), (
                            wanted,
                            offset,
                        )
                        found += page.total
    assert found > 500
    # The search is SQLite's: ASCII case-insensitive, nothing folded beyond ASCII.
    plain = RunFilter(search="100%")
    assert (await pg.runs_page(plain, offset=0, limit=10)).total == 1  # retried in place
    assert (await pg.runs_page(RunFilter(search="échec"), offset=0, limit=10)).total == 0
    assert (await pg.runs_page(RunFilter(search="ÉCHEC"), offset=0, limit=10)).total == 1
    assert (await pg.runs_page(RunFilter(search="%"), offset=0, limit=10)).total == 1
    # A NUL matches nothing: no PostgreSQL text holds one (SQLite's LIKE stops reading its
    # pattern at a NUL, so there "card\0x" searches for "card": a quirk not copied).
    assert (await pg.runs_page(RunFilter(search="card\x00"), offset=0, limit=10)).total == 0
    assert await pg.recent_events(type_contains="order\x00") == []


async def test_run_details_and_fingerprints_match(
    both: tuple[DashboardViews, PostgresViews],
) -> None:
    lite, pg = both
    everything = await lite.runs_page(RunFilter(sort="oldest"), offset=0, limit=500)
    assert len(everything.rows) == everything.total > 30
    with_deltas = 0
    for row in everything.rows:
        for recent in (0, 1, 5):
            detail = await pg.run_detail(row.run_id, recent_events=recent)
            assert detail == await lite.run_detail(row.run_id, recent_events=recent), row
        other = await lite.run_detail(row.run_id)
        assert detail is not None and other is not None
        # States read from merge patches come out whole, keys in SQLite's order.
        for mine, theirs in zip(detail.checkpoints, other.checkpoints, strict=True):
            assert repr(mine.state) == repr(theirs.state)
            with_deltas += isinstance(mine.state, dict) and "big" in mine.state
        assert await pg.run_fingerprint(row.run_id) == await lite.run_fingerprint(row.run_id)
    assert with_deltas > 10
    assert await pg.run_detail("no-such-run") is None
    assert await pg.run_fingerprint("no-such-run") is None


async def test_a_detail_shows_the_parent_children_waits_and_routes(
    both: tuple[DashboardViews, PostgresViews], ids: dict[str, str]
) -> None:
    """The shape of what is compared: the seed holds what the differential tests need."""
    _, pg = both
    parent = await pg.run_detail(ids["parent"])
    assert parent is not None and len(parent.children) == 4
    assert parent.children_by_status == {"paused": 3, "completed": 1}
    child = await pg.run_detail(parent.children[0].run_id)
    assert child is not None and child.parent == ids["parent"]
    assert child.waits[0].event_type == "zahlung.eingegangen.ü"
    fork = await pg.run_detail(ids["fork"])
    assert fork is not None and fork.forked_from == {"run_id": ids["failed1"], "step": "fail"}
    approve = await pg.run_detail(ids["approve"])
    assert approve is not None and approve.waits[0].timeout_at is not None
    assert approve.steps == ["grow", "wait_with_timeout", "touch"]
    events = await pg.recent_events()
    assert any(event.routes for event in events)


async def test_events_match(both: tuple[DashboardViews, PostgresViews]) -> None:
    lite, pg = both
    for limit in (1, 3, 200, -1):
        for text in ("", "order", "ORDER", "ü", "Ü", "é", "É", "%", "_", ".", "nothing"):
            events = await pg.recent_events(limit=limit, type_contains=text)
            assert events == await lite.recent_events(limit=limit, type_contains=text), text
    assert len(await pg.recent_events()) > 10
    assert await pg.waited_event_types() == await lite.waited_event_types()
    assert await pg.waited_event_types() == [
        "Approval.Given",
        "zahlung.eingegangen.ü",
    ]


async def test_workflows_and_figures_match(both: tuple[DashboardViews, PostgresViews]) -> None:
    lite, pg = both
    flows = await pg.workflows()
    assert flows == await lite.workflows()
    assert [f.workflow_id for f in flows][:2] == ["Orders-EU_1", "billing"]  # byte order
    assert next(f for f in flows if f.workflow_id == "deploys").disabled_at is not None
    assert next(f for f in flows if f.workflow_id == "orders").disabled_triggers == {"bad"}
    for since in (datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) - timedelta(hours=1)):
        figures = await pg.workflow_figures(since)
        assert figures == await lite.workflow_figures(since)
    assert next(f for f in figures if f.workflow_id == "reports").next_fire is not None
    assert next(f for f in figures if f.workflow_id == "billing").durations


async def test_the_readers_views_match(both: tuple[DashboardViews, PostgresViews]) -> None:
    """The views the reader answers (`DELEGATED`)."""
    lite, pg = both
    assert await pg.load_errors() == await lite.load_errors()
    assert await pg.daemon() == await lite.daemon() is None
    for after, limit in ((0, 5), (0, 1000), (10, 3)):
        assert await pg.log_entries(after=after, limit=limit) == await lite.log_entries(
            after=after, limit=limit
        )
    for prefix in ("", "9", "0", "zz"):
        assert await pg.match_runs(prefix) == await lite.match_runs(prefix)


async def test_the_runs_keys_are_in_byte_order_whatever_the_databases_collation(
    both: tuple[DashboardViews, PostgresViews],
) -> None:
    """Migration 3 declares them COLLATE "C": the plain indexes serve prefixes and sorts,
    in a database of the C collation as under ICU, and no query needs to say COLLATE."""
    _, pg = both
    assert await pg.collate() == ""
    await pg.reader.fetch("SELECT set_config('enable_seqscan', 'off', false)")  # few rows
    for sql, params in (
        ("SELECT id FROM runs r WHERE " + pg_search.prefix("r.run_id", ""), pg_search.bounds("ab")),
        ("SELECT id FROM runs r ORDER BY r.status, r.id DESC LIMIT 5", []),
        ("SELECT id FROM runs r ORDER BY r.workflow_id, r.id DESC LIMIT 5", []),
    ):
        plan = "\n".join(str(row[0]) for row in await pg.reader.fetch("EXPLAIN " + sql, params))
        assert "Index" in plan and "Sort" not in plan, plan


async def test_the_busy_timeout_is_a_lock_timeout(
    both: tuple[DashboardViews, PostgresViews],
) -> None:
    _, pg = both
    await pg.set_busy_timeout(1_500)
    assert (await pg.reader.fetch("SHOW lock_timeout"))[0][0] == "1500ms"
    assert (await pg.reader.fetch("SHOW statement_timeout"))[0][0] == "0"


async def test_the_busy_timeout_holds_on_a_connection_made_again(pg_url: str) -> None:
    """The reader opens a new connection when its own was lost: the setting comes along."""
    await migrate_journal(pg_url)
    views = await PostgresViews.open(pg_url)
    try:
        await views.set_busy_timeout(1_500)
        lost = views.reader.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (lost,))
            gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
            await eventually(
                lambda: conn.execute(gone, (lost,)).fetchone() == (0,), what="it to be gone"
            )
        assert (await views.reader.fetch("SHOW lock_timeout"))[0][0] == "1500ms"
        assert views.reader.backend_pid != lost
    finally:
        await views.close()


async def test_a_search_of_errors_reads_an_index_of_them_long_errors_too(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 3 keeps errors beside their run ids: the search reads no run's row.

    A journal that migrations 1 and 2 made, with runs, gets migration 3; an error too long for a
    btree entry is found too (an index of its id only).
    """
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
        await migrate_journal(pg_url)
    long = "card declined: " + "".join(chr(0x4E00 + i % 5000) for i in range(1000))  # 3 KB
    errors = {"r1": "Card DECLINED", "r2": long, "r3": None, "r4": "timeout"}
    queued = functools.partial(ops.create_run, status=RunStatus.QUEUED, first_step="a", state="{}")
    writer = PostgresWriter(pg_url)
    await writer.open()
    task = asyncio.create_task(writer.run())
    try:
        for row, (run_id, error) in enumerate(errors.items(), start=1):
            status = RunStatus.FAILED if error else RunStatus.COMPLETED
            await writer.write(
                [
                    *queued(row, run_id, "wf", "t", "v", at=row),
                    ops.set_status(row, status, row + 1, error=error),
                ]
            )
    finally:
        await writer.close()
        await task
    await migrate_journal(pg_url)
    views = await PostgresViews.open(pg_url)
    try:
        page = await views.runs_page(RunFilter(search="declined"), offset=0, limit=10)
        assert ([row.run_id for row in page.rows], page.total) == (["r2", "r1"], 2)
        page = await views.runs_page(RunFilter(search="nowhere"), offset=0, limit=10)
        assert (page.rows, page.total) == ([], 0)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # the visibility map an
            conn.execute("VACUUM orchestrator.runs")  # index-only scan reads
        for setting in ("enable_seqscan", "enable_bitmapscan"):  # 4 runs: a scan is cheaper
            await views.reader.fetch("SELECT set_config(%s, 'off', false)", [setting])
        plan = await views.reader.fetch(
            "EXPLAIN SELECT id FROM runs WHERE error IS NOT NULL"
            " AND octet_length(error) + coalesce(octet_length(error_code), 0) <= 2000"
            f" AND {pg_search.contains('error')}",
            [pg_search.like("declined")],
        )
        assert "Index Only Scan using runs_errors_short" in str([row[0] for row in plan])
    finally:
        await views.close()


def test_merge_patches_as_sqlite_json_patch() -> None:
    assert merge({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [None]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "f": [None],
    }
    assert list(merge({"x": 1, "y": 2}, {"z": 3, "x": 5})) == ["x", "y", "z"]
    assert merge([1], {"a": {"b": None}}) == {"a": {}}
    assert merge({"a": 1}, [2]) == [2]
    # The state's text as SQLite's `state_of` gives it, damaged rows as UNREADABLE.
    assert state_text('{"a":1,"b":2}', '{"a":null,"c":"ü"}') == '{"b":2,"c":"ü"}'
    assert state_text('{"a":1}', None) == '{"a":1}'
    assert state_text(None, None) == state_text(None, "{}") == UNREADABLE
    assert state_text('{"a":NaN}', "{}") == state_text("{}", "{oops") == UNREADABLE


# --- the dashboard on a PostgreSQL journal -------------------------------------------------


async def test_the_dashboard_shows_a_postgresql_journal(
    pg_journal: str,
    ids: dict[str, str],
) -> None:
    """Runs, a run's detail, the events and the workflows screens, read from PostgreSQL."""
    url = pg_journal.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    app = DashboardApp(url)
    async with app.run_test(size=(160, 40)) as pilot:
        table = runs_table(app)
        await until(pilot, lambda: table.row_count >= 30, "the runs")
        assert ids["parent"] in keys(table)
        banner = "\n".join(
            static_text(b) for b in app.screen.query("JournalBanner").results(Static)
        )
        assert "database pgviews" in banner and "s3cret" not in banner

        app.open_run(ids["parent"])
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run")
        screen = app.screen
        await until(pilot, lambda: "parent.fan" in _text_of(screen), "the run's detail to show")
        text = _text_of(screen)
        assert "Orders-EU_1 | hold" in text and "billing | quick" in text  # its children
        await pilot.press("escape")

        await pilot.press("3")
        await until(pilot, lambda: isinstance(app.screen, EventsScreen), "the events screen")
        events = app.screen.query_one(DataTable)
        await until(pilot, lambda: events.row_count > 10, "the events")
        assert "zahlung.eingegangen.ü" in "\n".join(row_text(events, k) for k in keys(events))

        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen), "the workflows")
        flows = app.screen.query_one("#workflows", DataTable)
        await until(pilot, lambda: flows.row_count == 6, "the workflows")
        assert keys(flows)[0] == "Orders-EU_1"
        errors = app.screen.query_one("#errors", DataTable)
        await until(pilot, lambda: errors.row_count == 1, "the load error")


def _text_of(screen: Any) -> str:
    """Everything the screen's widgets show, as text."""
    parts = []
    for widget in screen.query("*"):
        if isinstance(widget, Static):
            parts.append(static_text(widget))
        elif isinstance(widget, DataTable):
            parts.extend(row_text(widget, key) for key in keys(widget))
    return "\n".join(parts)


def test_dataclasses_compare_by_value() -> None:
    """What the differential tests rely on: the views' records are compared field by field."""
    from orchestrator.journal.view_records import RunDetail, RunPage

    assert dataclasses.is_dataclass(RunDetail) and dataclasses.is_dataclass(RunPage)

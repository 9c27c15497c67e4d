"""What keeps a journal of a million runs fast, checked for what it answers on real journals.

`run_counts` (kept by triggers) must equal a count of the runs after any writes, prunes
and a migration; the dashboard's search must find exactly the runs its rule says, whichever
way it reads them (few matches: by their ids; many: in order); `runs --status` must read
the status index.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from procs import query

from orchestrator import Runtime, Step, Workflow
from orchestrator.clock import new_id
from orchestrator.journal.sqlite import run_search
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.views import DashboardQueries
from orchestrator.journal.view_records import RunFilter
from orchestrator.records import RunStatus, id_problem


def ok(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "ok": True}


def broken(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"order {state['n']} is broken")


def hold(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go")


WORKFLOWS = [
    Workflow(id="orders", pipelines={"place": [ok], "refund": [Step(broken, name="refund")]}),
    Workflow(id="reports", pipelines={"daily": [ok], "hold": [hold]}),
]


@pytest.fixture
async def journal(db: Path) -> Path:
    async with Runtime(db, workflows=WORKFLOWS) as rt:
        for n in range(12):
            workflow, trigger = [
                ("orders", "place"),
                ("orders", "refund"),
                ("reports", "daily"),
                ("reports", "hold"),
            ][n % 4]
            await rt.invoke(workflow, trigger, {"n": n})
    return db


def counted(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db, "SELECT workflow_id, trigger_id, status, n FROM run_counts WHERE n > 0 ORDER BY 1, 2, 3"
    )


def by_scan(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT workflow_id, trigger_id, status, count(*) FROM runs"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )


async def test_run_counts_follow_every_write_and_prune(journal: Path) -> None:
    assert counted(journal) == by_scan(journal)
    assert ("reports", "hold", "paused", 3) in counted(journal)
    async with Runtime(journal, workflows=WORKFLOWS) as rt:
        paused = await rt.list_runs(status="paused")
        await rt.abort(paused[0].run_id)
        await rt.emit("go")  # the other paused runs resume and complete
        await rt.idle()
        assert counted(journal) == by_scan(journal)
        await rt.prune(0, ["failed"])
    assert counted(journal) == by_scan(journal)
    assert not [row for row in counted(journal) if row[2] == "failed"]
    reader = await JournalReader.open(journal)
    try:
        views = DashboardQueries(reader)
        assert await views.status_counts() == {"completed": 8, "aborted": 1}
        assert await views.status_counts("reports") == {"completed": 5, "aborted": 1}
        page = await views.runs_page(RunFilter(status=RunStatus.COMPLETED), offset=0, limit=2)
        assert page.total == 8 and len(page.rows) == 2
    finally:
        await reader.close()


def reference(db: Path, wanted: RunFilter) -> list[str]:
    """The rule, applied to every run in Python: newest first."""
    text = wanted.search.strip().lower()
    found = []
    for run_id, workflow, trigger, status, error, code in query(
        db,
        "SELECT run_id, workflow_id, trigger_id, status, error, error_code FROM runs"
        " ORDER BY id DESC",
    ):
        if wanted.status is not None and status != wanted.status:
            continue
        if wanted.workflow is not None and workflow != wanted.workflow:
            continue
        fields = [workflow, trigger, error or "", code or ""]
        if run_id.lower().startswith(text) or any(text in f.lower() for f in fields):
            found.append(run_id)
    return found


@pytest.mark.parametrize("dense", [False, True], ids=["by-ids", "in-order"])
async def test_search_finds_what_its_rule_says_either_way(
    journal: Path, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if dense:
        monkeypatch.setattr(run_search, "DENSE", 0)
    [(some_id,)] = query(journal, "SELECT run_id FROM runs WHERE id = 5")
    searches = [
        some_id[:6],
        some_id[:6].upper(),
        some_id[10:16],  # the middle of an id: not a match
        "ORDER",
        "refund",
        "port",
        "order 5 is",
        "STEP_FAIL",
        "ly",
        "100%",
        "nothing like this",
    ]
    reader = await JournalReader.open(journal)
    try:
        views = DashboardQueries(reader)
        for text in searches:
            for status in (None, RunStatus.COMPLETED, RunStatus.FAILED):
                for workflow in (None, "orders"):
                    wanted = RunFilter(status=status, workflow=workflow, search=text)
                    expected = reference(journal, wanted)
                    page = await views.runs_page(wanted, offset=0, limit=3)
                    assert [row.run_id for row in page.rows] == expected[:3], wanted
                    assert page.total == len(expected), wanted
                    second = await views.runs_page(wanted, offset=3, limit=50)
                    assert [row.run_id for row in second.rows] == expected[3:], wanted
    finally:
        await reader.close()
    assert reference(journal, RunFilter(search=some_id[:6])) == [some_id]
    assert reference(journal, RunFilter(search=some_id[10:16])) == []


async def test_runs_of_a_status_are_read_through_its_index(
    journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, list[Any]]] = []
    fetch = JournalReader._fetch

    async def recorded(self: JournalReader, sql: str, params: Any = ()) -> Any:
        asked.append((sql, list(params)))
        return await fetch(self, sql, params)

    monkeypatch.setattr(JournalReader, "_fetch", recorded)
    reader = await JournalReader.open(journal)
    try:
        failed = await reader.list_runs(status="failed")
        assert [run.workflow_id for run in failed] == ["orders"] * 3
        assert [run.status for run in await reader.list_runs(workflow="reports", limit=2)] == [
            "paused",
            "completed",
        ]
    finally:
        await reader.close()
    conn = sqlite3.connect(journal)
    try:
        plans = [
            " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in asked
            if "FROM runs r" in sql
        ]
    finally:
        conn.close()
    assert re.search(r"SEARCH r USING (COVERING )?INDEX runs_by_status", plans[0]), plans[0]
    assert re.search(r"SEARCH r USING (COVERING )?INDEX runs_by_workflow", plans[1]), plans[1]


def test_ids_are_unique_valid_and_made_close_in_time_sort_close() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and id_problem(i, "run") is None for i in ids)
    burst = [new_id() for _ in range(1_000)]  # a fan-out's children, made at once
    assert len({i[:8] for i in burst}) >= 995  # their short ids still tell them apart
    # Made one after another: their first 3 digits (a wrapping count of 16 ms ticks) move
    # by small steps, where random ids would jump anywhere (one wrap of 65.5 s allowed).
    ticks = [int(i[:3], 16) for i in ids]
    steps = [(b - a) % 0x1000 for a, b in itertools.pairwise(ticks)]
    assert sum(step > 100 for step in steps) <= 1

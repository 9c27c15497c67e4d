"""Child runs and fan-out: ctx.start, ctx.emit and ctx.join on real journals.

Starts and emits are an outbox committed with the step's checkpoint: each happens once
per completed step, never for a failed attempt, and never twice across a SIGKILL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import fanout_steps
import pytest
from pilots import until
from procs import ROOT, Workers, query, show
from rich.text import Text
from textual.widgets import DataTable, Static

from orchestrator import Runtime, Step, StepContext, Transient, Workflow
from orchestrator.journal import open_journal
from orchestrator.testing import eventually
from tui.app import DashboardApp
from tui.detail import RunDetailScreen

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL

State = dict[str, Any]


async def status_of(rt: Runtime, workflow: str, run_id: str) -> str:
    info = await rt.watch(workflow, run_id)
    assert info is not None
    return str(info.status)


async def until_status(
    rt: Runtime,
    workflow: str,
    run_id: str,
    status: str,
    timeout: float = 10,  # noqa: ASYNC109
) -> None:
    async def reached() -> bool:
        return await status_of(rt, workflow, run_id) == status

    await eventually(reached, what=f"run {run_id} is {status}", timeout=timeout)


def children_of(db: Path, parent: str) -> list[str]:
    rows = query(
        db, "SELECT child FROM children WHERE parent = ? ORDER BY created_at, n", (parent,)
    )
    return [row[0] for row in rows]


async def test_a_fan_out_joins_every_child_in_order_with_failures(db: Path) -> None:
    async with Runtime(db, workflows=fanout_steps.workflows()) as rt:
        parent = (await rt.invoke("parent", "go", {"count": 10})).run_id
        await until_status(rt, "parent", parent, "completed")
        result = await rt.wait(parent)
    assert result.state == {
        "count": 10,
        "completed": 8,
        "failed": ["STEP_FAILED", "STEP_FAILED"],  # 4 and 9, in the order started
        "total": sum(n * n for n in range(10) if n % 5 != 4),
    }
    children = children_of(db, parent)
    assert len(children) == 10
    # Each child once, with its own input, in the order the step started them.
    rows = dict(query(db, "SELECT run_id, status FROM runs WHERE workflow_id = 'child'"))
    assert sorted(rows) == sorted(children)
    assert [rows[c] for c in children] == [
        "failed" if n % 5 == 4 else "completed" for n in range(10)
    ]
    assert query(db, "SELECT type, data, source FROM events WHERE type = 'batch.split'") == [
        ("batch.split", '{"count":10}', "run")
    ]
    shown = show(db, children[4])
    assert (shown["parent"], shown["children"]) == (parent, [])
    shown = show(db, parent)
    assert (shown["parent"], shown["children"]) == (None, children)
    resumed = [e for e in shown["timeline"] if e["kind"] == "run.resumed"]
    assert [e["data"] for e in resumed] == [{"joined": 10, "failed": 2}]


async def test_the_join_gives_each_childs_status_state_and_error(db: Path) -> None:
    def fan(state: State, ctx: StepContext) -> Any:
        return ctx.join([ctx.start("child", "one", {"n": n}) for n in (3, 4)], into="got")

    parent = Workflow(id="parent", pipelines={"go": [Step(fan)]})
    async with Runtime(db, workflows=[parent, fanout_steps.workflows()[1]]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed")
        got = (await rt.wait(run_id)).state["got"]
    ids = children_of(db, run_id)
    assert got[0] == {
        "run_id": ids[0],
        "status": "completed",
        "state": {"n": 3, "square": 9},
        "error": None,
        "error_code": None,
    }
    assert (got[1]["run_id"], got[1]["status"], got[1]["error_code"]) == (
        ids[1],
        "failed",
        "STEP_FAILED",
    )
    assert "4 is unlucky" in got[1]["error"]


async def test_a_join_on_a_run_that_will_never_exist_ends_instead_of_waiting(db: Path) -> None:
    # An id no run has and no invoke will make (a typo, or a key another run holds): the
    # join reports it not found rather than parking the run for ever.
    def fan(state: State, ctx: StepContext) -> Any:
        child = ctx.start("child", "one", {"n": 3})
        return ctx.join([child, "0" * 32], into="got")

    parent = Workflow(id="parent", pipelines={"go": [Step(fan)]})
    async with Runtime(db, workflows=[parent, fanout_steps.workflows()[1]]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed")
        got = (await rt.wait(run_id)).state["got"]
    assert [entry["status"] for entry in got] == ["completed", None]
    assert got[1]["error_code"] == "RUN_NOT_FOUND" and "never started" in got[1]["error"]


async def test_a_failed_then_retried_step_starts_its_children_once(db: Path) -> None:
    attempts: list[int] = []

    def flaky(state: State, ctx: StepContext) -> Any:
        attempts.append(ctx.attempt)
        child = ctx.start("child", "one", {"n": ctx.attempt})
        ctx.emit("flaky.emitted", {"attempt": ctx.attempt})
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails after starting a child")
        return ctx.join([child], into="results")

    parent = Workflow(id="parent", pipelines={"go": [Step(flaky, retries=1, backoff=0)]})
    async with Runtime(db, workflows=[parent, fanout_steps.workflows()[1]]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed")
        results = (await rt.wait(run_id)).state["results"]
    assert attempts == [1, 2]
    assert [r["state"] for r in results] == [{"n": 2, "square": 4}]  # the second attempt's
    assert query(db, "SELECT count(*) FROM runs WHERE workflow_id = 'child'") == [(1,)]
    assert query(db, "SELECT data FROM events WHERE type = 'flaky.emitted'") == [('{"attempt":2}',)]


async def test_a_fan_out_under_concurrency_2_never_runs_more_than_2(db: Path) -> None:
    running = 0
    most = 0

    async def busy(state: State) -> State:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)  # lets the others start, if the gate allowed them
        running -= 1
        return state

    def fan(state: State, ctx: StepContext) -> Any:
        return ctx.join([ctx.start("child", "one", {"n": n}) for n in range(8)], into="got")

    parent = Workflow(id="parent", pipelines={"go": [Step(fan)]})
    child = Workflow(id="child", pipelines={"one": [Step(busy)]}, mode=Transient(concurrency=2))
    async with Runtime(db, workflows=[parent, child]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed")
    assert most == 2
    # The journal says so too: the children beyond two waited for a slot.
    queued = query(
        db,
        "SELECT count(DISTINCT t.run) FROM timeline t JOIN runs r ON r.id = t.run"
        " WHERE r.workflow_id = 'child' AND t.kind = 'run.queued'",
    )
    assert queued[0][0] >= 1
    assert query(db, "SELECT DISTINCT status FROM runs WHERE workflow_id = 'child'") == [
        ("completed",)
    ]


def waiting_child() -> Workflow:
    def wait(state: State, ctx: StepContext) -> Any:
        return ctx.pause("go.on", into="signal")

    return Workflow(id="child", pipelines={"one": [Step(wait), Step(lambda s: s, name="done")]})


def fanning(count: int, **join: Any) -> Workflow:
    def fan(state: State, ctx: StepContext) -> Any:
        ids = [ctx.start("child", "one", {"n": n}) for n in range(count)]
        return ctx.join(ids, into="got", **join)

    return Workflow(id="parent", pipelines={"go": [Step(fan), Step(lambda s: s, name="after")]})


async def test_aborting_a_parent_mid_fan_out_aborts_its_unfinished_children(db: Path) -> None:
    async with Runtime(db, workflows=[fanning(4), waiting_child()]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id

        async def all_paused() -> bool:
            runs = await rt.list_runs(workflow="child")
            return len(runs) == 4 and all(r.status == "paused" for r in runs)

        await eventually(all_paused, what="every child paused")
        first = children_of(db, run_id)[0]
        await rt.resume(first, {"early": True})  # one child completes before the abort
        await until_status(rt, "child", first, "completed")
        await rt.abort(run_id)

        async def all_final() -> list[str] | None:
            runs = await rt.list_runs(workflow="child")
            statuses = sorted(str(r.status) for r in runs)
            return statuses if "paused" not in statuses else None

        statuses = await eventually(all_final, what="the children are aborted")
    assert statuses == ["aborted", "aborted", "aborted", "completed"]
    assert query(db, "SELECT status FROM runs WHERE run_id = ?", (run_id,)) == [("aborted",)]


async def test_a_join_times_out_like_a_pause(db: Path) -> None:
    async with Runtime(db, workflows=[fanning(2, timeout=0.05), waiting_child()]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed")
        assert (await rt.wait(run_id)).state["got"] is None
    async with Runtime(
        db, workflows=[fanning(2, timeout=0.05, on_timeout="fail"), waiting_child()]
    ) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "failed")
        assert (await rt.wait(run_id)).error_code == "PAUSE_TIMEOUT"


async def test_a_join_parked_across_a_restart_completes(db: Path) -> None:
    async with Runtime(db, workflows=[fanning(3), waiting_child()]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id

        async def all_paused() -> bool:
            runs = await rt.list_runs(workflow="child")
            return len(runs) == 3 and all(r.status == "paused" for r in runs)

        await eventually(all_paused, what="every child paused")
    # While no runtime runs, an event every child waits for is journaled.
    open_journal(db).commands.emit_event("go.on", {"ok": 1})
    async with Runtime(db, workflows=[fanning(3), waiting_child()]) as rt:
        await until_status(rt, "parent", run_id, "completed")
        got = (await rt.wait(run_id)).state["got"]
    assert [r["status"] for r in got] == ["completed"] * 3
    assert [r["state"]["signal"] for r in got] == [{"ok": 1}] * 3


async def test_isolated_steps_start_emit_and_join(db: Path) -> None:
    workflows = fanout_steps.workflows(isolate=True)
    async with Runtime(db, workflows=workflows, isolate=True) as rt:
        parent = (await rt.invoke("parent", "go", {"count": 5})).run_id
        await until_status(rt, "parent", parent, "completed")
        result = await rt.wait(parent)
    assert result.state["count"] == 5 and result.state["failed"] == ["STEP_FAILED"]
    assert len(children_of(db, parent)) == 5
    assert query(db, "SELECT count(*) FROM events WHERE type = 'batch.split'") == [(1,)]


@pytest.mark.parametrize("where", ["child", "split"])
@pytest.mark.sqlite_only  # its worker signals through files beside the journal
def test_a_sigkill_around_the_fan_out_starts_each_child_once(
    db: Path, where: str, tmp_path: Path
) -> None:
    """SIGKILL in the first child (the fan-out committed) or in the step (it did not)."""
    with Workers(ROOT / "tests" / "fanout_worker.py", db, tmp_path) as workers:
        killed = workers.start("20", where)
        assert killed.wait(timeout=60) == -9, workers.stderr()
        committed = query(db, "SELECT count(*) FROM children")[0][0]
        assert committed == (20 if where == "child" else 0)
        again = workers.start("20", where)
        assert again.wait(timeout=120) == 0, workers.stderr()
    [(parent, state)] = query(db, "SELECT run_id, status FROM runs WHERE workflow_id = 'parent'")
    assert state == "completed"
    children = children_of(db, parent)
    assert len(children) == 20
    inputs = query(db, "SELECT r.run_id FROM runs r WHERE r.workflow_id = 'child'")
    assert sorted(row[0] for row in inputs) == sorted(children)  # each child once
    numbers = [
        row[0]
        for row in query(
            db,
            "SELECT json_extract(c.state, '$.n') FROM checkpoints c JOIN runs r ON r.id = c.run"
            " WHERE r.workflow_id = 'child' AND c.position = 0",
        )
    ]
    assert sorted(numbers) == list(range(20))
    assert query(db, "SELECT count(*) FROM events WHERE type = 'batch.split'") == [(1,)]
    assert query(db, "SELECT count(*) FROM inbox WHERE command = 'invoke'") == [(20,)]
    assert query(db, "SELECT count(*) FROM inbox WHERE done_at IS NULL") == [(0,)]


async def test_ten_thousand_children(db: Path) -> None:
    async def one(state: State) -> State:
        return {"i": state["i"], "done": True}

    def fan(state: State, ctx: StepContext) -> Any:
        ids = [ctx.start("child", "one", {"i": i}) for i in range(10_000)]
        return ctx.join(ids, into="results")

    def summary(state: State) -> State:
        return {"done": [r["state"]["i"] for r in state["results"] if r["status"] == "completed"]}

    parent = Workflow(id="parent", pipelines={"go": [Step(fan, inline=True), Step(summary)]})
    child = Workflow(id="child", pipelines={"one": [one]})
    async with Runtime(db, workflows=[parent, child]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed", timeout=120)
        result = await rt.wait(run_id)
    assert result.state == {"done": list(range(10_000))}
    assert query(db, "SELECT count(*) FROM runs WHERE workflow_id = 'child'") == [(10_000,)]
    assert query(db, "SELECT count(*) FROM children WHERE parent = ?", (run_id,)) == [(10_000,)]


async def test_a_child_of_a_workflow_not_loaded_fails_and_its_join_ends(db: Path) -> None:
    def fan(state: State, ctx: StepContext) -> Any:
        return ctx.join([ctx.start("nowhere", "one", {"n": 1})], into="got")

    parent = Workflow(id="parent", pipelines={"go": [Step(fan)]})
    async with Runtime(db, workflows=[parent]) as rt:
        run_id = (await rt.invoke("parent", "go")).run_id
        await until_status(rt, "parent", run_id, "completed")
        [got] = (await rt.wait(run_id)).state["got"]
    assert (got["status"], got["error_code"]) == ("failed", "NOT_INVOCABLE")
    assert "nowhere" in got["error"]
    assert show(db, got["run_id"])["parent"] == run_id


@pytest.mark.parametrize("isolate", [False, True])
async def test_a_key_starts_and_emits_once_across_runs(db: Path, isolate: bool) -> None:
    workflows = fanout_steps.keyed_workflows(isolate=isolate)
    async with Runtime(db, workflows=workflows) as rt:
        first = (await rt.invoke("keyed", "go", {"n": 2, "key": "k"})).run_id
        await until_status(rt, "keyed", first, "completed")
        second = (await rt.invoke("keyed", "go", {"n": 3, "key": "k"})).run_id
        await until_status(rt, "keyed", second, "completed")
        got = [(await rt.wait(r)).state["got"][0] for r in (first, second)]
    assert got[0] == got[1] and got[0]["state"] == {"n": 2, "square": 4}  # the first child
    assert query(db, "SELECT count(*) FROM runs WHERE workflow_id = 'child'") == [(1,)]
    assert query(db, "SELECT data FROM events WHERE type = 'keyed.event'") == [('{"n":2}',)]


# -- the dashboard ------------------------------------------------------------------------


def _plain(value: object) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def _summary(screen: RunDetailScreen) -> str:
    return _plain(screen.query_one("#summary", Static).content)


async def test_the_dashboard_shows_a_fan_outs_progress_and_links_both_ways(db: Path) -> None:
    async with Runtime(db, workflows=fanout_steps.workflows()) as rt:
        parent = (await rt.invoke("parent", "go", {"count": 5})).run_id
        await until_status(rt, "parent", parent, "completed")
    children = children_of(db, parent)
    app = DashboardApp(db)
    async with app.run_test(size=(140, 40)) as pilot:
        app.open_run(parent)
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the parent")
        screen = app.screen
        assert isinstance(screen, RunDetailScreen)
        await until(pilot, lambda: screen.detail is not None, "the parent's detail")
        assert "children 5 of 5 final · 1 failed or aborted" in _summary(screen)
        await pilot.press("h")
        table = screen.query_one("#children-table", DataTable)
        await until(pilot, lambda: table.row_count == 5, "the children listed")
        assert [row.key.value for row in table.ordered_rows] == children
        table.focus()
        table.move_cursor(row=4)
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is not screen, "the child's screen")
        child = app.screen
        assert isinstance(child, RunDetailScreen) and child.run_id == children[4]
        await until(pilot, lambda: child.detail is not None, "the child's detail")
        assert f"started by run {parent}" in _summary(child)
        await pilot.press("p")
        await until(pilot, lambda: app.screen is not child, "the parent again")
        again = app.screen
        assert isinstance(again, RunDetailScreen) and again.run_id == parent


async def test_a_retried_parent_does_not_start_its_children_again(db: Path) -> None:
    broken = [True]

    def fan(state: State, ctx: StepContext) -> State:
        return {"ids": [ctx.start("child", "one", {"n": n}) for n in (1, 2)]}

    def boom(state: State) -> State:
        if broken[0]:
            raise RuntimeError("not yet")
        return state

    parent = Workflow(id="parent", pipelines={"go": [Step(fan), Step(boom)]})
    async with Runtime(db, workflows=[parent, fanout_steps.workflows()[1]]) as rt:
        failed = await rt.invoke("parent", "go")
        assert failed.status == "failed"
        broken[0] = False
        retried = await rt.retry(failed.run_id)
        assert retried.status == "completed"
        await rt.idle()
    assert query(db, "SELECT count(*) FROM runs WHERE workflow_id = 'child'") == [(2,)]
    assert sorted(children_of(db, failed.run_id)) == sorted(retried.state["ids"])


async def test_pruning_a_child_takes_it_off_its_parents_list(db: Path) -> None:
    async with Runtime(db, workflows=fanout_steps.workflows()) as rt:
        parent = (await rt.invoke("parent", "go", {"count": 2})).run_id
        await until_status(rt, "parent", parent, "completed")
        await rt.prune(0)
    assert query(db, "SELECT count(*) FROM children") == [(0,)]

"""A paused run names the step it waits in (not the one it goes on at), everywhere it is shown.

`runs`, `runs --json`, `show` and the dashboard all read the run's `step` through the
journal's readers; resume and start-up recovery still continue at the next step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from procs import cli

from orchestrator import Runtime, Step, Workflow
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.views import DashboardQueries
from orchestrator.journal.view_records import RunFilter

ran: list[str] = []


def prepare(state: dict[str, Any]) -> dict[str, Any]:
    ran.append("prepare")
    return {**state, "prepared": True}


def await_approval(state: dict[str, Any], ctx: Any) -> Any:
    ran.append("await_approval")
    return ctx.pause(event="approved", into="approval")


def ship(state: dict[str, Any]) -> dict[str, Any]:
    ran.append("ship")
    return {**state, "shipped": True}


WORKFLOW = Workflow(
    id="w",
    pipelines={
        "go": [
            Step(prepare, name="prepare"),
            Step(await_approval, name="await_approval"),
            Step(ship, name="ship"),
        ]
    },
)


async def shown_step(db: Path, run_id: str) -> tuple[str | None, str | None]:
    """The step of the run as `get_run` and as the dashboard's runs page show it."""
    reader = await JournalReader.open(db)
    try:
        info = await reader.get_run(run_id)
        page = await DashboardQueries(reader).runs_page(RunFilter(), offset=0, limit=10)
    finally:
        await reader.close()
    assert info is not None
    [row] = [row for row in page.rows if row.run_id == run_id]
    return info.step, row.step


async def test_a_run_paused_in_step_2_of_3_shows_step_2_and_resumes_at_step_3(db: Path) -> None:
    ran.clear()
    async with Runtime(db, workflows=[WORKFLOW]) as rt:
        result = await rt.invoke("w", "go", {})
        assert result.status == "paused"
        [info] = await rt.list_runs()
        assert info.step == "await_approval"
        assert await shown_step(db, result.run_id) == ("await_approval", "await_approval")

        await rt.resume(result.run_id, {"note": "ok"})
        done = await rt.wait(result.run_id, timeout=5)
    assert done.status == "completed" and done.state["shipped"] is True
    assert ran == ["prepare", "await_approval", "ship"]  # the pausing step never ran again
    assert await shown_step(db, result.run_id) == (None, None)  # a completed run has no step


async def test_the_cli_shows_the_step_a_paused_run_waits_in(db: Path) -> None:
    async with Runtime(db, workflows=[WORKFLOW]) as rt:
        run_id = (await rt.invoke("w", "go", {})).run_id
    listed = cli("runs", "--json", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    [summary] = json.loads(listed.stdout)
    assert (summary["status"], summary["step"]) == ("paused", "await_approval")
    table = cli("runs", "--db", str(db)).stdout
    assert "await_approval" in table and "ship" not in table
    shown = cli("show", run_id, "--db", str(db)).stdout
    assert "status    paused in step await_approval" in shown


async def test_a_run_aborted_while_paused_shows_the_step_it_waited_in_until_retried(
    db: Path,
) -> None:
    ran.clear()
    async with Runtime(db, workflows=[WORKFLOW]) as rt:
        run_id = (await rt.invoke("w", "go", {})).run_id
        await rt.abort(run_id)
        assert await shown_step(db, run_id) == ("await_approval", "await_approval")
        retried = await rt.retry(run_id, {"approval": "by hand"})
    assert retried.status == "completed" and ran == ["prepare", "await_approval", "ship"]
    assert await shown_step(db, run_id) == (None, None)


async def test_recovery_of_a_paused_run_continues_at_the_step_after_the_pause(db: Path) -> None:
    ran.clear()
    async with Runtime(db, workflows=[WORKFLOW]) as rt:
        run_id = (await rt.invoke("w", "go", {})).run_id
    async with Runtime(db, workflows=[WORKFLOW]) as rt:  # a new process finds it paused
        [info] = await rt.list_runs()
        assert (info.status, info.step) == ("paused", "await_approval")
        await rt.emit("approved", {"by": "ann"})
        done = await rt.wait(run_id, timeout=5)
    assert done.status == "completed" and done.state["approval"] == {"by": "ann"}
    assert ran == ["prepare", "await_approval", "ship"]

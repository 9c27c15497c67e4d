"""Disable and enable in process: events, schedules, invoke, paused runs, restarts."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from procs import acli

from orchestrator import (
    FakeClock,
    Runtime,
    Schedule,
    Step,
    Trigger,
    TriggerNotFound,
    ValidationError,
    Workflow,
    WorkflowDisabled,
)
from orchestrator.engine.context import StepContext
from orchestrator.journal import open_journal

START = datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC)


def mark(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "done": True}


def orders() -> Workflow:
    return Workflow(
        id="orders",
        triggers={"new": Trigger("order.created"), "paid": Trigger("order.paid")},
        pipelines={"new": [Step(mark)], "paid": [Step(mark)]},
    )


def nightly() -> Workflow:
    return Workflow(
        id="cron",
        triggers={"tick": Schedule(cron="* * * * *", tz="UTC")},
        pipelines={"tick": [Step(mark)]},
    )


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def schedule_shown(db: Path) -> dict[str, Any]:
    """The ``tick`` trigger as ``orchestrator workflows --json`` shows it."""
    out = await acli("workflows", "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    [workflow] = json.loads(out.stdout)["workflows"]
    [trigger] = workflow["triggers"]
    assert trigger["trigger_id"] == "tick"
    return {"workflow_enabled": workflow["enabled"], **trigger}


async def runs_of(rt: Runtime, trigger: str | None = None) -> int:
    return sum(1 for r in await rt.list_all_runs() if trigger is None or r.trigger_id == trigger)


async def test_a_disabled_workflow_starts_no_run_from_events_and_never_later(db: Path) -> None:
    async with Runtime(db, workflows=[orders()]) as rt:
        await rt.emit("order.created", {"n": 1})
        await rt.idle()
        assert await runs_of(rt) == 1
        await rt.disable("orders")
        await rt.disable("orders")  # idempotent
        await rt.emit("order.created", {"n": 2})
        await rt.emit("order.paid", {"n": 2})
        await rt.idle()
        assert await runs_of(rt) == 1
        await rt.enable("orders")
        await rt.idle()
        assert await runs_of(rt) == 1  # the events of while it was disabled start nothing
        await rt.emit("order.created", {"n": 3})
        await rt.idle()
        assert await runs_of(rt) == 2
    assert query(db, "SELECT count(*) FROM events") == [(4,)]  # every event is journaled
    assert query(db, "SELECT workflow_id, trigger_id, enabled FROM switches") == [("orders", "", 1)]


async def test_one_trigger_disabled_leaves_the_other_running(db: Path) -> None:
    async with Runtime(db, workflows=[orders()]) as rt:
        await rt.disable("orders", "new")
        await rt.emit("order.created", {})
        await rt.emit("order.paid", {})
        await rt.idle()
        assert (await runs_of(rt, "new"), await runs_of(rt, "paid")) == (0, 1)
        with pytest.raises(WorkflowDisabled, match="trigger 'new'") as caught:
            await rt.invoke("orders", "new", {})
        assert caught.value.code == "DISABLED"
        assert (await rt.invoke("orders", "paid", {})).ok


async def test_invoke_of_a_disabled_workflow_raises_disabled(db: Path) -> None:
    async with Runtime(db, workflows=[orders()]) as rt:
        await rt.disable("orders")
        with pytest.raises(WorkflowDisabled, match="orchestrator enable orders"):
            await rt.invoke("orders", "paid", {})
        with pytest.raises(WorkflowDisabled):
            await rt.invoke("orders", "paid", {}, key="k1")
        assert await runs_of(rt) == 0
        await rt.enable("orders")
        assert (await rt.invoke("orders", "paid", {})).ok


async def test_unknown_trigger_of_a_registered_workflow_is_refused(db: Path) -> None:
    async with Runtime(db, workflows=[orders()]) as rt:
        with pytest.raises(TriggerNotFound):
            await rt.disable("orders", "nope")
        await rt.disable("later", "whatever")  # not registered (yet): allowed
    assert query(db, "SELECT workflow_id, trigger_id, enabled FROM switches") == [
        ("later", "whatever", 0)
    ]


async def test_a_workflow_disabled_before_it_is_registered_starts_nothing(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.disable("orders")
        await rt.register(orders())
        await rt.emit("order.created", {})
        await rt.idle()
        assert await runs_of(rt) == 0


async def test_the_switch_survives_a_restart_and_a_new_version(db: Path) -> None:
    async with Runtime(db, workflows=[orders()]) as rt:
        await rt.disable("orders", "paid")
    changed = Workflow(
        id="orders",
        triggers={"new": Trigger("order.created"), "paid": Trigger("order.paid")},
        pipelines={"new": [Step(mark)], "paid": [Step(mark), Step(mark, name="again")]},
    )
    async with Runtime(db, workflows=[orders()]) as rt:
        await rt.register(changed)  # a reload of its file
        await rt.emit("order.paid", {})
        await rt.idle()
        assert await runs_of(rt) == 0
        with pytest.raises(WorkflowDisabled):
            await rt.invoke("orders", "paid", {})


async def test_a_paused_run_of_a_disabled_workflow_still_resumes(db: Path) -> None:
    def wait(state: dict[str, Any], ctx: StepContext) -> Any:
        return ctx.pause("order.paid", where={"id": ("==", state["id"])})

    workflow = Workflow(
        id="pay",
        triggers={"new": Trigger("order.created")},
        pipelines={"new": [Step(wait), Step(mark)]},
    )
    async with Runtime(db, workflows=[workflow]) as rt:
        result = await rt.invoke("pay", "new", {"id": 7})
        assert result.status == "paused"
        await rt.disable("pay")
        await rt.emit("order.paid", {"id": 7})
        done = await rt.wait(result.run_id, timeout=10)
        assert done.status == "completed" and done.state["done"] is True


async def test_schedule_ticks_while_disabled_are_skipped_not_caught_up(db: Path) -> None:
    clock = FakeClock(START)
    async with Runtime(db, clock=clock, workflows=[nightly()]) as rt:
        await clock.advance(60)
        assert await runs_of(rt) == 1
        shown = await schedule_shown(db)
        assert shown["enabled"] is True and shown["next_fire_at"] == "2026-01-05T10:02:00.000Z"
        await rt.disable("cron", "tick")
        shown = await schedule_shown(db)
        assert (shown["workflow_enabled"], shown["enabled"], shown["next_fire_at"]) == (
            True,
            False,
            None,
        )
        await clock.advance(600)
        assert await runs_of(rt) == 1
        await rt.enable("cron")  # the workflow was never disabled: nothing changes
        await rt.enable("cron", "tick")
        await rt.idle()
        assert await runs_of(rt) == 1  # no catch-up of the ten ticks it missed
        shown = await schedule_shown(db)
        assert shown["enabled"] is True and shown["next_fire_at"] == "2026-01-05T10:12:00.000Z"
        await clock.advance(60)
        assert await runs_of(rt) == 2


async def test_a_schedule_enabled_while_down_does_not_catch_up(db: Path) -> None:
    clock = FakeClock(START)
    async with Runtime(db, clock=clock, workflows=[nightly()]) as rt:
        await rt.disable("cron")
        shown = await schedule_shown(db)
        assert shown["workflow_enabled"] is False and shown["enabled"] is False
        assert shown["next_fire_at"] is None
    await clock.advance(3600)
    async with Runtime(db, clock=clock, workflows=[nightly()]) as rt:
        await rt.idle()
        assert await runs_of(rt) == 0  # disabled across the restart: no catch-up at start
        await rt.enable("cron")
        await rt.idle()
        assert await runs_of(rt) == 0
    await clock.advance(3600)
    async with Runtime(db, clock=clock, workflows=[nightly()]) as rt:
        await rt.idle()
        assert await runs_of(rt) == 1  # enabled: downtime is caught up as usual (the latest)


async def test_a_disable_written_while_down_is_in_force_before_the_catch_up(db: Path) -> None:
    clock = FakeClock(START)
    async with Runtime(db, clock=clock, workflows=[nightly()]) as rt:
        await clock.advance(60)
        assert await runs_of(rt) == 1
    await clock.advance(3600)
    open_journal(db).commands.queue_switch("disable", "cron")  # as the CLI does, no daemon
    async with Runtime(db, clock=clock, workflows=[nightly()]) as rt:
        await rt.idle()
        assert await runs_of(rt) == 1  # the missed ticks were not caught up at start
        assert query(db, "SELECT command, outcome FROM inbox") == [("disable", "ok")]


def fails(state: dict[str, Any]) -> dict[str, Any]:
    if not state.get("fixed"):
        raise ValueError("boom")
    return state


async def test_a_disabled_workflow_forks_nothing_but_its_failed_runs_can_be_retried(
    db: Path,
) -> None:
    flaky = Workflow(id="flaky", pipelines={"go": [Step(mark), Step(fails)]})
    async with Runtime(db, workflows=[flaky]) as rt:
        failed = await rt.invoke("flaky", "go", {})
        assert failed.status == "failed"
        await rt.disable("flaky")
        # A fork is a new run, refused like an invoke; a retry continues a run, like a resume.
        with pytest.raises(WorkflowDisabled) as refused:
            await rt.fork(failed.run_id)
        assert refused.value.code == "DISABLED"
        retried = await rt.retry(failed.run_id, patch={"fixed": True})
        assert (retried.run_id, retried.status) == (failed.run_id, "completed")
        assert await runs_of(rt) == 1


@pytest.mark.parametrize(
    ("workflow", "trigger", "named"),
    [
        ("", None, "workflow"),
        ("a b", None, "workflow"),
        ("x" * 201, None, "workflow"),
        ("orders", "bad/", "trigger"),
        ("orders", "", "trigger"),
    ],
)
async def test_a_switch_names_a_valid_workflow_and_trigger(
    db: Path, workflow: str, trigger: str | None, named: str
) -> None:
    out = await acli("disable", workflow, *([] if trigger is None else [trigger]), "--db", str(db))
    assert out.returncode == 2, out
    assert f"{named} id" in out.stderr and "is invalid" in out.stderr
    async with Runtime(db, workflows=[orders()]) as rt:
        with pytest.raises(ValidationError, match=f"{named} id .* is invalid"):
            await rt.disable(workflow, trigger)
    assert query(db, "SELECT count(*) FROM inbox WHERE command = 'disable'") == [(0,)]

"""Durable sleeps, pause timeouts and cron schedules, driven by a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator import FakeClock, Runtime, Schedule, Workflow

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL


def nap(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.sleep(60)


def after(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "woke": True}


def wait_payment(on_timeout: str) -> Any:
    def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(
            event="payment.received",
            where={"order_id": ("==", 1)},
            into="payment",
            timeout=30,
            on_timeout=on_timeout,
        )

    return wait_for_payment


async def test_a_sleeping_run_wakes_when_its_time_comes(db: Path) -> None:
    clock = FakeClock()
    async with Runtime(
        db, clock=clock, workflows=[Workflow(id="w", pipelines={"go": [nap, after]})]
    ) as rt:
        paused = await rt.invoke("w", "go", {})
        assert paused.status == "paused"
        await clock.advance(59)  # returns once what fell due is handled: nothing did
        assert (await rt.watch("w", paused.run_id)).status == "paused"  # type: ignore[union-attr]
        await clock.advance(1)
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.status == "completed" and done.state == {"woke": True}
        kinds = [(e.source, e.kind) for e in await rt.timeline(paused.run_id)]
        assert ("timer", "run.resumed") in kinds


async def test_resume_wakes_a_sleeping_run_early(db: Path) -> None:
    clock = FakeClock()
    async with Runtime(
        db, clock=clock, workflows=[Workflow(id="w", pipelines={"go": [nap, after]})]
    ) as rt:
        paused = await rt.invoke("w", "go", {})
        await rt.resume(paused.run_id, {"early": True})
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.state == {"early": True, "woke": True}
        await clock.advance(120)  # the old deadline passes: nothing happens twice
        kinds = [e.kind for e in await rt.timeline(paused.run_id)]
        assert kinds.count("run.resumed") == 1


async def test_a_pause_timeout_continues_with_none(db: Path) -> None:
    clock = FakeClock()
    flow = Workflow(id="w", pipelines={"go": [wait_payment("continue"), after]})
    async with Runtime(db, clock=clock, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "go", {})
        await clock.advance(30)
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.status == "completed" and done.state == {"payment": None, "woke": True}
        await rt.emit("payment.received", {"order_id": 1})  # too late: nothing waits
        await rt.idle()
        assert (await rt.wait(paused.run_id)).state["payment"] is None


async def test_a_pause_timeout_can_fail_the_run(db: Path) -> None:
    clock = FakeClock()
    flow = Workflow(id="w", pipelines={"go": [wait_payment("fail"), after]})
    async with Runtime(db, clock=clock, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "go", {})
        await clock.advance(31)
        assert await _status_is(rt, paused.run_id, "failed")
        info = await rt.watch("w", paused.run_id)
        assert info is not None and info.error_code == "PAUSE_TIMEOUT"
        assert "payment.received" in (info.error or "")


async def test_an_event_before_the_timeout_wins(db: Path) -> None:
    clock = FakeClock()
    flow = Workflow(id="w", pipelines={"go": [wait_payment("fail"), after]})
    async with Runtime(db, clock=clock, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "go", {})
        await clock.advance(29)
        await rt.emit("payment.received", {"order_id": 1, "ok": True})
        done = await rt.wait(paused.run_id, timeout=5)
        await clock.advance(10)
        assert done.status == "completed" and done.state["payment"]["ok"] is True


async def _status_is(rt: Runtime, run_id: str, status: str) -> bool:
    info = await rt.watch("w", run_id)
    return info is not None and info.status == status


async def _scheduled(rt: Runtime) -> list[str]:
    runs = await rt.list_runs(workflow="report")
    return sorted(r.state["scheduled_for"] for r in runs)


def report(cron: str, *, catch_up: bool = False) -> Workflow:
    return Workflow(
        id="report",
        triggers={"tick": Schedule(cron=cron, tz="UTC", catch_up=catch_up)},
        pipelines={"tick": [after]},
    )


async def test_a_schedule_fires_on_each_tick(db: Path) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    async with Runtime(db, clock=clock, workflows=[report("*/5 * * * *")]) as rt:
        assert await _scheduled(rt) == []
        await clock.advance(5 * 60)
        assert await _count(rt, 1)
        await clock.advance(10 * 60)
        assert await _count(rt, 3)
        assert await _scheduled(rt) == [
            "2026-01-01T00:05:00.000+00:00",
            "2026-01-01T00:10:00.000+00:00",
            "2026-01-01T00:15:00.000+00:00",
        ]
        run = (await rt.list_runs(workflow="report"))[0]
        assert run.state["fired_at"].startswith("2026-01-01T00:15") and run.state["woke"]
        await rt.deregister("report")
        await clock.advance(10 * 60)
        assert len(await _scheduled(rt)) == 3


async def _count(rt: Runtime, n: int) -> bool:
    return len(await rt.list_runs(workflow="report", status="completed")) == n


async def test_after_downtime_a_schedule_fires_once_or_catches_up(tmp_path: Path) -> None:
    for catch_up, expected in ((False, 1), (True, 6)):
        db = tmp_path / f"{catch_up}.db"
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        async with Runtime(db, clock=clock, workflows=[report("*/5 * * * *", catch_up=catch_up)]):
            pass
        await clock.advance(30 * 60)  # down for half an hour: six ticks missed
        async with Runtime(
            db, clock=clock, workflows=[report("*/5 * * * *", catch_up=catch_up)]
        ) as rt:
            await rt.idle()
            assert await _count(rt, expected)
            ticks = await _scheduled(rt)
            assert ticks[-1] == "2026-01-01T00:30:00.000+00:00" and len(ticks) == expected
        async with Runtime(
            db, clock=clock, workflows=[report("*/5 * * * *", catch_up=catch_up)]
        ) as rt:
            await rt.idle()
            assert len(await _scheduled(rt)) == expected  # each tick fired once, not again


@pytest.mark.parametrize(
    "ask",
    [
        lambda ctx: ctx.sleep(1e300),
        lambda ctx: ctx.sleep(float("inf")),
        lambda ctx: ctx.sleep(float("nan")),
        lambda ctx: ctx.pause(event="e", timeout=1e300),
        lambda ctx: ctx.join([], into="j", timeout=float("nan")),
    ],
    ids=["sleep-1e300", "sleep-inf", "sleep-nan", "pause-1e300", "join-nan"],
)
async def test_a_deadline_the_journal_cannot_hold_fails_the_step_not_the_writer(
    db: Path, ask: Any
) -> None:
    """It once reached the writer, whose batch failed: the daemon stopped (exit 3)."""

    def park(state: dict[str, Any], ctx: Any) -> Any:
        return ask(ctx)

    flows = [Workflow(id="w", pipelines={"go": [park]}), Workflow(id="ok", pipelines={"go": [nap]})]
    async with Runtime(db, clock=FakeClock(), workflows=flows) as rt:
        failed = await rt.wait((await rt.invoke("w", "go", {})).run_id, timeout=5)
        assert failed.status == "failed" and "a thousand years" in (failed.error or "")
        assert (await rt.invoke("ok", "go", {})).status == "paused"  # the writer goes on

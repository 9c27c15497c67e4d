"""orchestrator.testing and Runtime.idle: waits on signals, with failures that say why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Runtime, Serialized, Workflow
from orchestrator.testing import FakeClock, eventually, eventually_blocking


def wait_for_go(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go", into="go")


def nap(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.sleep(60)


def woke(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "woke": True}


async def test_idle_waits_for_running_steps_and_names_them_when_it_times_out(db: Path) -> None:
    gate = asyncio.Event()

    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {**state, "held": True}

    async with Runtime(db, workflows=[Workflow(id="w", pipelines={"go": [hold]})]) as rt:
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        with pytest.raises(TimeoutError, match=r"not idle after 0.2 s: run \w+ of workflow 'w'"):
            await rt.idle(timeout=0.2)
        gate.set()
        await rt.idle()
        assert pending.done() and pending.result().state == {"held": True}


async def test_paused_and_queued_runs_are_idle(db: Path) -> None:
    flow = Workflow(id="w", pipelines={"go": [wait_for_go, woke]}, mode=Serialized())
    async with Runtime(db, workflows=[flow]) as rt:
        first = await rt.invoke("w", "go", {})
        second = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await rt.idle()
        statuses = sorted(run.status for run in await rt.list_runs(workflow="w"))
        assert first.status == "paused" and statuses == ["paused", "queued"]
        assert not second.done()


async def test_advance_returns_once_the_timers_it_passed_are_handled(db: Path) -> None:
    clock = FakeClock()
    flow = Workflow(id="w", pipelines={"go": [nap, woke]})
    async with Runtime(db, clock=clock, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "go", {})
        await clock.advance(59.9)
        assert (await rt.watch("w", paused.run_id)).status == "paused"  # type: ignore[union-attr]
        await clock.advance(0.1)
        info = await rt.watch("w", paused.run_id)
        assert info is not None and info.status == "completed" and info.state == {"woke": True}


async def test_eventually_returns_the_first_truthy_value_or_says_what_it_waited_for() -> None:
    calls: list[int] = []

    async def third_time() -> list[int] | None:
        calls.append(1)
        return calls if len(calls) == 3 else None

    assert await eventually(third_time, what="three calls", interval=0) == [1, 1, 1]
    assert eventually_blocking(lambda: "yes", what="an answer") == "yes"
    with pytest.raises(AssertionError, match=r"waiting for the sky \(the last check gave \[\]\)"):
        await eventually(lambda: [], what="the sky", timeout=0.05, details=lambda: "log: blue")
    with pytest.raises(AssertionError, match="log: grey"):
        eventually_blocking(lambda: 0, what="rain", timeout=0.05, details=lambda: "log: grey")
    with pytest.raises(TypeError, match="await eventually"):
        eventually_blocking(third_time, what="a coroutine")  # type: ignore[arg-type]

"""Workflow hooks: order, resume and recovery, dispatch results, failures recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from orchestrator import DispatchResult, Exclusive, Runtime, Trigger, Workflow


def step(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "ran": True}


def wait_for_go(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go", into="go")


def recorder(calls: list[Any]) -> dict[str, Any]:
    return {
        "on_prepare": lambda ctx: calls.append(("prepare", ctx.step_name)),
        "on_resume": lambda ctx: calls.append(("resume", ctx.step_name)),
        "on_complete": lambda result: calls.append(("complete", result.status)),
        "on_cleanup": lambda: calls.append(("cleanup",)),
    }


async def test_hooks_run_in_order_around_a_run_and_its_resume(db: Path) -> None:
    calls: list[Any] = []
    flow = Workflow(id="w", pipelines={"go": [wait_for_go, step]}, **recorder(calls))
    async with Runtime(db, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "go", {})
        await rt.emit("go", {})
        await rt.wait(paused.run_id, timeout=5)
        await rt.idle()  # on_complete and on_cleanup run after the run's result is out
    assert calls == [
        ("prepare", "wait_for_go"),
        ("resume", "step"),
        ("complete", "completed"),
        ("cleanup",),
    ]


async def test_on_resume_fires_for_a_recovered_run_and_register_hooks_win(db: Path) -> None:
    gate, reached = asyncio.Event(), asyncio.Event()

    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        reached.set()
        await gate.wait()
        return state

    flow = Workflow(id="w", pipelines={"go": [step, slow]})
    async with Runtime(db, workflows=[flow], shutdown_grace=0.01) as rt:
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await asyncio.wait_for(reached.wait(), 5)
    await asyncio.gather(pending, return_exceptions=True)
    calls: list[Any] = []
    defined = Workflow(
        id="w", pipelines={"go": [step, slow]}, on_resume=lambda ctx: calls.append("workflow's")
    )
    gate.set()
    async with Runtime(db) as rt:
        await rt.register(defined, on_resume=lambda ctx: calls.append(("given", ctx.step_name)))
        run_id = (await rt.list_runs())[0].run_id
        assert (await rt.wait(run_id, timeout=5)).status == "completed"
    assert calls == [("given", "slow")]


async def test_on_dispatch_sees_every_dispatch_accepted_or_not(db: Path) -> None:
    seen: list[DispatchResult] = []
    gate = asyncio.Event()

    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return state

    flow = Workflow(
        id="w",
        triggers={"go": Trigger(event="job")},
        pipelines={"go": [hold]},
        mode=Exclusive(),
        on_dispatch=seen.append,
    )
    async with Runtime(db, workflows=[flow]) as rt:
        await rt.emit("job", {"n": 1})
        await rt.emit("job", {"n": 2})
        gate.set()
        await rt.idle()  # the on_dispatch hooks run in tasks of their own
    assert [(d.action, d.workflow_id, d.trigger_id) for d in seen] == [
        ("start", "w", "go"),
        ("reject", "w", "go"),
    ]
    assert seen[1].held_by == seen[0].run_id


async def test_a_raising_hook_is_recorded_and_never_breaks_the_run(db: Path) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("hook bug")

    flow = Workflow(
        id="w", pipelines={"go": [step]}, on_prepare=boom, on_complete=boom, on_cleanup=boom
    )
    async with Runtime(db, workflows=[flow]) as rt:
        first = await rt.invoke("w", "go", {})
        second = await rt.invoke("w", "go", {})
        await rt.idle()
        failures = [e for e in await rt.timeline(first.run_id) if e.kind == "hook.failed"]
    assert first.status == second.status == "completed" and first.state == {"ran": True}
    assert sorted(f.message.split(" hook")[0] for f in failures if f.message) == [
        "on_cleanup",
        "on_complete",
        "on_prepare",
    ]

"""What `rt.on` hears and what a run's timeline says, for every way a run is admitted and
ends: queued, dropped, rejected, superseded, a step failing (retried or not), a pause that
times out, an abort while paused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from orchestrator import (
    Exclusive,
    FakeClock,
    Runtime,
    Step,
    Transient,
    Workflow,
)

Heard = list[tuple[str, dict[str, Any]]]


def listen(rt: Runtime) -> Heard:
    heard: Heard = []
    rt.on("*", lambda name, payload: heard.append((name, payload)))
    return heard


def names_for(heard: Heard, run_id: str) -> list[str]:
    return [name for name, payload in heard if payload.get("run_id") == run_id]


async def kinds(rt: Runtime, run_id: str) -> list[str]:
    return [entry.kind for entry in await rt.timeline(run_id)]


def gated(release: asyncio.Event) -> Any:
    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return state

    return hold


async def test_a_queued_run_is_heard_queued_then_started_when_its_turn_comes(db: Path) -> None:
    release = asyncio.Event()
    flow = Workflow(
        id="w", pipelines={"go": [gated(release)]}, mode=Transient(concurrency=1, capacity=1)
    )
    async with Runtime(db, workflows=[flow]) as rt:
        heard = listen(rt)
        # Tasks run in the order they are made: one runs, one queues, one is dropped.
        first, second, third = (asyncio.ensure_future(rt.invoke("w", "go", {})) for _ in "123")
        dropped = await third  # the slot and the queue are both taken
        release.set()
        done = await asyncio.gather(first, second)
        await rt.idle()
        queued = done[1].run_id
        assert names_for(heard, queued) == [
            "run.queued",
            "run.started",
            "step.started",
            "step.completed",
            "run.completed",
        ]
        assert names_for(heard, dropped.run_id) == ["run.dropped"]
        assert await kinds(rt, queued) == [
            "run.queued",
            "run.started",
            "step.started",
            "step.completed",
            "run.completed",
        ]
        assert await kinds(rt, dropped.run_id) == ["run.dropped"]  # never started, ended once


async def test_rejected_and_superseded_runs_are_heard_and_never_started(db: Path) -> None:
    release = asyncio.Event()
    flows = [
        Workflow(id="reject", pipelines={"go": [gated(release)]}, mode=Exclusive()),
        Workflow(
            id="latest",
            pipelines={"go": [gated(release)]},
            mode=Exclusive(on_busy="queue_single"),
        ),
    ]
    async with Runtime(db, workflows=flows) as rt:
        heard = listen(rt)
        # Tasks run in the order they are made.
        running = [asyncio.ensure_future(rt.invoke(w, "go", {})) for w in ("reject", "latest")]
        refused = asyncio.ensure_future(rt.invoke("reject", "go", {}))
        pending = asyncio.ensure_future(rt.invoke("latest", "go", {}))
        superseding = asyncio.ensure_future(rt.invoke("latest", "go", {}))
        rejected, superseded = await refused, await pending
        release.set()
        await asyncio.gather(*running, superseding)
        await rt.idle()
        assert names_for(heard, rejected.run_id) == ["run.rejected"]
        assert await kinds(rt, rejected.run_id) == ["run.rejected"]
        assert superseded.error_code == "SUPERSEDED"
        assert names_for(heard, superseded.run_id) == ["run.queued", "run.dropped"]
        assert await kinds(rt, superseded.run_id) == ["run.queued", "run.dropped"]


def flaky(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("no good")


async def test_a_failing_step_is_heard_at_each_attempt(db: Path) -> None:
    flow = Workflow(id="w", pipelines={"go": [Step(flaky, retries=1, inline=True)]})
    async with Runtime(db, workflows=[flow]) as rt:
        heard = listen(rt)
        result = await rt.invoke("w", "go", {})
        await rt.idle()
    failures = [payload for name, payload in heard if name == "step.failed"]
    assert [(f["step"], f["retry"]) for f in failures] == [("flaky", True), ("flaky", False)]
    assert all("no good" in f["error"] for f in failures)
    assert names_for(heard, result.run_id)[-1] == "run.failed"


def wait_briefly(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="never", timeout=60, on_timeout="fail")


def wait_long(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="never")


async def test_a_paused_run_that_times_out_or_is_aborted_is_heard_ending_once(db: Path) -> None:
    clock = FakeClock()
    flow = Workflow(id="w", pipelines={"brief": [wait_briefly], "long": [wait_long]})
    async with Runtime(db, workflows=[flow], clock=clock) as rt:
        heard = listen(rt)
        brief = await rt.invoke("w", "brief", {})
        long = await rt.invoke("w", "long", {})
        await clock.advance(61)
        await rt.abort(long.run_id)
        await rt.idle()
        failed = await rt.wait(brief.run_id)
        assert failed.error_code == "PAUSE_TIMEOUT"
        assert names_for(heard, brief.run_id)[-1] == "run.failed"
        assert names_for(heard, long.run_id).count("run.aborted") == 1
        assert (await kinds(rt, brief.run_id)).count("run.failed") == 1


def test_wants_follows_subscriptions_by_name_and_by_star() -> None:
    from orchestrator.engine.lifecycle import NAMES, Lifecycle

    lifecycle = Lifecycle()
    wants = lifecycle.wants  # held, as the executor holds it: must stay current
    assert not any(wants(name) for name in NAMES)
    off_completed = lifecycle.on("run.completed", lambda name, payload: None)
    assert wants("run.completed")
    assert not wants("run.failed")
    off_star = lifecycle.on("*", lambda name, payload: None)
    assert all(wants(name) for name in NAMES)
    off_completed()
    assert all(wants(name) for name in NAMES)  # "*" still hears them all
    off_star()
    assert not any(wants(name) for name in NAMES)
    assert not wants("*")

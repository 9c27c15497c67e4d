"""Execution modes end to end: what happens when work arrives while a workflow is busy."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator import (
    DefinitionError,
    Exclusive,
    Runtime,
    Serialized,
    SingletonLoop,
    Transient,
    Workflow,
)
from orchestrator.testing import eventually

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL

gates: dict[int, asyncio.Event] = {}
order: list[int] = []


async def hold(state: dict[str, Any]) -> dict[str, Any]:
    """Runs until the test opens the gate of this run's `n`."""
    order.append(state["n"])
    await gates.setdefault(state["n"], asyncio.Event()).wait()
    return {**state, "done": True}


def wait_for_go(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go", where={"n": ("==", state["n"])}, into="go")


@pytest.fixture(autouse=True)
def _reset() -> None:
    gates.clear()
    order.clear()


def release(n: int) -> None:
    gates.setdefault(n, asyncio.Event()).set()


async def statuses(rt: Runtime) -> dict[int, str]:
    return {r.state["n"]: r.status for r in await rt.list_runs(limit=1000)}


async def until(rt: Runtime, expected: dict[int, str]) -> None:
    """Wait until the journal shows these statuses (runs held at a gate keep it busy)."""

    async def reached() -> bool:
        return await statuses(rt) == expected

    await eventually(reached, what=f"the statuses {expected}", timeout=5)


def start(rt: Runtime, n: int, trigger: str = "go") -> asyncio.Future[Any]:
    return asyncio.ensure_future(rt.invoke("w", trigger, {"n": n}))


async def test_transient_limits_concurrency_queues_up_to_capacity_and_drops_beyond(
    db: Path,
) -> None:
    flow = Workflow(id="w", pipelines={"go": [hold]}, mode=Transient(concurrency=2, capacity=1))
    async with Runtime(db, workflows=[flow]) as rt:
        pending = [start(rt, n) for n in range(4)]
        await until(rt, {0: "running", 1: "running", 2: "queued", 3: "dropped"})
        dropped = await pending[3]
        assert (
            dropped.status == "dropped"
            and not dropped.ok
            and "held by run" in (dropped.error or "")
        )
        release(0)
        await until(rt, {0: "completed", 1: "running", 2: "running", 3: "dropped"})
        release(1)
        release(2)
        assert [r.status for r in await asyncio.gather(*pending[:3])] == ["completed"] * 3
        info = (await rt.list_runs(status="dropped"))[0]
        kinds = [e.kind for e in await rt.timeline(info.run_id)]
        assert "run.dropped" in kinds


async def test_transient_paused_runs_free_their_slot(db: Path) -> None:
    flow = Workflow(
        id="w",
        pipelines={"go": [hold], "pause": [wait_for_go, hold]},
        mode=Transient(concurrency=1),
    )
    async with Runtime(db, workflows=[flow]) as rt:
        first = await rt.invoke("w", "pause", {"n": 1})
        assert first.status == "paused"
        second = start(rt, 2)  # the paused run holds no slot: this one runs at once
        await until(rt, {1: "paused", 2: "running"})
        await rt.emit("go", {"n": 1})  # resumed, it waits at the front for the slot
        await until(rt, {1: "queued", 2: "running"})
        release(2)
        release(1)
        assert (await second).status == "completed"
        assert (await rt.wait(first.run_id, timeout=5)).status == "completed"


async def test_serialized_runs_one_at_a_time_in_order_and_a_pause_keeps_the_slot(db: Path) -> None:
    flow = Workflow(
        id="w", pipelines={"go": [hold], "pause": [wait_for_go, hold]}, mode=Serialized()
    )
    async with Runtime(db, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "pause", {"n": 0})
        pending = [start(rt, n) for n in range(1, 4)]
        await until(rt, {0: "paused", 1: "queued", 2: "queued", 3: "queued"})
        await rt.emit("go", {"n": 0})
        release(0)
        for n in range(1, 4):
            release(n)
        await asyncio.gather(*pending)
        assert order == [0, 1, 2, 3]
        assert (await rt.wait(paused.run_id)).status == "completed"


async def test_singleton_loop_drops_signals_or_replaces(tmp_path: Path) -> None:
    for on_busy in ("drop", "signal", "replace"):
        gates.clear()
        flow = Workflow(id="w", pipelines={"go": [hold]}, mode=SingletonLoop(on_busy=on_busy))
        async with Runtime(tmp_path / f"{on_busy}.db", workflows=[flow]) as rt:
            first = start(rt, 1)
            await until(rt, {1: "running"})
            later = asyncio.ensure_future(rt.invoke("w", "go", {"n": 1, "extra": on_busy}))
            if on_busy != "replace":
                second = await later
            if on_busy == "drop":
                assert second.status == "dropped"
                release(1)
                assert (await first).state == {"n": 1, "done": True}
            elif on_busy == "signal":
                assert second.run_id == (await first_id(rt))
                release(1)
                assert (await first).state == {"n": 1, "extra": "signal", "done": True}
            else:
                assert (await first).status == "aborted"
                assert "replaced by run" in ((await first).error or "")
                release(1)
                assert (await later).status == "completed"


async def first_id(rt: Runtime) -> str:
    return (await rt.list_runs())[-1].run_id


async def test_exclusive_rejects_or_keeps_the_latest_pending(tmp_path: Path) -> None:
    reject = Workflow(id="w", pipelines={"go": [hold]}, mode=Exclusive())
    async with Runtime(tmp_path / "reject.db", workflows=[reject]) as rt:
        first = start(rt, 1)
        await until(rt, {1: "running"})
        refused = await rt.invoke("w", "go", {"n": 2})
        assert refused.status == "rejected" and refused.error_code == "REJECTED"
        release(1)
        await first
    gates.clear()
    single = Workflow(id="w", pipelines={"go": [hold]}, mode=Exclusive(on_busy="queue_single"))
    async with Runtime(tmp_path / "single.db", workflows=[single]) as rt:
        first = start(rt, 1)
        await until(rt, {1: "running"})
        second, third = start(rt, 2), start(rt, 3)
        await until(rt, {1: "running", 2: "dropped", 3: "queued"})
        assert (await second).error_code == "SUPERSEDED"
        release(1)
        release(3)
        assert (await third).status == "completed"
        await first


async def test_register_mode_wins_and_modes_are_validated(db: Path) -> None:
    with pytest.raises(DefinitionError):
        Transient(concurrency=0)
    with pytest.raises(DefinitionError):
        SingletonLoop(on_busy="queue")  # type: ignore[arg-type]
    flow = Workflow(id="w", pipelines={"go": [hold]}, mode=Serialized())
    async with Runtime(db) as rt:
        registered = await rt.register(flow, mode=Exclusive())
        assert isinstance(registered.mode, Exclusive)


async def test_a_queue_survives_a_restart_in_order(db: Path) -> None:
    flow = Workflow(id="w", pipelines={"go": [hold]}, mode=Serialized())
    async with Runtime(db, workflows=[flow], shutdown_grace=0.01) as rt:
        pending = [start(rt, n) for n in range(4)]
        await until(rt, {0: "running", 1: "queued", 2: "queued", 3: "queued"})
    await asyncio.gather(*pending, return_exceptions=True)
    order.clear()
    for n in range(4):
        release(n)
    async with Runtime(db, workflows=[flow]) as rt:
        await rt.idle()
        assert await statuses(rt) == {n: "completed" for n in range(4)}
    assert order == [0, 1, 2, 3]


async def test_stopping_while_a_slot_frees_up_starts_nothing_new(db: Path) -> None:
    flow = Workflow(id="w", pipelines={"go": [hold]}, mode=Transient(concurrency=1))
    async with asyncio.timeout(10):
        async with Runtime(db, workflows=[flow], shutdown_grace=1) as rt:
            pending = [start(rt, n) for n in range(3)]
            await until(rt, {0: "running", 1: "queued", 2: "queued"})
            release(0)  # run 0 ends during stop(): its slot must not start run 1
        await asyncio.gather(*pending, return_exceptions=True)
        release(1)
        release(2)
        async with Runtime(db, workflows=[flow]) as rt:
            await rt.idle()
            assert await statuses(rt) == {0: "completed", 1: "completed", 2: "completed"}

"""Events, triggers, pause and resume, signals, the pause service, in one process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator import (
    DefinitionError,
    RunNotActive,
    RunNotFound,
    Runtime,
    Trigger,
    ValidationError,
    Workflow,
)

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="payment.received", where={"order_id": ("==", state["order_id"])}, into="payment"
    )


def ship(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "shipped": True}


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created", where={"total": (">", 0)})},
    pipelines={"new": [wait_for_payment, ship]},
)


async def test_an_event_starts_a_run_of_each_matching_trigger(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        await rt.emit("order.created", {"order_id": 1, "total": 0})  # where does not match
        await rt.emit("order.other", {"order_id": 2, "total": 5})  # another type
        event_id = await rt.emit("order.created", {"order_id": 3, "total": 5})
        assert isinstance(event_id, str) and event_id
        runs = await rt.list_runs()
        assert len(runs) == 1
        await rt.idle()
        info = await rt.watch("orders", runs[0].run_id)
        assert info is not None and info.status == "paused"
        assert info.state == {"order_id": 3, "total": 5} and info.trigger_id == "new"
        kinds = [e.kind for e in await rt.timeline(runs[0].run_id)]
        assert "event.received" in kinds and "run.paused" in kinds


async def test_a_paused_run_resumes_on_its_matching_event_only(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        seven = await rt.invoke("orders", "new", {"order_id": 7})
        eight = await rt.invoke("orders", "new", {"order_id": 8})
        assert seven.status == "paused" and seven.ok
        await rt.emit("payment.received", {"order_id": 8, "amount": 3})
        done = await rt.wait(eight.run_id, timeout=5)
        assert done.status == "completed"
        assert done.state == {
            "order_id": 8,
            "payment": {"order_id": 8, "amount": 3},
            "shipped": True,
        }
        info = await rt.watch("orders", seven.run_id)
        assert info is not None and info.status == "paused" and info.step == "wait_for_payment"
        await rt.emit("payment.received", {"order_id": "7"})  # a string is not 7
        await rt.idle()
        assert (await rt.watch("orders", seven.run_id)).status == "paused"  # type: ignore[union-attr]


async def settle(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "settled": True}


async def test_emit_commits_with_what_the_run_it_resumes_writes_before_awaiting(db: Path) -> None:
    # `settle` awaits nothing: the resumed run's end joins the event's commit (one fsync
    # per event -> resume, not two), so nothing is left to commit when `emit` returns.
    flow = Workflow(
        id="orders",
        triggers={"new": Trigger(event="order.created")},
        pipelines={"new": [wait_for_payment, settle]},
    )
    async with Runtime(db, workflows=[flow]) as rt:
        for order_id in range(20):
            run = await rt.invoke("orders", "new", {"order_id": order_id})
            await rt.emit("payment.received", {"order_id": order_id})
            assert rt._writer.committed
            [done] = await rt.list_runs(status="completed", limit=1)
            assert done.run_id == run.run_id


async def test_invoke_bypasses_the_trigger_conditions(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        result = await rt.invoke("orders", "new", {"order_id": 1, "total": -5})
        assert result.status == "paused"


async def test_a_plain_pause_sees_only_events_after_it(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        await rt.emit("payment.received", {"order_id": 9})
        result = await rt.invoke("orders", "new", {"order_id": 9})
        assert result.status == "paused"


def reserve_and_register(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.pause_service.register(
        event="payment.received", where={"order_id": ("==", state["order_id"])}
    )
    return {**state, "reserved": True}


async def test_the_pause_service_keeps_an_event_that_arrives_before_the_pause(db: Path) -> None:
    gate, reached = asyncio.Event(), asyncio.Event()

    async def slow_step(state: dict[str, Any]) -> dict[str, Any]:
        reached.set()
        await gate.wait()  # the payment arrives while this step still runs
        return state

    flow = Workflow(
        id="orders", pipelines={"new": [reserve_and_register, slow_step, wait_for_payment, ship]}
    )
    async with Runtime(db, workflows=[flow]) as rt:
        pending = asyncio.ensure_future(rt.invoke("orders", "new", {"order_id": 5}))
        await asyncio.wait_for(reached.wait(), 5)
        await rt.emit("payment.received", {"order_id": 5, "amount": 10})
        gate.set()
        result = await asyncio.wait_for(pending, 5)
        assert result.status == "completed"
        assert result.state["payment"] == {"order_id": 5, "amount": 10}
        kinds = [e.kind for e in await rt.timeline(result.run_id)]
        assert "event.buffered" in kinds and "event.consumed" in kinds and "run.paused" not in kinds


async def test_a_run_pausing_again_consumes_each_event_once_in_order(db: Path) -> None:
    def listen(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.pause_service.register(event="tick", where={"key": ("==", "k")})
        return state

    def pause(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(event="tick", where={"key": ("==", "k")}, into="tick")

    def record(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "got": [*state.get("got", []), state.pop("tick")["n"]]}

    steps: list[Any] = [listen]
    for _ in range(3):
        steps += [pause, record]
    loop = Workflow(id="loop", pipelines={"go": steps})
    async with Runtime(db, workflows=[loop]) as rt:
        first = await rt.invoke("loop", "go", {})
        assert first.status == "paused"
        for n in range(1, 5):
            await rt.emit("tick", {"key": "k", "n": n})
        result = await rt.wait(first.run_id, timeout=5)
        assert result.status == "completed" and result.state["got"] == [1, 2, 3]


async def test_resume_merges_a_patch_and_refuses_a_run_that_is_not_paused(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 1})
        await rt.resume(paused.run_id, {"payment": {"manual": True}})
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.state == {"order_id": 1, "payment": {"manual": True}, "shipped": True}
        with pytest.raises(RunNotActive, match="completed"):
            await rt.resume(paused.run_id, {})
        with pytest.raises(RunNotFound):
            await rt.resume("nope", {})
        with pytest.raises(ValidationError):
            await rt.resume(paused.run_id, [1])


async def test_signal_patches_a_paused_run_without_resuming_it(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 1, "note": "a"})
        await rt.signal(paused.run_id, {"note": "b"})
        info = await rt.watch("orders", paused.run_id)
        assert info is not None and info.status == "paused" and info.state["note"] == "b"
        await rt.emit("payment.received", {"order_id": 1})
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.state["note"] == "b" and done.state["shipped"] is True


async def test_a_signal_wins_over_what_the_running_step_returns(db: Path) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await gate.wait()
        return {**state, "color": "red", "size": 1}

    flow = Workflow(id="w", pipelines={"go": [slow]})
    async with Runtime(db, workflows=[flow]) as rt:
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await started.wait()
        run_id = (await rt.list_runs())[0].run_id
        await rt.signal(run_id, {"color": "blue"})
        gate.set()
        result = await asyncio.wait_for(pending, 5)
        assert result.state == {"color": "blue", "size": 1}
        with pytest.raises(RunNotActive):
            await rt.signal(run_id, {"x": 1})


async def test_abort_ends_a_paused_run_and_its_wait(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 4})
        await rt.abort(paused.run_id)
        info = await rt.watch("orders", paused.run_id)
        assert info is not None and info.status == "aborted"
        await rt.emit("payment.received", {"order_id": 4})
        await rt.idle()
        assert (await rt.watch("orders", paused.run_id)).status == "aborted"  # type: ignore[union-attr]


async def test_emit_refuses_bad_input(db: Path) -> None:
    async with Runtime(db) as rt:
        with pytest.raises(ValidationError, match="JSON object"):
            await rt.emit("x", [1, 2])
        with pytest.raises(ValidationError, match="event type"):
            await rt.emit("", {})


def test_invalid_conditions_are_refused_when_the_workflow_is_defined() -> None:
    with pytest.raises(DefinitionError, match="=~"):
        Trigger(event="x", where={"a": ("=~", 1)})
    with pytest.raises(DefinitionError, match="no pipeline"):
        Workflow(id="w", triggers={"t": Trigger(event="x")}, pipelines={"other": [ship]})


async def test_a_paused_run_and_its_buffers_survive_a_restart(db: Path) -> None:
    flow = Workflow(
        id="orders",
        pipelines={
            "new": [reserve_and_register, wait_for_payment, ship],
            "plain": [wait_for_payment, ship],
        },
    )
    async with Runtime(db, workflows=[flow]) as rt:
        paused = await rt.invoke("orders", "plain", {"order_id": 1})
    async with Runtime(db, workflows=[flow]) as rt:
        await rt.emit("payment.received", {"order_id": 1, "amount": 2})
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.status == "completed" and done.state["payment"]["amount"] == 2
        kinds = [e.kind for e in await rt.timeline(paused.run_id)]
        assert kinds.count("run.resumed") == 1


async def test_events_for_a_paused_run_wait_for_its_workflow_after_a_restart(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 2})
    async with Runtime(db) as rt:  # the workflow is not registered yet
        await rt.emit("payment.received", {"order_id": 2})
        await rt.idle()
        info = await rt.watch("orders", paused.run_id)
        assert info is not None and info.status == "running" and info.step == "ship"
        await rt.register(ORDERS)
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.status == "completed"


async def test_pause_and_resume_are_lifecycle_events(db: Path) -> None:
    seen: list[str] = []
    async with Runtime(db, workflows=[ORDERS]) as rt:
        rt.on("*", lambda name, payload: seen.append(name))
        paused = await rt.invoke("orders", "new", {"order_id": 1})
        await rt.emit("payment.received", {"order_id": 1})
        await rt.wait(paused.run_id, timeout=5)
    assert seen == [
        "run.started",
        "step.started",
        "step.completed",
        "run.paused",
        "run.resumed",
        "step.started",
        "step.completed",
        "run.completed",
    ]


async def test_pause_on_a_wait_handle_and_cancel_a_registered_wait(db: Path) -> None:
    def both(state: dict[str, Any], ctx: Any) -> Any:
        ignored = ctx.pause_service.register(event="coupon", where={"id": ("==", 1)})
        ctx.pause_service.cancel(ignored)  # events for it are no longer kept
        wait = ctx.pause_service.register(event="approval", where={"id": ("==", state["id"])})
        return ctx.pause(wait=wait, into="approval")

    flow = Workflow(id="w", pipelines={"go": [both, ship]})
    async with Runtime(db, workflows=[flow]) as rt:
        paused = await rt.invoke("w", "go", {"id": 1})
        assert paused.status == "paused"
        await rt.emit("coupon", {"id": 1})
        await rt.emit("approval", {"id": 1, "by": "ann"})
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.state == {"id": 1, "approval": {"id": 1, "by": "ann"}, "shipped": True}
        kinds = [e.kind for e in await rt.timeline(paused.run_id)]
        assert "event.buffered" not in kinds  # the cancelled wait kept nothing

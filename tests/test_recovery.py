"""In-process restarts: runs left running continue from their last committed checkpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Runtime, RuntimeStopped, Workflow

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL

calls: list[str] = []
hanging: dict[str, asyncio.Event] = {}  # by step name: set when a hanging step starts


def step(name: str, *, hang: bool = False) -> Any:
    async def fn(state: dict[str, Any]) -> dict[str, Any]:
        calls.append(name)
        if hang:
            hanging.setdefault(name, asyncio.Event()).set()
            await asyncio.sleep(3600)  # until the runtime stops
        return {**state, "done": [*state.get("done", []), name]}

    fn.__name__ = name
    return fn


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()
    hanging.clear()


async def leave_running(db: Path, pipeline: list[Any]) -> str:
    """Start a run, stop the runtime while its last step hangs; return the run id."""
    async with Runtime(db, shutdown_grace=0.05) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": pipeline}))
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await asyncio.wait_for(hanging.setdefault("hang", asyncio.Event()).wait(), 5)
        run_id = (await rt.list_runs())[0].run_id
    with pytest.raises(RuntimeStopped):
        await pending
    return run_id


async def test_shutdown_grace_lets_a_short_step_finish(db: Path) -> None:
    started = asyncio.Event()

    async def short(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(0.1)  # still running when the runtime stops; well within the grace
        return {"finished": True}

    async with Runtime(db, shutdown_grace=5) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [short]}))
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await asyncio.wait_for(started.wait(), 5)
    assert (await pending).state == {"finished": True}


async def test_a_stopped_run_continues_from_its_checkpoint(db: Path) -> None:
    run_id = await leave_running(db, [step("a"), step("b"), step("hang", hang=True)])
    async with Runtime(db) as rt:
        info = await rt.watch("w", run_id)
        assert info is not None and info.status == "running" and info.step == "hang"
        calls.clear()
        await rt.register(Workflow(id="w", pipelines={"go": [step("a"), step("b"), step("hang")]}))
        result = await rt.wait(run_id, timeout=5)
        assert result.status == "completed" and result.state == {"done": ["a", "b", "hang"]}
        assert calls == ["hang"]  # a and b had committed checkpoints: not re-run
        kinds = [e.kind for e in await rt.timeline(run_id)]
        assert "run.recovered" in kinds and kinds[-1] == "run.completed"


async def test_a_recovered_run_continues_on_the_new_version_by_step_name(db: Path) -> None:
    run_id = await leave_running(db, [step("a"), step("hang", hang=True), step("c")])
    async with Runtime(db) as rt:
        old_version = (await rt.watch("w", run_id)).version  # type: ignore[union-attr]
        calls.clear()
        new = [step("new_first"), step("a"), step("hang"), step("c")]
        registered = await rt.register(Workflow(id="w", pipelines={"go": new}))
        result = await rt.wait(run_id, timeout=5)
        assert calls == ["hang", "c"]
        assert result.state == {"done": ["a", "hang", "c"]}
        info = await rt.watch("w", run_id)
        assert info is not None and info.version == registered.version != old_version


async def test_a_run_whose_next_step_is_gone_waits_with_a_reason(db: Path) -> None:
    run_id = await leave_running(db, [step("a"), step("hang", hang=True)])
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [step("a"), step("other")]}))
        info = await rt.watch("w", run_id)
        assert info is not None and info.status == "running"
        assert info.error is not None and "'hang' no longer exists" in info.error
        assert info.error_code == "STEP_MISSING"
    calls.clear()
    async with Runtime(db) as rt:  # the step returns
        await rt.register(Workflow(id="w", pipelines={"go": [step("a"), step("hang")]}))
        result = await rt.wait(run_id, timeout=5)
        assert result.status == "completed" and calls == ["hang"]
        info = await rt.watch("w", run_id)
        assert info is not None and info.error is None


async def test_a_recovered_run_can_be_aborted_before_its_workflow_returns(db: Path) -> None:
    run_id = await leave_running(db, [step("hang", hang=True)])
    async with Runtime(db) as rt:
        await rt.abort(run_id)
        await rt.register(Workflow(id="w", pipelines={"go": [step("hang")]}))
        await rt.idle()
        info = await rt.watch("w", run_id)
        assert info is not None and info.status == "aborted"
    assert calls == ["hang"]  # never re-run after the abort


async def test_completed_runs_never_run_again(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [step("a")]}))
        await rt.invoke("w", "go", {})
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [step("a")]}))
        await rt.idle()
    assert calls == ["a"]

"""Retry and fork through the API, on real journals: where each starts, with what state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from procs import query

from orchestrator import (
    RunNotActive,
    RunNotFound,
    Runtime,
    Serialized,
    SingletonLoop,
    Step,
    StepNotFound,
    Workflow,
    WorkflowBusy,
    WorkflowNotFound,
)
from orchestrator.testing import eventually

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL

Calls = dict[str, int]


def counting(calls: Calls, name: str, *, fail_while: list[bool] | None = None) -> Step:
    """A step that counts its calls, adds its name to ``done``, and fails while told to."""

    def step(state: dict[str, Any]) -> dict[str, Any]:
        calls[name] = calls.get(name, 0) + 1
        if fail_while is not None and fail_while[0]:
            raise RuntimeError(f"{name} is broken")
        return {**state, "done": [*state.get("done", []), name]}

    return Step(step, name=name, inline=True)


def pipeline(calls: Calls, broken: list[bool]) -> Workflow:
    return Workflow(
        id="w",
        pipelines={
            "go": [
                counting(calls, "a"),
                counting(calls, "b", fail_while=broken),
                counting(calls, "c"),
            ]
        },
    )


async def kinds(rt: Runtime, run_id: str) -> list[str]:
    return [entry.kind for entry in await rt.timeline(run_id)]


async def test_retry_continues_a_failed_run_at_its_failed_step(db: Path) -> None:
    calls: Calls = {}
    broken = [True]
    heard: list[dict[str, Any]] = []
    async with Runtime(db) as rt:
        rt.on("run.retried", lambda _, payload: heard.append(payload))
        await rt.register(pipeline(calls, broken))
        failed = await rt.invoke("w", "go", {"n": 1})
        assert failed.status == "failed" and failed.error_code == "STEP_FAILED"
        broken[0] = False
        result = await rt.retry(failed.run_id, {"patched": True})
        assert result.run_id == failed.run_id and result.status == "completed"
        assert result.state == {"n": 1, "done": ["a", "b", "c"], "patched": True}
        assert calls == {"a": 1, "b": 2, "c": 1}  # a is not run again
        timeline = await kinds(rt, failed.run_id)
        # The failed attempt stays: b's failure, the run's end, then the retry.
        assert timeline.index("step.failed") < timeline.index("run.failed")
        assert timeline.index("run.failed") < timeline.index("run.retried")
        assert timeline[-1] == "run.completed" and timeline.count("run.started") == 1
        [retried] = [e for e in await rt.timeline(failed.run_id) if e.kind == "run.retried"]
        assert retried.step == "b" and retried.data is not None
        assert retried.data["previous_status"] == "failed" and retried.data["patched"] == [
            "patched"
        ]
        assert [p["run_id"] for p in heard] == [failed.run_id]
        info = await rt.watch("w", failed.run_id)
        assert info is not None and info.error is None and info.forked_from is None


async def test_retry_refuses_runs_that_are_not_failed_or_aborted(db: Path) -> None:
    calls: Calls = {}
    async with Runtime(db) as rt:
        await rt.register(pipeline(calls, [False]))
        completed = await rt.invoke("w", "go", {})
        with pytest.raises(RunNotActive, match="only a failed or aborted run"):
            await rt.retry(completed.run_id)
        with pytest.raises(RunNotFound):
            await rt.retry("no-such-run")

        def wait(state: dict[str, Any], ctx: Any) -> Any:
            return ctx.pause(event="go.on")

        await rt.register(Workflow(id="p", pipelines={"go": [wait, counting(calls, "after")]}))
        paused = await rt.invoke("p", "go", {})
        assert paused.status == "paused"
        with pytest.raises(RunNotActive, match="is paused"):
            await rt.retry(paused.run_id)
        await rt.abort(paused.run_id)
        # An aborted run continues where it was: its next step, after the pause.
        result = await rt.retry(paused.run_id)
        assert result.status == "completed" and calls["after"] == 1


async def test_retry_runs_on_the_current_version_and_says_what_is_gone(db: Path) -> None:
    calls: Calls = {}
    async with Runtime(db) as rt:
        await rt.register(pipeline(calls, [True]))
        failed = await rt.invoke("w", "go", {})
        before = await rt.watch("w", failed.run_id)
        assert before is not None
        old = before.version
        renamed = Workflow(id="w", pipelines={"go": [counting(calls, "a"), counting(calls, "x")]})
        await rt.register(renamed)
        with pytest.raises(
            StepNotFound, match=r"step 'b', which workflow 'w' no longer"
        ) as refused:
            await rt.retry(failed.run_id)
        assert refused.value.code == "STEP_NOT_FOUND"
        fixed = Workflow(id="w", pipelines={"go": [counting(calls, "a"), counting(calls, "b")]})
        await rt.register(fixed)
        result = await rt.retry(failed.run_id)
        assert result.status == "completed" and calls == {"a": 1, "b": 2}
        info = await rt.watch("w", failed.run_id)
        assert info is not None and info.version == rt.registry("w").version != old
        [retried] = [e for e in await rt.timeline(failed.run_id) if e.kind == "run.retried"]
        assert retried.data is not None and retried.data["from_version"] == old
        await rt.deregister("w")
        with pytest.raises(WorkflowNotFound):
            await rt.fork(failed.run_id)


async def test_a_retried_run_passes_through_its_mode(db: Path) -> None:
    calls: Calls = {}
    broken = [True]
    release = asyncio.Event()

    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return state

    async with Runtime(db) as rt:
        flow = pipeline(calls, broken)
        serial = Workflow(id="w", pipelines={**flow.pipelines, "hold": [hold]}, mode=Serialized())
        await rt.register(serial)
        failed = await rt.invoke("w", "go", {})
        broken[0] = False
        holder = asyncio.ensure_future(rt.invoke("w", "hold", {}))
        await eventually(lambda: rt.active_runs() == 1, what="the holder runs")
        retrying = asyncio.ensure_future(rt.retry(failed.run_id))
        await eventually(lambda: _status(db, failed.run_id) == "queued", what="retry queued")
        release.set()
        assert (await retrying).status == "completed"
        assert (await holder).status == "completed"

        single = Workflow(
            id="s",
            pipelines={"go": [counting(calls, "s", fail_while=broken)], "hold": [hold]},
            mode=SingletonLoop(on_busy="drop"),
        )
        await rt.register(single)
        broken[0] = True
        failed = await rt.invoke("s", "go", {})
        release.clear()
        holder = asyncio.ensure_future(rt.invoke("s", "hold", {}))
        await eventually(lambda: rt.active_runs() == 1, what="the holder runs")
        with pytest.raises(WorkflowBusy, match="busy"):
            await rt.retry(failed.run_id)
        assert _status(db, failed.run_id) == "failed"  # kept as it was
        release.set()
        await holder


async def test_fork_starts_a_new_run_at_a_step_with_the_state_before_it(db: Path) -> None:
    calls: Calls = {}
    async with Runtime(db) as rt:
        await rt.register(pipeline(calls, [False]))
        source = await rt.invoke("w", "go", {"n": 1})
        new_id = await rt.fork(source.run_id, "b", {"extra": 2})
        assert new_id != source.run_id
        result = await rt.wait(new_id, timeout=10)
        # Started at b with the state a left, patched; a did not run again.
        assert result.state == {"n": 1, "done": ["a", "b", "c"], "extra": 2}
        assert calls == {"a": 1, "b": 2, "c": 2}
        info = await rt.watch("w", new_id)
        assert info is not None and info.forked_from == {"run_id": source.run_id, "step": "b"}
        assert "run.forked" in await kinds(rt, new_id)
        original = await rt.watch("w", source.run_id)
        assert original is not None and original.forked_from is None
        assert original.state == source.state and original.status == "completed"

        first = await rt.wait(await rt.fork(source.run_id), timeout=10)
        assert first.state == {"n": 1, "done": ["a", "b", "c"]}  # from its input
        with pytest.raises(StepNotFound, match="has no step 'nope'; its steps: 'a', 'b', 'c'"):
            await rt.fork(source.run_id, "nope")


async def test_fork_of_a_failed_run_from_its_failed_step(db: Path) -> None:
    calls: Calls = {}
    broken = [True]
    async with Runtime(db) as rt:
        await rt.register(pipeline(calls, broken))
        failed = await rt.invoke("w", "go", {"n": 1})
        with pytest.raises(StepNotFound, match="never reached step 'c'"):
            await rt.fork(failed.run_id, "c")
        broken[0] = False
        forked = await rt.wait(await rt.fork(failed.run_id, "b"), timeout=10)
        assert forked.status == "completed" and forked.state["done"] == ["a", "b", "c"]
        assert _status(db, failed.run_id) == "failed"


def _status(db: Path, run_id: str) -> str:
    rows = query(db, "SELECT status FROM runs WHERE run_id = ?", (run_id,))
    return str(rows[0][0]) if rows else ""


async def test_a_failure_handler_can_retry_its_run_from_a_task_of_its_own(db: Path) -> None:
    calls: Calls = {}
    broken = [True]
    refused: list[str] = []
    retried: list[asyncio.Task[Any]] = []
    async with Runtime(db) as rt:

        async def on_failed(_: str, payload: dict[str, Any]) -> None:
            if retried:
                return
            try:
                await rt.retry(payload["run_id"])  # inside its own end: refused, not a hang
            except RunNotActive as exc:
                refused.append(str(exc))
            broken[0] = False
            retried.append(asyncio.create_task(rt.retry(payload["run_id"])))

        rt.on("run.failed", on_failed)
        await rt.register(pipeline(calls, broken))
        failed = await rt.invoke("w", "go", {})
        assert failed.status == "failed"
        await eventually(lambda: retried, what="the handler's retry")
        result = await retried[0]
    assert result.status == "completed" and calls == {"a": 1, "b": 2, "c": 1}
    assert refused and "still finishing" in refused[0]

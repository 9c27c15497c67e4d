"""Payloads are bounded: at most MAX_DEPTH levels, valid Unicode, refused without a crash.

A step that returns such a state fails its run with INVALID_STATE (other runs of the same
batch are unaffected); data entering through the API is a ValidationError; free text from
user code (an exception's message) reaches the journal escaped, never failing a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import cli

import orchestrator
from orchestrator import MAX_DEPTH, InvalidState, Runtime, Step, ValidationError, Workflow


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def lists(levels: int) -> dict[str, Any]:
    value: Any = []
    for _ in range(levels - 2):
        value = [value]
    return {"a": value}


def cycle() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["a"] = value["b"] = value
    return value


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: nested(10_000), id="deep-objects"),
        pytest.param(lambda: lists(10_000), id="deep-lists"),
        pytest.param(lambda: nested(MAX_DEPTH + 1), id="one-too-deep"),
        pytest.param(cycle, id="cycle-through-two-keys"),
        pytest.param(lambda: {"s": "\udc80"}, id="surrogate"),
        pytest.param(lambda: {"\udc80": 1}, id="surrogate-key"),
    ],
)
async def test_a_state_too_deep_or_not_unicode_fails_only_its_run(
    db: Path, bad: Callable[[], dict[str, Any]]
) -> None:
    async def returns_bad(state: dict[str, Any]) -> dict[str, Any]:
        return bad()

    async with Runtime(db) as rt:
        await rt.register(
            Workflow(id="w", pipelines={"bad": [Step(returns_bad, name="bad")], "ok": [inc]})
        )
        # Started together, so their writes share batches: the good runs are unaffected.
        results = await asyncio.gather(
            rt.invoke("w", "ok", {"n": 0}),
            rt.invoke("w", "bad", {"n": 0}),
            rt.invoke("w", "ok", {"n": 1}),
        )
        good, failed, other = results
        assert (failed.status, failed.error_code) == ("failed", "INVALID_STATE")
        assert "'bad'" in (failed.error or "")
        assert good.ok and other.ok and (good.state, other.state) == ({"n": 1}, {"n": 2})
        for result in results:
            info = await rt.watch("w", result.run_id)
            assert info is not None and info.status == result.status


async def test_the_deepest_state_allowed_is_kept(db: Path) -> None:
    async def deepest(state: dict[str, Any]) -> dict[str, Any]:
        return nested(MAX_DEPTH)

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [deepest]}))
        result = await rt.invoke("w", "go", {})
    assert result.ok and result.state == nested(MAX_DEPTH)


async def test_a_surrogate_in_an_error_message_is_journaled_escaped(db: Path) -> None:
    async def fails(state: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("bad \udc80 byte")

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [fails], "ok": [inc]}))
        result, other = await asyncio.gather(
            rt.invoke("w", "go", {}), rt.invoke("w", "ok", {"n": 0})
        )
        assert result.error_code == "STEP_FAILED" and other.ok
        info = await rt.watch("w", result.run_id)
        assert info is not None and info.status == "failed"
        assert "\\udc80" in (info.error or "")


async def test_payloads_too_deep_or_not_unicode_are_refused_where_they_enter(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc]}))
        for bad in (nested(100), lists(100), {"s": "\udc80"}):
            with pytest.raises(ValidationError):
                await rt.emit("thing.happened", bad)
            with pytest.raises(ValidationError):
                await rt.invoke("w", "go", bad)
        with pytest.raises(ValidationError):
            await rt.emit("thing.\udc80", {})
        assert (await rt.invoke("w", "go", nested(MAX_DEPTH))).ok


async def test_the_pipeline_runner_refuses_a_deep_state() -> None:
    async def deep(state: dict[str, Any]) -> dict[str, Any]:
        return nested(10_000)

    with pytest.raises(InvalidState, match="deeper than 64"):
        await orchestrator.run([deep], {})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"a": "\\ud800"}', id="surrogate"),
        pytest.param('{"a": ' + "[" * 100 + "]" * 100 + "}", id="deep"),
        pytest.param("[" * 100_000, id="too-deep-to-parse"),
    ],
)
def test_the_cli_refuses_such_data_with_exit_2(db: Path, text: str) -> None:
    out = cli("emit", "thing.happened", text, "--db", str(db))
    assert out.returncode == 2 and "error:" in out.stderr, out.stderr


async def test_resume_and_signal_refuse_such_data_and_the_run_goes_on(db: Path) -> None:
    def wait(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(event="never")

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [wait, inc]}))
        paused = await rt.invoke("w", "go", {"n": 0})
        assert paused.status == "paused"
        for bad in (nested(100), {"s": "\udc80"}):
            with pytest.raises(ValidationError):
                await rt.signal(paused.run_id, bad)
            with pytest.raises(ValidationError):
                await rt.resume(paused.run_id, bad)
        await rt.resume(paused.run_id, {"deep": nested(MAX_DEPTH - 1)})
        result = await rt.wait(paused.run_id)
        assert result.ok and result.state == {"n": 1, "deep": nested(MAX_DEPTH - 1)}

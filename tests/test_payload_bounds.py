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


async def test_a_payload_over_the_size_limit_is_refused_naming_the_limit(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator.state, "MAX_PAYLOAD_BYTES", 1000)

    async def grows(state: dict[str, Any]) -> dict[str, Any]:
        return {"blob": "x" * 2000}

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc], "grow": [grows]}))
        with pytest.raises(ValidationError, match="over the limit of 1,000 bytes"):
            await rt.emit("thing.happened", {"blob": "é" * 600})  # 1,200 bytes as UTF-8
        assert (await rt.invoke("w", "go", {"blob": "x" * 900})).ok
        grown = await rt.invoke("w", "grow", {})
        assert grown.error_code == "INVALID_STATE"
        assert "ORCHESTRATOR_MAX_PAYLOAD_BYTES" in (grown.error or "")


async def test_integers_beyond_64_bits_and_nan_are_refused(db: Path) -> None:
    async def huge(state: dict[str, Any]) -> dict[str, Any]:
        return {"n": 2**64}

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc], "huge": [huge]}))
        for bad in ({"n": 2**63}, {"n": [-(2**63) - 1]}, {"n": float("nan")}):
            with pytest.raises(ValidationError):
                await rt.emit("thing.happened", bad)
        assert (await rt.invoke("w", "go", {"n": 2**63 - 2})).state == {"n": 2**63 - 1}
        assert (await rt.invoke("w", "huge", {})).error_code == "INVALID_STATE"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"a": ' + "9" * 5000 + "}", id="5000-digit-integer"),
        pytest.param('{"a": 1e999}', id="infinite-float"),
        pytest.param('{"a": NaN}', id="nan"),
        pytest.param('{"a": 18446744073709551616}', id="beyond-64-bits"),
    ],
)
def test_the_cli_refuses_numbers_json_cannot_carry(db: Path, text: str) -> None:
    out = cli("emit", "thing.happened", text, "--db", str(db))
    assert out.returncode == 2 and "error:" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


POISON = [
    pytest.param("[" * 100_000 + "]" * 100_000, id="too-deep-to-parse"),
    pytest.param('{"a": ' + "9" * 5000 + "}", id="5000-digit-integer"),
    pytest.param('{"a": ', id="not-json"),
    pytest.param('{"a": "\\udc80"}', id="lone-surrogate"),
]


@pytest.mark.parametrize("poison", POISON)
async def test_an_unreadable_event_row_fails_only_that_event(db: Path, poison: str) -> None:
    """A row no process of this version writes (an older version, a hand edit) is skipped
    with an error at every start, not the end of the daemon at every start."""
    import sqlite3

    flow = Workflow(id="w", pipelines={"go": [inc]}, triggers={"go": orchestrator.Trigger("t")})
    async with Runtime(db, workflows=[flow]) as rt:
        pass
    with sqlite3.connect(db) as conn:
        for n, data in enumerate([poison, '{"n": 1}']):
            conn.execute(
                "INSERT INTO events (event_id, type, data, source, created_at)"
                " VALUES (?, 't', ?, 'cli', ?)",
                (f"e{n}", data, n + 1),
            )
    for _ in range(2):  # and again after a restart
        async with Runtime(db, workflows=[flow]) as rt:
            await rt.idle()
            runs = await rt.list_runs()
        assert [(run.status, run.state) for run in runs] == [("completed", {"n": 2})]


@pytest.mark.parametrize("poison", POISON)
async def test_an_unreadable_run_state_fails_that_run_at_recovery(db: Path, poison: str) -> None:
    import sqlite3

    def wait(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(event="go.on")

    flow = Workflow(id="w", pipelines={"go": [wait, inc]})
    async with Runtime(db, workflows=[flow]) as rt:
        spoiled = await rt.invoke("w", "go", {"n": 0})
        healthy = await rt.invoke("w", "go", {"n": 5})
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE checkpoints SET state = ? WHERE run = (SELECT id FROM runs WHERE run_id = ?)",
            (poison, spoiled.run_id),
        )
    async with Runtime(db, workflows=[flow]) as rt:
        await rt.emit("go.on", {})
        done = await rt.wait(healthy.run_id, timeout=10)
        failed = await rt.wait(spoiled.run_id, timeout=10)
        assert done.ok and done.state == {"n": 6}
        assert (failed.status, failed.error_code) == ("failed", "INVALID_STATE")
        assert "cannot be read at recovery" in (failed.error or "")
        shown = cli("show", spoiled.run_id, "--json", "--db", str(db))
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert '"INVALID_STATE"' in shown.stdout


async def test_huge_free_text_from_user_code_is_journaled_cut(db: Path) -> None:
    def noisy(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.log.info("x" * 1_000_000)
        raise ValueError("y" * 1_000_000)

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [noisy]}))
        with pytest.raises(ValidationError, match="at most 1024 characters"):
            await rt.emit("t" * 2000, {})
        result = await rt.invoke("w", "go", {})
        timeline = await rt.timeline(result.run_id)
    assert result.error_code == "STEP_FAILED"
    info_line = next(entry for entry in timeline if entry.kind == "info")
    for text in (result.error or "", info_line.message or ""):
        assert len(text) < 70_000 and text.endswith("more characters cut)")

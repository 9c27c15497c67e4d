"""The pipeline runner: series, isolation, failures, policy, lifecycle events."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.define.model import Step
from orchestrator.errors import (
    DefinitionError,
    InvalidState,
    PipelineError,
    StepTimeout,
    ValidationError,
)
from orchestrator.pipeline.runner import PipelineContext, run
from orchestrator.testing import FakeClock

Events = list[tuple[str, dict[str, Any]]]


def recorder() -> tuple[Events, Any]:
    events: Events = []

    def on_event(name: str, payload: dict[str, Any]) -> None:
        events.append((name, payload))

    return events, on_event


def names(events: Events) -> list[str]:
    return [name for name, _ in events]


def add(key: str, value: Any) -> Any:
    def op(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, key: value}

    op.__name__ = f"set_{key}"
    return op


# -- series, call shapes ------------------------------------------------------------------


async def test_operations_run_in_series_and_the_final_state_is_returned() -> None:
    order: list[str] = []

    def first(state: dict[str, Any]) -> dict[str, Any]:
        order.append("first")
        return {"n": state["n"] + 1}

    async def second(state: dict[str, Any]) -> dict[str, Any]:
        order.append("second")
        return {"n": state["n"] * 10}

    assert await run([first, second], {"n": 1}) == {"n": 20}
    assert order == ["first", "second"]


async def test_sync_async_state_and_ctx_shapes() -> None:
    seen: list[tuple[str, int, int, str, object]] = []

    def sync_ctx(state: dict[str, Any], ctx: PipelineContext) -> dict[str, Any]:
        seen.append((ctx.step_name, ctx.step_index, ctx.attempt, ctx.log.name, ctx.idempotency_key))
        return {**state, "a": 1}

    async def async_ctx(state: dict[str, Any], ctx: PipelineContext) -> dict[str, Any]:
        seen.append((ctx.step_name, ctx.step_index, ctx.attempt, ctx.log.name, ctx.idempotency_key))
        return {**state, "b": 2}

    async def async_plain(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "c": 3}

    result = await run([sync_ctx, async_ctx, async_plain, add("d", 4)], {})
    assert result == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert seen == [
        ("sync_ctx", 0, 1, "orchestrator.pipeline", None),
        ("async_ctx", 1, 1, "orchestrator.pipeline", None),
    ]


async def test_sync_steps_run_in_a_worker_thread_unless_inline() -> None:
    threads: list[str] = []

    def where(state: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return state

    await run([where, Step(where, inline=True, name="inline")], {})
    assert threads[0] != threading.main_thread().name
    assert threads[1] == threading.main_thread().name


async def test_empty_pipeline_returns_a_copy_of_the_input() -> None:
    state = {"x": [1]}
    result = await run([], state)
    assert result == state and result is not state


# -- isolation ----------------------------------------------------------------------------


async def test_mutating_the_input_does_not_change_what_the_previous_step_returned() -> None:
    returned: list[dict[str, Any]] = []

    def produce(state: dict[str, Any]) -> dict[str, Any]:
        result = {"items": [1], "meta": {"k": "v"}}
        returned.append(result)
        return result

    def vandal(state: dict[str, Any]) -> dict[str, Any]:
        state["items"].append(2)
        state["meta"]["k"] = "changed"
        return {"done": True}

    events, on_event = recorder()
    assert await run([produce, vandal], {"start": 1}, on_event=on_event) == {"done": True}
    assert returned == [{"items": [1], "meta": {"k": "v"}}]
    completed = [p for n, p in events if n == "step.completed"]
    assert completed[0]["state"] == {"items": [1], "meta": {"k": "v"}}


async def test_the_input_and_the_result_are_not_shared_with_steps() -> None:
    initial = {"items": [1]}
    last: list[dict[str, Any]] = []

    def grab(state: dict[str, Any]) -> dict[str, Any]:
        state["items"].append(2)
        last.append(state)
        return state

    result = await run([grab], initial)
    assert initial == {"items": [1]}
    result["items"].append(3)
    assert last[0] == {"items": [1, 2]}


# -- failures -----------------------------------------------------------------------------


async def test_failure_names_the_step_keeps_last_good_state_and_stops() -> None:
    later: list[str] = []

    def boom(state: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("missing")

    def never(state: dict[str, Any]) -> dict[str, Any]:
        later.append("ran")
        return state

    with pytest.raises(PipelineError) as info:
        await run([add("a", 1), boom, never], {"n": 0})
    error = info.value
    assert type(error) is PipelineError
    assert (error.step_index, error.step_name, error.state) == (1, "boom", {"n": 0, "a": 1})
    assert "step 1 'boom'" in str(error) and "KeyError" in str(error)
    assert isinstance(error.__cause__, KeyError)
    assert later == []


async def test_repeated_names_are_numbered_in_errors() -> None:
    def boom(state: dict[str, Any]) -> dict[str, Any]:
        if state.get("again"):
            raise ValueError("second time")
        return {"again": True}

    with pytest.raises(PipelineError) as info:
        await run([boom, boom], {})
    assert (info.value.step_index, info.value.step_name) == (1, "boom#2")


@pytest.mark.parametrize(
    "bad",
    [
        {1, 2},
        datetime(2026, 1, 1, tzinfo=UTC),
        {"x": math.nan},
        {"when": datetime(2026, 1, 1, tzinfo=UTC)},
        None,
        [1, 2],
    ],
)
async def test_non_dict_or_non_json_result_is_invalid_state(bad: object) -> None:
    later: list[str] = []

    def returns_bad(state: dict[str, Any]) -> object:
        return bad

    def never(state: dict[str, Any]) -> dict[str, Any]:
        later.append("ran")
        return state

    with pytest.raises(InvalidState) as info:
        await run([add("ok", True), returns_bad, never], {})
    assert (info.value.step_index, info.value.step_name) == (1, "returns_bad")
    assert info.value.state == {"ok": True}
    assert "returns_bad" in str(info.value)
    assert later == []


@pytest.mark.parametrize("bad", [[1], "text", {"x": {1, 2}}, None])
async def test_initial_state_must_be_a_json_object(bad: object) -> None:
    events, on_event = recorder()
    with pytest.raises(InvalidState) as info:
        await run([add("a", 1)], bad, on_event=on_event)
    assert (info.value.step_index, info.value.step_name) == (-1, "<input>")
    assert events == []


async def test_a_pipeline_that_is_not_a_list_of_callables() -> None:
    with pytest.raises(DefinitionError):
        await run([add("a", 1), 42], {})  # type: ignore[list-item]


@pytest.mark.parametrize(
    "bad",
    [{"backoff": math.nan}, {"backoff": math.inf}, {"timeout": math.nan}, {"timeout": math.inf}],
    ids=["backoff-nan", "backoff-inf", "timeout-nan", "timeout-inf"],
)
def test_a_step_refuses_seconds_that_are_not_finite(bad: dict[str, float]) -> None:
    """A NaN backoff gave no retry at all, a NaN timeout no limit, an infinite one a run
    that never ends: each is refused where the step is defined."""
    with pytest.raises(DefinitionError, match="seconds"):
        Step(lambda state: state, retries=2, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["w\ud800x", "a\x00b"], ids=["lone-surrogate", "nul"])
def test_a_step_name_a_journal_cannot_keep_is_refused_where_it_is_defined(name: str) -> None:
    """It used to be accepted, then stopped the PostgreSQL writer (and the daemon) at its
    first checkpoint."""
    with pytest.raises(DefinitionError, match="no NUL, no lone surrogate"):
        Step(lambda state: state, name=name)


async def test_retries_with_doubling_backoff_on_the_clock() -> None:
    clock = FakeClock()
    start = clock.now_us()
    attempts: list[float] = []

    async def flaky(state: dict[str, Any], ctx: PipelineContext) -> dict[str, Any]:
        attempts.append((clock.now_us() - start) / 1_000_000)
        if ctx.attempt < 3:
            raise ConnectionError(f"try {ctx.attempt}")
        return {"attempt": ctx.attempt}

    events, on_event = recorder()
    job = asyncio.ensure_future(
        run([Step(flaky, retries=3, backoff=1.0)], {}, on_event=on_event, clock=clock)
    )
    while not job.done():
        await clock.advance(0.5)
    assert await job == {"attempt": 3}
    assert [b - a for a, b in itertools.pairwise(attempts)] == [1.0, 2.0]
    failed = [p for n, p in events if n == "step.failed"]
    assert [(p["attempt"], p["retry_in"]) for p in failed] == [(1, 1.0), (2, 2.0)]
    assert "ConnectionError: try 1" in failed[0]["error"]
    assert names(events) == [
        "job.started",
        "step.started",
        "step.failed",
        "step.failed",
        "step.completed",
        "job.completed",
    ]


async def test_retries_exhausted_raise_with_the_attempt_count() -> None:
    calls: list[int] = []

    def always(state: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        raise RuntimeError("no")

    events, on_event = recorder()
    with pytest.raises(PipelineError, match="after 3 attempts") as info:
        await run([Step(always, retries=2, backoff=0)], {"n": 1}, on_event=on_event)
    assert len(calls) == 3
    assert info.value.state == {"n": 1}
    failed = [(p["attempt"], p["retry_in"]) for n, p in events if n == "step.failed"]
    assert failed == [(1, 0.0), (2, 0.0), (3, None)]


async def test_async_step_timeout() -> None:
    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)  # far past its timeout: it must be cancelled
        return state

    started = time.monotonic()
    with pytest.raises(StepTimeout) as info:
        await run([add("a", 1), Step(slow, timeout=0.05)], {})
    assert time.monotonic() - started < 5
    assert (info.value.step_index, info.value.step_name, info.value.state) == (1, "slow", {"a": 1})
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_thread_step_timeout_discards_its_result() -> None:
    release = threading.Event()
    finished = threading.Event()
    later: list[str] = []

    def blocking(state: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)
        finished.set()
        return {"late": True}

    def never(state: dict[str, Any]) -> dict[str, Any]:
        later.append("ran")
        return state

    try:
        with pytest.raises(StepTimeout) as info:
            await run([Step(blocking, timeout=0.05), never], {"n": 1})
        assert not finished.is_set()  # raised while the thread was still blocked
        assert info.value.state == {"n": 1}
    finally:
        release.set()
    await asyncio.to_thread(finished.wait, 5)
    assert later == []


@pytest.mark.parametrize("inline", [False, True])
async def test_sys_exit_in_a_sync_step_is_a_pipeline_error(inline: bool) -> None:
    def leave(state: dict[str, Any]) -> dict[str, Any]:
        sys.exit(3)

    with pytest.raises(PipelineError) as info:
        await run([Step(leave, inline=inline)], {})
    assert isinstance(info.value.__cause__, SystemExit)
    assert info.value.step_name == "leave"


async def test_sys_exit_in_an_async_step_is_a_pipeline_error() -> None:
    async def leave(state: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)  # a step that really awaits before it exits
        raise SystemExit("bye")

    with pytest.raises(PipelineError, match="SystemExit: bye") as info:
        await run([leave], {})
    assert isinstance(info.value.__cause__, SystemExit)


# -- events -------------------------------------------------------------------------------


async def test_event_order_and_payloads_on_success() -> None:
    events, on_event = recorder()
    await run([add("a", 1), add("b", 2)], {"n": 0}, on_event=on_event)
    assert events == [
        ("job.started", {"steps": ["set_a", "set_b"], "state": {"n": 0}}),
        ("step.started", {"index": 0, "name": "set_a", "state": {"n": 0}}),
        ("step.completed", {"index": 0, "name": "set_a", "attempt": 1, "state": {"n": 0, "a": 1}}),
        ("step.started", {"index": 1, "name": "set_b", "state": {"n": 0, "a": 1}}),
        (
            "step.completed",
            {"index": 1, "name": "set_b", "attempt": 1, "state": {"n": 0, "a": 1, "b": 2}},
        ),
        ("job.completed", {"state": {"n": 0, "a": 1, "b": 2}}),
    ]


async def test_event_order_on_failure_and_async_handler_is_awaited() -> None:
    events: Events = []

    async def on_event(name: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a handler that really awaits: the runner must await it
        events.append((name, payload))

    def boom(state: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("bad input")

    with pytest.raises(PipelineError):
        await run([add("a", 1), boom, add("b", 2)], {}, on_event=on_event)
    assert names(events) == [
        "job.started",
        "step.started",
        "step.completed",
        "step.started",
        "step.failed",
        "job.failed",
    ]
    failed = dict(events)["job.failed"]
    assert failed == {
        "index": 1,
        "name": "boom",
        "error": "ValueError: bad input",
        "state": {"a": 1},
    }


async def test_async_handler_sees_retry_events_before_the_retry_runs() -> None:
    log: list[str] = []

    async def on_event(name: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a handler that really awaits: the runner must await it
        log.append(f"{name}:{payload.get('attempt', '')}")

    def flaky(state: dict[str, Any], ctx: PipelineContext) -> dict[str, Any]:
        log.append(f"attempt:{ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return state

    await run([Step(flaky, retries=1)], {}, on_event=on_event)
    assert log == [
        "job.started:",
        "step.started:",
        "attempt:1",
        "step.failed:1",
        "attempt:2",
        "step.completed:2",
        "job.completed:",
    ]


async def test_handlers_cannot_change_the_state_through_payloads() -> None:
    def on_event(name: str, payload: dict[str, Any]) -> None:
        if "state" in payload:
            payload["state"]["injected"] = True

    assert await run([add("a", 1)], {}, on_event=on_event) == {"a": 1}


async def test_ctx_log_is_the_pipeline_logger(caplog: pytest.LogCaptureFixture) -> None:
    def talk(state: dict[str, Any], ctx: PipelineContext) -> dict[str, Any]:
        ctx.log.info("working on %s", ctx.step_name)
        return state

    with caplog.at_level(logging.INFO, logger="orchestrator.pipeline"):
        await run([Step(talk, inline=True)], {})
    assert [r.getMessage() for r in caplog.records] == ["working on talk"]


# -- source text --------------------------------------------------------------------------


SOURCE = """
import json

def double(state):
    return {"n": state["n"] * 2}

async def describe(state, ctx):
    return {**state, "text": json.dumps({"step": ctx.step_name})}

pipeline = [double, describe]
"""


async def test_source_text_runs_its_pipeline() -> None:
    result = await run(SOURCE, {"n": 2}, allow=[r"^json$"])
    assert result == {"n": 4, "text": '{"step": "describe"}'}


@pytest.mark.parametrize(
    ("source", "policy", "module", "line"),
    [
        ("import json\nimport os\npipeline = []\n", {}, "os", 2),
        ("from subprocess import run\npipeline = []\n", {}, "subprocess", 1),
        ("x = 1\nimport requests\npipeline = []\n", {"block": ["requests"]}, "requests", 2),
        ("import json\nimport math\npipeline = []\n", {"allow": [r"^json$"]}, "math", 2),
        ("m = __import__('os')\npipeline = []\n", {}, "os", 1),
    ],
)
async def test_source_policy_violations(
    source: str, policy: dict[str, list[str]], module: str, line: int
) -> None:
    events, on_event = recorder()
    with pytest.raises(ValidationError) as info:
        await run(source, {}, on_event=on_event, **policy)  # type: ignore[arg-type]
    assert (info.value.module, info.value.line) == (module, line)
    assert f"line {line}" in str(info.value) and repr(module) in str(info.value)
    assert events == []


async def test_builtins_trick_in_source_is_rejected() -> None:
    source = "b = __builtins__\npipeline = []\n"
    with pytest.raises(ValidationError, match="__builtins__"):
        await run(source, {})


async def test_source_syntax_error_and_missing_pipeline() -> None:
    with pytest.raises(ValidationError, match="syntax error") as info:
        await run("x = 1\ny = = 2\n", {})
    assert info.value.line == 2
    with pytest.raises(ValidationError, match="defines no 'pipeline'"):
        await run("x = 1\n", {})


async def test_source_is_validated_before_any_line_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    source = f"open({str(marker)!r}, 'w').write('ran')\nimport socket\npipeline = []\n"
    with pytest.raises(ValidationError):
        await run(source, {})
    assert not marker.exists()


async def test_dynamic_import_inside_a_step_fails_the_step() -> None:
    source = textwrap.dedent(
        """
        imp = globals()["__buil" + "tins__"]["__imp" + "ort__"]
        def sneaky(state):
            imp("o" + "s")
            return state
        pipeline = [sneaky]
        """
    )
    with pytest.raises(PipelineError) as info:
        await run(source, {})
    assert info.value.step_name == "sneaky"
    assert isinstance(info.value.__cause__, ValidationError)


def write_adaptor(home: Path, greeting: str) -> Path:
    (home / "adaptors").mkdir(parents=True)
    (home / "adaptors" / "__init__.py").write_text("")
    (home / "adaptors" / "greet.py").write_text(  # an async adaptor that really awaits
        f"import asyncio\n\nasync def greet(name):\n    await asyncio.sleep(0.01)\n"
        f"    return {greeting!r} + name\n"
    )
    return home


ADAPTOR_SOURCE = """
from adaptors.greet import greet

async def hello(state):
    return {**state, "text": await greet(state["name"])}

def again(state):
    import adaptors.greet
    return {**state, "module": adaptors.greet.__name__}

pipeline = [hello, again]
"""


async def test_module_home_adaptors_are_per_job(tmp_path: Path) -> None:
    english = write_adaptor(tmp_path / "en", "hello ")
    french = write_adaptor(tmp_path / "fr", "bonjour ")
    await run([add("warm", 1)], {})  # let lazy imports of the runner happen first
    before = set(sys.modules)
    allow = [r"^adaptors\.", r"^asyncio$"]
    one, two = await asyncio.gather(
        run(ADAPTOR_SOURCE, {"name": "ann"}, allow=allow, module_home=english),
        run(ADAPTOR_SOURCE, {"name": "bob"}, allow=allow, module_home=str(french)),
    )
    assert one == {"name": "ann", "text": "hello ann", "module": "adaptors.greet"}
    assert two == {"name": "bob", "text": "bonjour bob", "module": "adaptors.greet"}
    assert set(sys.modules) == before
    assert "adaptors" not in sys.modules


async def test_without_module_home_the_adaptor_is_not_found(tmp_path: Path) -> None:
    write_adaptor(tmp_path / "en", "hello ")
    with pytest.raises(ValidationError, match="No module named 'adaptors'"):
        await run(ADAPTOR_SOURCE, {"name": "ann"})

"""Isolated steps attacked as a hostile or clumsy workflow author would, with real processes.

Each test loads one workflow file (`FLOW`) from a folder into an embedded `Runtime` with
``isolate=True``, as ``orchestrator up`` does, and picks an attack by the run's input
(``{"kind": ...}``). Workers are few (one, mostly) so that a worker one run poisoned is the
worker the next run gets. Nothing sleeps: a test waits for what it needs to see.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestrator import Runtime
from orchestrator.engine.workers import Workers

FLOW = textwrap.dedent(
    '''\
    import os
    import threading

    from orchestrator import PauseRequest, Workflow

    # Set by a step of one run, used by a step of a later run in the same worker.
    handoff = {}


    def fork_and_return(state, ctx):
        os.fork()  # no exec, no os._exit: both copies return from the step
        return {"pid": os.getpid()}


    def echo(state, ctx):
        return {"echo": state["n"]}


    def log_later(state, ctx):
        """Leave a thread that logs once another run's step lets it."""
        go, done = threading.Event(), threading.Event()

        def later():
            go.wait()
            ctx.log.info("a line of run %s, logged after its step", ctx.run_id)
            done.set()

        threading.Thread(target=later, daemon=True).start()
        handoff["log"] = (go, done)
        return {}


    def let_it_log(state, ctx):
        go, done = handoff.pop("log")
        go.set()
        done.wait()
        return {}


    def log_huge_line(state, ctx):
        ctx.log.info("z" * 20_000_000)
        return {}


    def return_huge_key(state, ctx):
        return {("k" * 10_000_000,): 1}


    def raise_huge_type(state, ctx):
        raise type("E" * 10_000_000, (Exception,), {})("boom")


    def pause_by_hand(state, ctx):
        return PauseRequest(object(), None, None, None, "continue")


    def step(state, ctx):
        return globals()[state["kind"]](state, ctx)


    workflow = Workflow(id="attack", pipelines={"go": [step]})
    '''
)


@contextlib.asynccontextmanager
async def runtime(tmp_path: Path, **workers: Any) -> AsyncIterator[Runtime]:
    """A runtime that isolates the steps of `FLOW` (one worker unless told)."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "attack.py").write_text(FLOW)
    settings = Workers(**{"max": 1, "warm": 0, **workers})
    async with Runtime(
        tmp_path / "journal.db", workflows_dir=folder, isolate=True, workers=settings
    ) as rt:
        yield rt


async def test_a_step_that_forks_and_returns_twice_does_not_answer_for_the_next_run(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        forked = await rt.invoke("attack", "go", {"kind": "fork_and_return"})
        assert forked.ok, forked.error
        # The copy the step forked must not serve: each later run gets its own answer.
        for n in range(3):
            result = await rt.invoke("attack", "go", {"kind": "echo", "n": n})
            assert result.state == {"echo": n}, result


async def test_a_line_logged_after_its_step_ended_never_lands_in_another_run(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        leaker = await rt.invoke("attack", "go", {"kind": "log_later"})
        assert leaker.ok, leaker.error
        victim = await rt.invoke("attack", "go", {"kind": "let_it_log"})
        assert victim.ok, victim.error
        messages = [entry.message or "" for entry in await rt.timeline(victim.run_id)]
        assert not [m for m in messages if leaker.run_id in m], messages


async def test_what_a_step_sends_back_too_big_for_a_message_fails_only_as_its_own_fault(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        logged = await rt.invoke("attack", "go", {"kind": "log_huge_line"})
        assert logged.ok, logged.error
        lines = [e.message or "" for e in await rt.timeline(logged.run_id) if e.source == "logger"]
        assert len(lines) == 1 and lines[0].startswith("z" * 1000), lines
        assert "20000000 characters" in lines[0]
        invalid = await rt.invoke("attack", "go", {"kind": "return_huge_key"})
        assert invalid.error_code == "INVALID_STATE", invalid.error
        raised = await rt.invoke("attack", "go", {"kind": "raise_huge_type"})
        assert raised.error_code == "STEP_FAILED", raised.error


async def test_a_pause_request_built_by_hand_wrong_fails_its_step_with_a_clear_error(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        result = await rt.invoke("attack", "go", {"kind": "pause_by_hand"})
        assert result.error_code == "STEP_FAILED", result.error
        assert "return ctx.pause(...) or ctx.sleep(...)" in (result.error or "")

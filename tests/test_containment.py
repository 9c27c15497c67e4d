"""Faults stay inside one run: whatever step or hook code raises fails that run only.

Each kind of exception is raised from each kind of step (a sync step in a worker thread,
an inline sync step, an async step); the run ends failed with its code, and the runtime
keeps serving. Only the runtime's own cancellation (abort, timeout, shutdown) propagates.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, cli, query

import orchestrator
from orchestrator import (
    PipelineError,
    Runtime,
    Service,
    Step,
    Workflow,
)


class Custom(BaseException):
    """Not an Exception: step code may raise it all the same."""


def recurse(depth: int = 0) -> int:
    return recurse(depth + 1) + 1


def raise_recursion() -> None:
    recurse()


def raise_cancelled() -> None:
    raise asyncio.CancelledError("raised by the step itself")


RAISERS: dict[str, Callable[[], None]] = {
    "custom": lambda: (_ for _ in ()).throw(Custom("custom")),
    "keyboard": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
    "cancelled": raise_cancelled,
    "system_exit": lambda: sys.exit(3),
    "generator_exit": lambda: (_ for _ in ()).throw(GeneratorExit("closed")),
    "recursion": raise_recursion,
    "memory": lambda: (_ for _ in ()).throw(MemoryError("no memory")),
}
NAMES = {
    "custom": "Custom",
    "keyboard": "KeyboardInterrupt",
    "cancelled": "CancelledError",
    "system_exit": "SystemExit",
    "generator_exit": "GeneratorExit",
    "recursion": "RecursionError",
    "memory": "MemoryError",
}


def step_of(kind: str, raise_it: Callable[[], None]) -> Step:
    """A step of `kind` (thread, inline, async) that calls `raise_it`."""

    def sync_step(state: dict[str, Any]) -> dict[str, Any]:
        raise_it()
        return state

    async def async_step(state: dict[str, Any]) -> dict[str, Any]:
        raise_it()
        return state

    if kind == "async":
        return Step(async_step, name="boom")
    return Step(sync_step, name="boom", inline=kind == "inline")


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


def sync_inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


@pytest.mark.parametrize("kind", ["thread", "inline", "async"])
@pytest.mark.parametrize("raised", list(RAISERS))
async def test_anything_a_step_raises_fails_only_its_run(db: Path, kind: str, raised: str) -> None:
    async with Runtime(db) as rt:
        pipelines = {"boom": [step_of(kind, RAISERS[raised])], "ok": [inc, sync_inc]}
        await rt.register(Workflow(id="w", pipelines=pipelines))
        result = await rt.invoke("w", "boom", {"n": 0})
        assert (result.status, result.error_code) == ("failed", "STEP_FAILED")
        assert NAMES[raised] in (result.error or "") and "'boom'" in (result.error or "")
        assert result.state == {"n": 0}
        after = await rt.invoke("w", "ok", {"n": 0})
        assert after.ok and after.state == {"n": 2}
        info = await rt.watch("w", result.run_id)
        assert info is not None and info.status == "failed"


@pytest.mark.parametrize("kind", ["thread", "inline", "async"])
async def test_a_cancelled_error_of_its_own_under_a_timeout_is_a_failure(
    db: Path, kind: str
) -> None:
    bound = step_of(kind, raise_cancelled)
    timed = Step(bound.fn, name="boom", inline=bound.inline, timeout=30)
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [timed], "ok": [inc]}))
        result = await rt.invoke("w", "go", {})
        assert (result.status, result.error_code) == ("failed", "STEP_FAILED")
        assert "CancelledError" in (result.error or "")
        assert (await rt.invoke("w", "ok", {})).ok


@pytest.mark.parametrize("kind", ["thread", "inline", "async"])
async def test_retries_apply_to_a_base_exception(db: Path, kind: str) -> None:
    attempts: list[int] = []

    def first_fails() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise Custom("once")

    async with Runtime(db) as rt:
        bound = step_of(kind, first_fails)
        retried = Step(bound.fn, name="boom", inline=bound.inline, retries=1, backoff=0)
        await rt.register(Workflow(id="w", pipelines={"go": [retried]}))
        result = await rt.invoke("w", "go", {})
    assert result.ok and len(attempts) == 2


async def test_a_step_that_turns_an_abort_into_another_error_is_still_aborted(db: Path) -> None:
    started = asyncio.Event()

    async def stubborn(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [stubborn], "ok": [inc]}))
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await started.wait()
        [info] = await rt.list_runs(status="running")
        await rt.abort(info.run_id)
        result = await pending
        assert (result.status, result.error_code) == ("aborted", "ABORTED")
        assert (await rt.invoke("w", "ok", {})).ok


@pytest.mark.parametrize("raised", ["custom", "keyboard", "cancelled", "system_exit"])
async def test_a_hook_that_raises_anything_never_changes_the_run(db: Path, raised: str) -> None:
    def hook(*args: object) -> None:
        RAISERS[raised]()

    async with Runtime(db) as rt:
        await rt.register(
            Workflow(id="w", pipelines={"go": [inc]}),
            on_prepare=hook,
            on_complete=hook,
            on_cleanup=hook,
        )
        for _ in range(2):
            result = await rt.invoke("w", "go", {"n": 0})
            assert result.ok and result.state == {"n": 1}
        failures = [
            e for e in await rt.timeline(result.run_id) if "hook failed" in (e.message or "")
        ]
        assert failures and all(NAMES[raised] in (e.message or "") for e in failures)


@pytest.mark.parametrize("raised", ["custom", "keyboard", "cancelled"])
async def test_a_service_factory_that_raises_anything_fails_the_step(db: Path, raised: str) -> None:
    def factory(ctx: Any) -> object:
        RAISERS[raised]()
        return object()

    async def uses(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        await ctx.use("broken")
        return state

    async with Runtime(db) as rt:
        await rt.register(
            Workflow(
                id="w",
                pipelines={"go": [uses], "ok": [inc]},
                services=[Service("broken", factory, scope="run")],
            )
        )
        result = await rt.invoke("w", "go", {})
        assert (result.status, result.error_code) == ("failed", "STEP_FAILED")
        assert "'broken'" in (result.error or "") and NAMES[raised] in (result.error or "")
        assert (await rt.invoke("w", "ok", {})).ok


@pytest.mark.parametrize("kind", ["thread", "inline", "async"])
@pytest.mark.parametrize("raised", list(RAISERS))
async def test_the_pipeline_runner_turns_anything_into_a_pipeline_error(
    kind: str, raised: str
) -> None:
    with pytest.raises(PipelineError, match=NAMES[raised]):
        await orchestrator.run([step_of(kind, RAISERS[raised])], {})


# -- sync steps that overrun their timeout ----------------------------------------------


def overrunning_step() -> tuple[threading.Event, threading.Semaphore, Any]:
    """A sync step that holds its thread until `release` is set; `stuck` counts entries."""
    release = threading.Event()
    stuck = threading.Semaphore(0)

    def overrun(state: dict[str, Any]) -> dict[str, Any]:
        stuck.release()
        release.wait(60)
        return state

    return release, stuck, overrun


async def test_sync_steps_that_time_out_do_not_starve_the_others(db: Path) -> None:
    release, stuck, overrun = overrunning_step()
    try:
        async with Runtime(db, max_threads=32) as rt:
            await rt.register(
                Workflow(
                    id="w", pipelines={"slow": [Step(overrun, timeout=0.05)], "ok": [sync_inc]}
                )
            )
            results = await asyncio.gather(*(rt.invoke("w", "slow", {}) for _ in range(32)))
            assert {r.error_code for r in results} == {"STEP_TIMEOUT"}
            for _ in range(32):  # every thread of the pool is still stuck in its step
                assert await asyncio.to_thread(stuck.acquire, True, 10)
            result = await asyncio.wait_for(rt.invoke("w", "ok", {"n": 0}), 10)
            assert result.ok and result.state == {"n": 1}
    finally:
        release.set()


async def test_a_step_queued_behind_overrunning_steps_starts_once_they_time_out(
    db: Path,
) -> None:
    release, stuck, overrun = overrunning_step()
    try:
        async with Runtime(db, max_threads=2) as rt:
            await rt.register(
                Workflow(id="w", pipelines={"slow": [Step(overrun, timeout=0.5)], "ok": [sync_inc]})
            )
            slow = [asyncio.ensure_future(rt.invoke("w", "slow", {})) for _ in range(2)]
            for _ in range(2):
                assert await asyncio.to_thread(stuck.acquire, True, 10)
            # Both threads are busy: this step waits in the pool's queue, and starts once
            # they are abandoned, with no further step submitted to make room.
            result = await asyncio.wait_for(rt.invoke("w", "ok", {"n": 0}), 10)
            assert result.ok
            assert {(await run).error_code for run in slow} == {"STEP_TIMEOUT"}
    finally:
        release.set()


# -- the daemon -----------------------------------------------------------------------

FAULTY = """\
import asyncio

from orchestrator import Workflow


class Custom(BaseException):
    pass


async def custom(state):
    raise Custom("not an Exception")


def interrupt(state):
    raise KeyboardInterrupt


def cancel(state):
    raise asyncio.CancelledError("by the step")


def ok(state):
    return {**state, "ok": True}


workflow = Workflow(
    id="faulty",
    pipelines={"custom": [custom], "interrupt": [interrupt], "cancel": [cancel], "ok": [ok]},
)
"""


def test_the_daemon_survives_steps_that_raise_base_exceptions(tmp_path: Path) -> None:
    folder, db = tmp_path / "workflows", tmp_path / "journal.db"
    folder.mkdir()
    (folder / "faulty.py").write_text(textwrap.dedent(FAULTY))
    with Daemon(folder, db) as daemon:
        daemon.start()
        pid = daemon.pid
        for trigger, name in (("custom", "Custom"), ("interrupt", "KeyboardInterrupt")):
            for _ in range(2):
                out = cli("invoke", "faulty", trigger, "--wait", "--db", str(db))
                assert out.returncode == 1, out.stderr + daemon.log()
                assert name in out.stderr
                [(status, code)] = query(
                    db,
                    "SELECT status, error_code FROM runs WHERE run_id = ?",
                    (out.stdout.strip(),),
                )
                assert (status, code) == ("failed", "STEP_FAILED")
        out = cli("invoke", "faulty", "cancel", "--wait", "--db", str(db))
        assert out.returncode == 1 and "CancelledError" in out.stderr, out.stderr
        ok = cli("invoke", "faulty", "ok", "--wait", "--db", str(db))
        assert ok.returncode == 0, ok.stderr + daemon.log()
        assert daemon.proc is not None and daemon.proc.poll() is None and daemon.pid == pid
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()

"""Isolated steps in real worker processes: results, failures, crashes, logs, recycling.

The steps are top-level functions of this module: a worker imports them by module and name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator import Runtime, Workers, Workflow

_kept: list[bytearray] = []


def add(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state["n"] + 1, "pid": os.getpid()}


def double(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.log.info(f"doubling {state['n']}")
    return {**state, "n": state["n"] * 2}


def fails(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("no good")


def exits(state: dict[str, Any]) -> dict[str, Any]:
    os._exit(3)


def grows(state: dict[str, Any]) -> dict[str, Any]:
    _kept.append(bytearray(80 * 1024 * 1024))
    return {**state, "pid": os.getpid()}


WORKFLOW = Workflow(
    id="iso",
    pipelines={
        "ok": [add, double, add],
        "fails": [fails],
        "exits": [exits],
        "grows": [grows],
        "add": [add],
    },
)


def runtime(db: Path, **workers: Any) -> Runtime:
    return Runtime(db, workflows=[WORKFLOW], isolate=True, workers=Workers(max=2, **workers))


async def test_isolated_steps_run_in_a_worker_and_log(db: Path) -> None:
    async with runtime(db) as rt:
        first = await rt.invoke("iso", "ok", {"n": 1})
        again = await rt.invoke("iso", "ok", {"n": 1})  # the steps found again
    assert first.ok and first.state["n"] == 5 and again.state["n"] == 5
    assert first.state["pid"] != os.getpid()


async def test_a_raising_step_fails_and_a_dead_worker_crashes(db: Path) -> None:
    async with runtime(db) as rt:
        failed = await rt.invoke("iso", "fails", {"n": 1})
        crashed = await rt.invoke("iso", "exits", {"n": 1})
        after = await rt.invoke("iso", "add", {"n": 1})
    assert failed.error_code == "STEP_FAILED" and "no good" in (failed.error or "")
    assert crashed.error_code == "STEP_CRASHED" and "exited with code 3" in (crashed.error or "")
    assert after.ok


async def test_a_worker_that_grew_past_its_limit_is_replaced(db: Path) -> None:
    async with runtime(db, recycle_above_mb=64, warm=0) as rt:
        grown = await rt.invoke("iso", "grows", {"n": 1})
        after = await rt.invoke("iso", "add", {"n": 1})
    assert grown.ok and after.ok
    assert after.state["pid"] != grown.state["pid"]  # its reported RSS retired it

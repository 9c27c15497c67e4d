"""A worker process for the crash tests: ``python tests/crash_worker.py DB N [--slow]``.

It opens a `Runtime` on DB, registers a five-step workflow (four async steps and one sync
step that runs in a worker thread), starts one run per input ``{"i": k}`` for every k in
range(N) that has no run in the journal yet, waits for every unfinished run (new or
recovered) to end, and exits 0. The test SIGKILLs it at random instants and starts it
again; runs recovered from the journal continue by themselves once the workflow is
registered.

Each step appends ``run_id step_name`` to ``DB.effects`` (`procs.EffectLog`): the log is
the outside world, and shows how often each step really ran, even across SIGKILLs. Every
other input carries a large field, so its checkpoints are patches against a snapshot.

With ``--slow`` the thread step ``d`` sleeps for a minute, so the test can kill the
process while that step is mid-flight.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

import procs

from orchestrator import Runtime, StepContext, Workflow

STEP_NAMES = ("a", "b", "c", "d", "e")
FINAL = frozenset({"completed", "failed", "aborted", "dropped", "rejected"})
CONCURRENCY = 6  # new runs in flight at once, so the work spans several kill cycles
_effects: procs.EffectLog
_slow = False


def _effect(ctx: StepContext) -> None:
    _effects.record(ctx.run_id, ctx.step_name)


def _next(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "count": state.get("count", 0) + 1}


# Each step takes a random few milliseconds (the sleeps below), so the test's SIGKILLs land
# before, during and after steps and their checkpoints.


async def a(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _effect(ctx)
    await asyncio.sleep(random.uniform(0.01, 0.08))
    return _next(state)


async def b(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _effect(ctx)
    await asyncio.sleep(random.uniform(0.01, 0.08))
    return _next(state)


async def c(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _effect(ctx)
    await asyncio.sleep(random.uniform(0.01, 0.08))
    return _next(state)


def d(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _effect(ctx)
    time.sleep(60.0 if _slow else random.uniform(0.0, 0.01))
    return _next(state)


async def e(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _effect(ctx)
    await asyncio.sleep(random.uniform(0.01, 0.08))
    return _next(state)


WORKFLOW = Workflow(id="crashy", pipelines={"go": [a, b, c, d, e]})


async def main(db: str, n: int) -> None:
    # Kills land at random instants, so one step may be in flight at several of them;
    # the crash-loop guard is for steps that kill their process, not for this test.
    async with Runtime(db, shutdown_grace=1.0, max_recoveries=1000) as rt:
        await rt.register(WORKFLOW)
        known = await rt.list_all_runs()
        have = {run.state.get("i") for run in known}
        recovered = [run.run_id for run in known if run.status not in FINAL]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def start(k: int) -> None:
            async with gate:
                result = await rt.invoke("crashy", "go", procs.crash_input(k))
            if result.status != "completed":
                raise SystemExit(f"run for i={k} ended {result.status}: {result.error}")

        async with asyncio.TaskGroup() as tasks:
            for run_id in recovered:
                tasks.create_task(rt.wait(run_id))
            for k in range(n):
                if k not in have:
                    tasks.create_task(start(k))


if __name__ == "__main__":
    db_path, count = sys.argv[1], int(sys.argv[2])
    _slow = "--slow" in sys.argv[3:]
    _effects = procs.EffectLog(db_path)
    asyncio.run(main(db_path, count))

"""A worker whose steps kill its process: ``python tests/crash_loop_worker.py DB [JSON]``.

It opens an embedded `Runtime` (steps not isolated) on DB with the workflow ``looping``:
steps ``boom`` and ``after``, each a sync step in a worker thread that appends
``run_id step`` to ``DB.effects`` (`procs.EffectLog`) once its run is journaled, then calls
``os._exit(1)`` while it has started no more than ``state["crash"][step]`` times (counted in
that log). With JSON and no run in the journal yet, it invokes one run with JSON as its
input; otherwise it waits for every unfinished run (recovered ones continue by themselves)
and exits 0. With ``--register-later`` it registers the workflow after the runtime has
started instead of passing it to `Runtime`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import procs

from orchestrator import Runtime, StepContext, Workflow
from orchestrator.testing import eventually_blocking

FINAL = frozenset({"completed", "failed", "aborted", "dropped", "rejected"})
_db = ""


def _crashing(name: str) -> Any:
    def step(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        # A new run's row commits with the writer's next batch, pipelined with its first
        # step: wait for it, or a crash would leave no run to recover.
        eventually_blocking(lambda: _journaled(ctx.run_id), what="the run to be journaled")
        procs.EffectLog(_db).record(ctx.run_id, name)
        starts = procs.effects(Path(_db))[(ctx.run_id, name)]
        if starts <= state.get("crash", {}).get(name, 0):
            os._exit(1)
        return {**state, "done": [*state.get("done", []), name]}

    step.__name__ = name
    return step


def _journaled(run_id: str) -> bool:
    return bool(procs.query(Path(_db), "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))


WORKFLOW = Workflow(id="looping", pipelines={"go": [_crashing("boom"), _crashing("after")]})


async def main(data: dict[str, Any] | None, register_later: bool) -> None:
    workflows = [] if register_later else [WORKFLOW]
    async with Runtime(_db, workflows=workflows, shutdown_grace=1.0) as rt:
        if register_later:
            await rt.register(WORKFLOW)
        known = await rt.list_all_runs()
        if data is not None and not known:
            await rt.invoke("looping", "go", data)
            return
        for run in known:
            if run.status not in FINAL:
                await rt.wait(run.run_id, timeout=60)


if __name__ == "__main__":
    _db = sys.argv[1]
    args = [arg for arg in sys.argv[2:] if not arg.startswith("--")]
    asyncio.run(main(json.loads(args[0]) if args else None, "--register-later" in sys.argv))

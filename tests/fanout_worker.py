"""A worker process for the fan-out crash test: ``python tests/fanout_worker.py DB N``.

It opens a `Runtime` on DB with the workflows of `fanout_steps`, invokes the parent with
N children unless the journal has a parent run already, and exits 0 once that parent run
has completed. Kill markers beside DB (``DB.kill-split``, ``DB.kill-child``) make the
first attempt SIGKILL itself: in the parent's step before its checkpoint, or in the first
child (after the parent's checkpoint and its outbox committed).
"""

from __future__ import annotations

import asyncio
import sys

import fanout_steps
import procs

from orchestrator import Runtime
from orchestrator.testing import eventually


async def main(db: str, count: int, where: str) -> None:
    async with Runtime(db, workflows=fanout_steps.workflows(concurrency=4)) as rt:
        procs.announce_ready(db)
        runs = await rt.list_runs(workflow="parent")
        if runs:
            run_id = runs[0].run_id
        else:
            state = {"count": count, f"kill_{where}": f"{db}.kill-{where}"}
            run_id = (await rt.invoke("parent", "go", state)).run_id

        async def completed() -> bool:
            info = await rt.watch("parent", run_id)
            return info is not None and info.status == "completed"

        await eventually(completed, what="the parent run completes", timeout=60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))

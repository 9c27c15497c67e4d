"""CPU-heavy isolated steps on one PostgreSQL journal: one daemon, then standbys running steps.

Prints figures; it is not a test. Run: ``python bench/bench_pg_steps.py [--quick]``.

A workflow of one sync step that spends about `STEP_MS` of CPU in pure Python (isolated:
it runs in a worker process). The active daemon is a `Runtime` of this process with one
worker; N runs are invoked at once and timed to their last completion:

- **1 daemon**: the active daemon alone, its one worker running every step;
- **+ K standbys**: the same, with K ``orchestrator up --workers 1`` standbys on the journal;
  the active daemon keeps one step in its own worker and offers the others, which the
  standbys claim and run (`engine/workers/spread.py`, `serve.py`).

Every daemon here shares this machine's cores (2 on the machine these figures come from),
so K standbys add at most the cores left idle: the figure to read is how far the runs/s
move towards (K + 1) x one daemon's while cores remain, and what offering a step costs.
Also printed: the steps offered, and the median seconds from invoke to completion.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from common import fresh_dir, machine_line
from pg_daemons import Up, until_async

from orchestrator import Runtime, Workers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres import start_cluster  # the suite's throwaway server

STEP_MS = 50  # CPU per step, about

FLOW = f'''\
"""One CPU-heavy step."""

import os
import time

from orchestrator import Workflow


def crunch(state):
    end = time.process_time() + {STEP_MS} / 1000
    total = 0
    while time.process_time() < end:
        total += sum(range(1000))
    return {{**state, "total": total, "daemon": os.getppid()}}


workflow = Workflow(id="crunch", pipelines={{"go": [crunch]}})
'''


async def measure(
    url: str, folder: Path, runs: int, standbys: int
) -> tuple[float, float, int, list[int]]:
    """Runs/s, median s per run, steps offered, steps per daemon: the active one first."""
    async with Runtime(url, workflows_dir=folder, isolate=True, workers=Workers(max=1)) as rt:
        logs = [folder.parent / f"standby-{standbys}-{i}.log" for i in range(standbys)]
        ups = [Up(folder, url, log, "--workers", "1") for log in logs]
        try:
            if ups:
                await until_async(lambda: all(up.standby() for up in ups), "the standbys", ups)
                spread = rt._control.env.workers  # type: ignore[union-attr]  # figures only
                await until_async(lambda: spread.servers == standbys, "standbys counted", ups)
            await asyncio.gather(*(rt.invoke("crunch", "go", {"n": -i}) for i in range(4)))
            offered_before = getattr(rt._control.env.workers, "offered", 0)  # type: ignore[union-attr]
            times: list[float] = []
            ran_on: dict[int, int] = {}

            async def one(n: int) -> None:
                began = time.perf_counter()
                result = await rt.invoke("crunch", "go", {"n": n})
                assert result.ok, result.error
                times.append(time.perf_counter() - began)
                daemon = int(result.state["daemon"])
                ran_on[daemon] = ran_on.get(daemon, 0) + 1

            start = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(runs)))
            elapsed = time.perf_counter() - start
            offered = getattr(rt._control.env.workers, "offered", 0) - offered_before  # type: ignore[union-attr]
        finally:
            for up in ups:
                up.stop()
    per_daemon = [ran_on.get(pid, 0) for pid in [os.getpid(), *(up.pid for up in ups)]]
    return runs / elapsed, statistics.median(times), offered, per_daemon


async def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    runs = 40 if quick else 200
    print(machine_line())
    print(f"{runs} runs of one isolated step of about {STEP_MS} ms of CPU, all invoked at once")
    cluster = start_cluster(durable=True)
    try:
        for standbys in (0, 1, 2):
            with fresh_dir() as tmp:
                url = cluster.create_database(f"steps{standbys}_{os.getpid()}")
                folder = tmp / "flows"
                folder.mkdir()
                (folder / "crunch.py").write_text(FLOW)
                rate, median, offered, per_daemon = await measure(url, folder, runs, standbys)
                label = "1 daemon" if not standbys else f"+ {standbys} standbys"
                print(
                    f"{label:<14} {rate:7.1f} runs/s   median {median:6.2f} s per run   "
                    f"steps offered {offered}, run by each daemon {per_daemon}"
                )
    finally:
        cluster.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

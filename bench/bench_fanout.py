"""Fan-out: one run starts N children with trivial steps and joins them.

Prints figures; it is not a test. Run: ``python bench/bench_fanout.py [--quick]``.
For each N (10,000; 1,000 with ``--quick``), on a fresh journal: the time from `invoke` of
the parent until every child is final and the parent has joined them and completed; child
runs per second over that time; journal bytes per child (the file after a checkpoint of
its WAL, less the same journal with no fan-out); and the join latency: from the last
child's end (as journaled) to the parent's ``run.resumed``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from common import fmt, fresh_dir, machine_line, parse_args

from orchestrator import Runtime, Step, StepContext, Workflow

State = dict[str, Any]


def fan(state: State, ctx: StepContext) -> Any:
    ids = [ctx.start("child", "one", {"i": i}) for i in range(state["count"])]
    return ctx.join(ids, into="results")


def count(state: State) -> State:
    return {"completed": sum(r["status"] == "completed" for r in state["results"])}


async def one(state: State) -> State:
    return {"i": state["i"], "done": True}


WORKFLOWS = [
    Workflow(id="parent", pipelines={"go": [Step(fan, inline=True), Step(count, inline=True)]}),
    Workflow(id="child", pipelines={"one": [one]}),
]


def journal_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * size)
    finally:
        conn.close()


def join_latency_ms(db: Path, parent: str) -> float:
    conn = sqlite3.connect(db)
    try:
        last_end = conn.execute(
            "SELECT max(r.updated_at) FROM runs r JOIN children c ON c.child = r.run_id"
            " WHERE c.parent = ?",
            (parent,),
        ).fetchone()[0]
        resumed = conn.execute(
            "SELECT t.at FROM timeline t JOIN runs r ON r.id = t.run"
            " WHERE r.run_id = ? AND t.kind = 'run.resumed'",
            (parent,),
        ).fetchone()[0]
        return float(resumed - last_end) / 1000
    finally:
        conn.close()


async def measure(n: int) -> dict[str, float]:
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        async with Runtime(db, workflows=WORKFLOWS) as rt:
            await rt.invoke("parent", "go", {"count": 0})
            await rt.idle()
        base = journal_bytes(db)
        async with Runtime(db, workflows=WORKFLOWS) as rt:
            start = time.perf_counter()
            parent = (await rt.invoke("parent", "go", {"count": n})).run_id
            while True:
                info = await rt.watch("parent", parent)
                if info is not None and info.status in ("completed", "failed"):
                    break
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
            assert info.state == {"completed": n}, info
        return {
            "seconds": elapsed,
            "runs_per_s": n / elapsed,
            "bytes_per_child": (journal_bytes(db) - base) / n,
            "join_ms": join_latency_ms(db, parent),
        }


def main(argv: list[str]) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    sizes = [1_000] if args.quick else [1_000, 10_000]
    print(machine_line())
    print(f"{'children':>9}  {'total s':>8}  {'runs/s':>7}  {'bytes/child':>11}  {'join ms':>8}")
    for n in sizes:
        row = asyncio.run(measure(n))
        print(
            f"{n:>9,}  {row['seconds']:>8.2f}  {fmt(row['runs_per_s']):>7}"
            f"  {fmt(row['bytes_per_child']):>11}  {row['join_ms']:>8.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

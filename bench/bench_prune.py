"""Pruning a big journal while a runtime keeps running runs on it.

A journal is filled with N completed runs (3 steps each, ~1 KB of state: 4 checkpoints a
run). Then a runtime (default durability) runs a workflow in a loop, one run at a time,
and `orchestrator prune --older-than 0` runs beside it in a subprocess. Printed:

- **prune**: wall seconds of the CLI, rows deleted (all tables) and rows/s;
- **runs/s** of the runtime before and during the prune;
- **longest run** (ms, one invoke to completed) before and during: the longest a prune
  transaction made the runtime's writer wait shows here;
- the **file size** before and after (the prune gives pages back: incremental vacuum).

Run: ``python bench/bench_prune.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from common import fresh_dir, machine_line, parse_args, percentile

from orchestrator import Runtime, Workflow


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


FLOW = Workflow(id="w", pipelines={"go": [inc, inc, inc]})
PAD = "x" * 1000


async def fill(db: Path, n: int) -> None:
    async with Runtime(db, workflows=[FLOW], synchronous="NORMAL") as rt:
        for start in range(0, n, 200):
            batch = [rt.invoke("w", "go", {"pad": PAD}) for _ in range(min(200, n - start))]
            await asyncio.gather(*batch)


def size_mb(db: Path) -> float:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.stat().st_size / 1e6


async def load(rt: Runtime, stop: asyncio.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        result = await rt.invoke("w", "go", {"pad": "y"})
        assert result.ok
        latencies.append(time.perf_counter() - started)


async def measure(db: Path, baseline_s: float) -> dict[str, Any]:
    async with Runtime(db, workflows=[FLOW]) as rt:
        before: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(load(rt, stop, before))
        await asyncio.sleep(baseline_s)
        stop.set()
        await task
        during: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(load(rt, stop, during))
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator",
            "prune",
            "--db",
            str(db),
            "--older-than",
            "0",
            "--json",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        wall = time.perf_counter() - started
        stop.set()
        await task
    return {
        "report": json.loads(out),
        "wall": wall,
        "before": before,
        "during": during,
        "baseline_s": baseline_s,
    }


def main(argv: list[str]) -> None:
    args = parse_args(__doc__ or "", argv)
    n = 2_000 if args.quick else 20_000
    print(machine_line())
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        t0 = time.perf_counter()
        asyncio.run(fill(db, n))
        print(f"filled {n:,} completed runs in {time.perf_counter() - t0:.1f} s")
        big = size_mb(db)
        got = asyncio.run(measure(db, 1.0 if args.quick else 3.0))
        small = size_mb(db)
    report, wall = got["report"], got["wall"]
    rows = sum(v for k, v in report.items() if k not in ("dry_run", "pages_freed"))
    before, during = got["before"], got["during"]
    print(
        f"prune: {report['runs']:,} runs, {rows:,} rows in {wall:.2f} s "
        f"= {rows / wall:,.0f} rows/s ({report['runs'] / wall:,.0f} runs/s), "
        f"{report.get('pages_freed', 0):,} pages freed"
    )
    print(
        f"runtime: {len(before) / got['baseline_s']:,.0f} runs/s before, "
        f"{len(during) / wall:,.0f} runs/s during the prune"
    )
    print(
        f"longest run: {max(before) * 1e3:.1f} ms before (p99 {percentile(before, 99) * 1e3:.1f}),"
        f" {max(during) * 1e3:.1f} ms during (p99 {percentile(during, 99) * 1e3:.1f})"
    )
    print(f"file: {big:.1f} MB before, {small:.1f} MB after")


if __name__ == "__main__":
    main(sys.argv[1:])

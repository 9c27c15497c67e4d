"""Dispatch decisions per second under each execution mode, with the workflow busy.

Prints figures; it is not a test. Run: ``python bench/bench_modes.py [--quick]``.

Each measurement opens a fresh journal, registers one workflow with a `Trigger(event="job")`
under the mode measured, and starts one run that holds the slot: its only step blocks on an
`asyncio.Event` until the end. N events ``job`` are then emitted while the slot is held, so
every one of them is a decision other than ``start``: queued, dropped, signalled, rejected, or
queued superseding the previous pending run. `emit` returns once the event and every write
its routing enqueued (the new run's row and its decision, or the signal) have committed, so
N emits over the time they took is decisions per second, each timed to its commit. At the
end the holder is released when nothing is queued; with runs queued it is left blocked and
cancelled by `stop` (see `measure`), and the queued runs stay queued.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import default_synchronous, fmt, fresh_dir, machine_line, parse_args

from orchestrator import Runtime, Trigger, Workflow
from orchestrator.define.modes import Exclusive, Mode, Serialized, SingletonLoop, Transient

CHUNK = 1_000  # emits per timed chunk; also the size of each concurrent gather batch
FULL, QUICK = 10_000, 1_000

MODES: dict[str, Mode] = {
    "Transient(concurrency=1) queue": Transient(concurrency=1, capacity=None),
    "Serialized() queue": Serialized(),
    "SingletonLoop(drop)": SingletonLoop(on_busy="drop"),
    "SingletonLoop(signal)": SingletonLoop(on_busy="signal"),
    "Exclusive(reject)": Exclusive(on_busy="reject"),
    "Exclusive(queue_single)": Exclusive(on_busy="queue_single"),
}


@dataclass
class Result:
    rate: float  # decisions/s over all N
    first: float  # decisions/s over the first CHUNK
    last: float  # decisions/s over the last CHUNK
    statuses: Counter[str]  # runs by status, read from the journal while the slot is held
    timeline: Counter[str]  # decision entries in the timeline (run.queued, run.signalled, ...)


def journal_counts(db: Path) -> tuple[Counter[str], Counter[str]]:
    """Runs by status and decision timeline entries by kind (a plain reader, WAL)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        statuses = Counter(
            dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        )
        kinds = Counter(
            dict(
                conn.execute(
                    "SELECT kind, count(*) FROM timeline WHERE kind IN "
                    "('run.queued', 'run.dropped', 'run.rejected', 'run.signalled') GROUP BY kind"
                ).fetchall()
            )
        )
    finally:
        conn.close()
    return statuses, kinds


async def measure(mode: Mode, n: int, concurrent: bool) -> Result:
    release = asyncio.Event()

    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return state

    workflow = Workflow(
        id="modes",
        pipelines={"job": [hold]},
        triggers={"job": Trigger(event="job")},
        mode=mode,
    )
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        rt = Runtime(db, workflows=[workflow], shutdown_grace=0.1)
        async with rt:
            await rt.emit("job", {"i": -1})  # this run starts and holds the slot
            chunks: list[float] = []
            start = time.perf_counter()
            for base in range(0, n, CHUNK):
                size = min(CHUNK, n - base)
                began = time.perf_counter()
                if concurrent:
                    await asyncio.gather(*(rt.emit("job", {"i": base + k}) for k in range(size)))
                else:
                    for k in range(size):
                        await rt.emit("job", {"i": base + k})
                chunks.append(size / (time.perf_counter() - began))
            rate = n / (time.perf_counter() - start)
            statuses, kinds = journal_counts(db)
            release.set()  # the holder ends during stop; queued runs stay queued
        return Result(rate, chunks[0], chunks[-1], statuses, kinds)


def counts_text(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in sorted(counter.items()))


async def main(argv: list[str]) -> None:
    args = parse_args("Dispatch decisions per second under each execution mode.", argv)
    n = QUICK if args.quick else FULL
    print(machine_line())
    print(
        f"synchronous={default_synchronous()} (the Runtime default), WAL; {n:,} dispatches "
        f"per measurement{' (--quick)' if args.quick else ''}, each `await rt.emit('job')` to "
        "a Trigger while one run holds the slot; a fresh journal per measurement"
    )
    print(
        f"  sequential = one emit at a time; concurrent = asyncio.gather of batches of "
        f"{CHUNK:,} emits; first/last = the first and last {CHUNK:,} dispatches"
    )
    print()
    header = (
        f"{'mode':32}{'emits':>11}{'decisions/s':>13}{'first 1k/s':>12}{'last 1k/s':>11}"
        "  journal while held (runs by status; decision timeline entries)"
    )
    print(header)
    for label, mode in MODES.items():
        for concurrent in (False, True):
            result = await measure(mode, n, concurrent)
            print(
                f"{label:32}{'concurrent' if concurrent else 'sequential':>11}"
                f"{fmt(result.rate):>13}{fmt(result.first):>12}{fmt(result.last):>11}"
                f"  {counts_text(result.statuses)}; {counts_text(result.timeline) or '-'}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

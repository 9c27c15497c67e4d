"""Durable 3-step runs against the raw ceiling: our writer's own statements in plain sqlite3.

Prints figures; it is not a test. Run: ``python bench/bench_throughput.py [--quick]
[--repeat R] [--gc default|daemon]``. Each measurement runs in a fresh process of its own
(``--child``) on a fresh journal, so one measurement's garbage, heap and peak RSS never
reach the next; the parent prints the medians of R repetitions (3 by default), and each
ours/raw ratio is taken inside one repetition (ours and raw back to back) before its median.

- **ours**: a `Runtime` at its defaults (``synchronous="FULL"``, WAL), one workflow whose
  pipeline is three async steps ``{**state, "n": state["n"] + 1}``; ``await invoke`` one
  run after the other (sequential), or N invokes gathered at once (N in flight).
- **raw**: the statements our writer committed for one such run (recorded from a real
  runtime), with fresh row and run ids for each run, replayed through plain `sqlite3` on a
  journal of the same schema, WAL, ``synchronous=FULL``, grouped and run as the writer
  runs a batch (`writer.execute_rows`: a statement's many rows as one bulk statement,
  else ``executemany``): sequential, one transaction per run (a run is acknowledged once
  committed); N in flight, one transaction per 1,000 runs. **raw1**: the
  same transactions, each statement run on its own (``execute`` per op, in op order), a
  lower ceiling that does not group.
- **CPU µs/run**: `time.process_time` (every thread of the process) over the timed part,
  per run; **loop µs/run**: `time.thread_time` of the event loop's thread; **GC µs/run**
  and **GC share**: the time between the garbage collector's start and stop callbacks
  (`gc.callbacks`), in CPU time of the collecting thread, per run and as a share of the
  CPU time; **peak RSS**: the child
  process's ``ru_maxrss``.
- ``--gc daemon`` runs ours under the garbage-collector policy that ``orchestrator up``
  sets for its own process (`orchestrator.cli.daemon.tune_process`: its garbage collector
  and the interpreter's thread switch interval); the default is the
  interpreter's, which is what a program embedding a `Runtime` keeps.
- ``--phases``: where one sequential run's time goes (median µs between its moments, from
  `invoke` called to `invoke` returned: the run's first op enqueued, its end enqueued (the
  urgent write), the writer thread beginning the batch's transaction, COMMIT returned,
  the event loop told (`_settle`), and the commits per run); one child, daemon policy.
- **sync-step overhead**: `bench_isolation.py`'s first figure (``step.started`` to
  ``step.completed`` of a trivial step, p50/p99 µs, at ``synchronous="NORMAL"``) for
  async, threaded and isolated steps.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import fmt, fresh_dir, machine_line

from orchestrator import Runtime, Workflow
from orchestrator.clock import new_id
from orchestrator.journal.ops import Op, Stmt, grouped
from orchestrator.journal.sqlite import writer as sqlite_writer
from orchestrator.journal.sqlite.deltas import Deltas
from orchestrator.journal.sqlite.statements import SQL

State = dict[str, int]
RAW_RUNS_PER_COMMIT = 1_000
WARMUP = 50
FULL = {"sequential": 2_000, "in_flight": (1_000, 10_000, 100_000), "overhead_runs": 300}
QUICK = {"sequential": 200, "in_flight": (100, 1_000), "overhead_runs": 50}


async def inc(state: State) -> State:
    return {**state, "n": state["n"] + 1}


def workflow() -> Workflow:
    return Workflow(id="bench", pipelines={"three": [inc, inc, inc]})


async def invoke(rt: Runtime) -> State:
    result = await rt.invoke("bench", "three", {"n": 0})
    if not result.ok or result.state.get("n") != 3:
        raise RuntimeError(f"run {result.run_id} ended {result.status}: {result.state}")
    return result.state


# -- measuring inside a child --------------------------------------------------------------


class Meter:
    """Wall, process CPU, loop-thread CPU and GC time over a `with` block."""

    def __init__(self) -> None:
        self.gc_seconds = 0.0
        self._gc_began = 0.0
        self.figures: dict[str, float] = {}

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        # CPU time of the collecting thread: robust to other work on the machine.
        if phase == "start":
            self._gc_began = time.thread_time()
        else:
            self.gc_seconds += time.thread_time() - self._gc_began

    @contextmanager
    def measure(self, runs: int) -> Iterator[None]:
        gc.callbacks.append(self._on_gc)
        wall, cpu, loop = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            yield
        finally:
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            loop = time.thread_time() - loop
            gc.callbacks.remove(self._on_gc)
        self.figures = {
            "rate": runs / wall,
            "cpu_us": cpu / runs * 1e6,
            "loop_us": loop / runs * 1e6,
            "gc_us": self.gc_seconds / runs * 1e6,
            "gc_share": self.gc_seconds / cpu if cpu else 0.0,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


async def ours(n: int, sequential: int, gc_policy: str) -> dict[str, float]:
    if gc_policy == "daemon":
        from orchestrator.cli.daemon import tune_process

        tune_process()
    meter = Meter()
    with fresh_dir() as tmp:
        async with Runtime(tmp / "journal.db", workflows=[workflow()]) as rt:
            await asyncio.gather(*(invoke(rt) for _ in range(WARMUP)))
            runs = n or sequential
            with meter.measure(runs):
                if n:
                    await asyncio.gather(*(invoke(rt) for _ in range(n)))
                else:
                    for _ in range(sequential):
                        await invoke(rt)
    return meter.figures


async def one_run_ops(db: Path) -> tuple[list[Op], int, str]:
    """The ops our writer committed for one run (after registration), its row and run id."""
    batches: list[list[Op]] = []
    apply = sqlite_writer.GroupCommitWriter._apply

    def recording(self: sqlite_writer.GroupCommitWriter, ops: sqlite_writer.Rows) -> None:
        batches.append([(stmt, params) for stmt, rows in ops.items() for params in rows])
        apply(self, ops)

    sqlite_writer.GroupCommitWriter._apply = recording  # type: ignore[method-assign]
    try:
        async with Runtime(db, workflows=[workflow()]) as rt:
            await invoke(rt)  # a first run: lazy imports and caches
            batches.clear()
            result = await rt.invoke("bench", "three", {"n": 0})
    finally:
        sqlite_writer.GroupCommitWriter._apply = apply  # type: ignore[method-assign]
    row = (
        sqlite3.connect(db)
        .execute("SELECT id FROM runs WHERE run_id = ?", (result.run_id,))
        .fetchone()[0]
    )
    return [op for batch in batches for op in batch], int(row), result.run_id


def renamed(ops: list[Op], row: int, run_id: str, new_row: int, new_run_id: str) -> list[Op]:
    def swap(value: Any) -> Any:
        if value == row and isinstance(value, int):
            return new_row
        return new_run_id if value == run_id else value

    return [(stmt, tuple(swap(value) for value in params)) for stmt, params in ops]


def as_written(ops: list[Op]) -> list[Op]:
    """Checkpoint rows as the writer writes them: a small state is whole (``base`` NULL)."""
    rows = [params for stmt, params in ops if stmt is Stmt.INSERT_CHECKPOINT]
    written, spilled = Deltas().encode(rows)
    if spilled or any(row[-1] is not None for row in written):
        raise RuntimeError("the bench's state is small: every checkpoint should be whole")
    whole = iter(written)
    return [
        (stmt, next(whole) if stmt is Stmt.INSERT_CHECKPOINT else params) for stmt, params in ops
    ]


def raw(n: int, sequential: int, *, one_by_one: bool = False) -> dict[str, float]:
    runs = n or sequential
    meter = Meter()
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        template, row, run_id = asyncio.run(one_run_ops(db))
        template = as_written(template)
        first = row + 1
        per_run = [renamed(template, row, run_id, first + i, new_id()) for i in range(runs)]
        size = 1 if not n else RAW_RUNS_PER_COMMIT
        chunks = [[op for ops in per_run[i : i + size] for op in ops] for i in range(0, runs, size)]
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        try:
            with meter.measure(runs):
                for chunk in chunks:
                    conn.execute("BEGIN IMMEDIATE")
                    if one_by_one:
                        for stmt, params in chunk:
                            conn.execute(SQL[stmt], params)
                    else:
                        for stmt, rows in grouped(chunk):
                            sqlite_writer.execute_rows(conn, stmt, rows)
                    conn.execute("COMMIT")
        finally:
            conn.close()
    return meter.figures


# The moments of one sequential run, in order (see `phases`).
MOMENTS = (
    "invoke called",
    "first op enqueued",
    "end enqueued",
    "commit began",
    "commit returned",
    "loop told",
    "invoke returned",
)


async def phases(runs: int) -> dict[str, float]:
    """Median µs between consecutive `MOMENTS` of sequential runs, and commits per run."""
    from orchestrator.cli.daemon import tune_process

    tune_process()
    writer_class = sqlite_writer.GroupCommitWriter
    enqueue, apply, settle = writer_class.enqueue, writer_class._apply, writer_class._settle
    marks: dict[str, float] = {}

    def mark(moment: str) -> None:
        marks.setdefault(moment, time.perf_counter())

    def enqueue_marked(self: Any, ops: Any, *, urgent: bool = False) -> Any:
        mark("end enqueued" if urgent else "first op enqueued")
        return enqueue(self, ops, urgent=urgent)

    def apply_marked(self: Any, ops: sqlite_writer.Rows) -> None:
        mark("commit began")
        apply(self, ops)
        mark("commit returned")

    def settle_marked(self: Any, batch: Any, error: Any) -> None:
        mark("loop told")
        settle(self, batch, error)

    writer_class.enqueue = enqueue_marked  # type: ignore[method-assign]
    writer_class._apply = apply_marked  # type: ignore[method-assign]
    writer_class._settle = settle_marked  # type: ignore[method-assign]
    samples: list[dict[str, float]] = []
    with fresh_dir() as tmp:
        async with Runtime(tmp / "journal.db", workflows=[workflow()]) as rt:
            for _ in range(WARMUP):
                await invoke(rt)
            commits = rt._writer.commits  # type: ignore[attr-defined]
            for _ in range(runs):
                marks.clear()
                mark("invoke called")
                await invoke(rt)
                mark("invoke returned")
                samples.append(dict(marks))
            commits = rt._writer.commits - commits  # type: ignore[attr-defined]
    figures = {"commits per run": commits / runs}
    for before, after in itertools.pairwise(MOMENTS):
        gaps = [(m[after] - m[before]) * 1e6 for m in samples if before in m and after in m]
        figures[f"{before} -> {after}"] = median(gaps) if gaps else float("nan")
    figures["total"] = median([(m["invoke returned"] - m["invoke called"]) * 1e6 for m in samples])
    return figures


def print_phases(runs: int) -> None:
    command = [sys.executable, __file__, "--child", "phases", "0", "--sequential", str(runs)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print()
    print(f"one sequential run, step by step ({runs:,} runs, median µs; daemon policy):")
    for name, value in figures.items():
        digits = 2 if name == "commits per run" else 1
        print(f"  {name:40}{value:>9.{digits}f}")


def child(args: argparse.Namespace) -> None:
    kind, n = args.child
    if kind == "phases":
        figures = asyncio.run(phases(args.sequential))
    elif kind == "ours":
        figures = asyncio.run(ours(int(n), args.sequential, args.gc))
    else:
        figures = raw(int(n), args.sequential, one_by_one=kind == "raw1")
    print(json.dumps(figures))


# -- the parent ----------------------------------------------------------------------------


def spawn(kind: str, n: int, sequential: int, gc_policy: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, str(n)]
    command += ["--sequential", str(sequential), "--gc", gc_policy]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_runs(counts: dict[str, Any], repeat: int, gc_policy: str) -> None:
    configs = counts.get("only") or [0, *counts["in_flight"]]
    head = (
        f"{'':22}{'ours/s':>9}{'raw/s':>9}{'ours/raw':>10}{'CPU µs':>8}{'loop µs':>9}"
        f"{'GC µs':>7}{'GC %':>6}{'RSS MB':>8}{'raw CPU':>9}{'raw1/s':>9}{'ours/raw1':>11}"
    )
    print(head)
    for n in configs:
        reps: list[tuple[dict[str, float], dict[str, float], dict[str, float]]] = []
        for _ in range(repeat):
            theirs = spawn("raw", n, counts["sequential"], gc_policy)
            mine = spawn("ours", n, counts["sequential"], gc_policy)
            each = spawn("raw1", n, counts["sequential"], gc_policy)
            reps.append((mine, theirs, each))

        def med(side: int, key: str, reps: list[Any] = reps) -> float:
            return median([rep[side][key] for rep in reps])

        label = f"sequential ({counts['sequential']:,})" if not n else f"{n:,} in flight"
        print(
            f"{label:22}{fmt(med(0, 'rate')):>9}{fmt(med(1, 'rate')):>9}"
            f"{median([m['rate'] / t['rate'] for m, t, _ in reps]):>10.2f}"
            f"{fmt(med(0, 'cpu_us')):>8}{fmt(med(0, 'loop_us')):>9}{fmt(med(0, 'gc_us')):>7}"
            f"{med(0, 'gc_share') * 100:>6.0f}{fmt(med(0, 'rss_mb')):>8}"
            f"{fmt(med(1, 'cpu_us')):>9}{fmt(med(2, 'rate')):>9}"
            f"{median([m['rate'] / e['rate'] for m, _, e in reps]):>11.2f}",
            flush=True,
        )


def print_overhead(runs: int) -> None:
    from bench_isolation import REPEAT, Counts, overhead

    counts = Counts(runs, 0, (), (0, 0))
    print()
    print(
        f"step overhead, step.started -> step.completed of a trivial step "
        f"(median of {REPEAT}, synchronous=NORMAL):"
    )
    print(f"{'':10}{'p50 µs':>9}{'p99 µs':>9}")
    for kind in ("async", "thread", "isolated"):
        figures = asyncio.run(overhead(kind, counts))
        print(f"{kind:10}{fmt(figures.p50, 1):>9}{fmt(figures.p99, 1):>9}", flush=True)


def load_line(when: str) -> str:
    one, five, _ = os.getloadavg()
    return f"load average {when}: {one:.2f} (1 min), {five:.2f} (5 min)"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Durable runs: ours against the raw ceiling.")
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--gc", choices=("default", "daemon"), default="default")
    parser.add_argument("--no-overhead", action="store_true", help="skip the step overhead")
    parser.add_argument("--phases", action="store_true", help="a sequential run, step by step")
    parser.add_argument("--only", type=int, action="append", help="just these N (0: sequential)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--sequential", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    counts: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.only:
        counts["only"] = args.only
    print(machine_line())
    print(
        f"3-step async runs, synchronous=FULL, WAL; median of {args.repeat}; "
        f"GC policy of ours: {args.gc}"
    )
    print(load_line("at the start"))
    print_runs(counts, args.repeat, args.gc)
    if args.phases:
        print_phases(counts["sequential"])
    if not args.no_overhead:
        print_overhead(counts["overhead_runs"])
    print(load_line("at the end"))


if __name__ == "__main__":
    main(sys.argv[1:])

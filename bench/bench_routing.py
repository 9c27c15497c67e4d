"""Routing as workflows multiply: 1 to 1,000 workflows sharing event types.

Prints figures; it is not a test. Run: ``python bench/bench_routing.py [--quick] [--daemon]``
(``--counts 1,10,100,1000`` to choose, ``--repeat 3``: each figure is the median of the
repetitions, and each ratio the median of the ratios within each repetition).

The scenario (the realistic one): N workflows, one per tenant, each with two event triggers
on the same two event types, filtered by tenant:

- ``created``: ``Trigger(event="order.created", where={"tenant": ("==", k)})``;
- ``paid``: ``Trigger(event="order.paid", where={"tenant": ("==", k), "amount": (">", 0)})``.

Each emitted ``order.created`` names one tenant (in turn), so every event starts exactly one
run (one async step) whatever N is: what grows with N is only what routing must look past.
When all N triggers genuinely match an event, N runs start and the cost is inherent; that
case is not measured here.

For each N, on a fresh journal in one process (``Runtime(db, workflows=[...])``, default
durability: WAL, ``synchronous=FULL``):

- **ready**: entering ``Runtime(...)`` until it returns (journal opened, recovery, the N
  workflows registered and committed, routing armed, the lease marked ready); **restart**:
  the same on the journal left by the measurements below (their runs in it).
- **emit->start p50/p99**: sequential emits, each from calling ``rt.emit`` until both the
  emit is acknowledged (committed) and its run has started (``run.started``).
- **emits/s**: `EMITTERS` concurrent emitters, each emitting in a loop; emits acknowledged
  per second (the runs they start run meanwhile).
- **cpu µs**: process CPU (every thread) per concurrent emit, its run included, until idle:
  the work, whatever else loads the machine.
- **route µs**: ``Dispatcher.route`` alone, per event (no I/O; the best of 5 rounds).
- **raw**: the ceiling from the same run: the writes each acknowledged emit committed (its
  event, run row, route and timeline rows, as our writer enqueued them), replayed through
  plain ``sqlite3`` (WAL, ``synchronous=FULL``) on a copy of the journal as it was after
  ready: one transaction per emit for the latency, one per `EMITTERS` emits for the rate.
- **daemon ready** (with ``--daemon``): ``orchestrator up FOLDER --headless`` over one file
  of the N workflows, from spawning the process until its lease says ready (Python start,
  probe subprocess, import, registration).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from common import daemon, fmt, fresh_dir, machine_line, percentile

from orchestrator import Runtime, Trigger, Workflow
from orchestrator.journal.ops import Op, grouped
from orchestrator.journal.sqlite.statements import SQL

CREATED = "order.created"
PAID = "order.paid"
EMITTERS = 20


@dataclass(frozen=True)
class Counts:
    sequential: int  # emits timed one at a time
    warmup: int  # sequential emits before the timed ones
    concurrent: int  # emits in the concurrent measurement, over EMITTERS emitters


FULL = Counts(1_000, 100, 4_000)
QUICK = Counts(200, 20, 800)


async def step(state: dict[str, Any]) -> dict[str, Any]:
    return state


def workflows(n: int) -> list[Workflow]:
    """N tenants' workflows, each listening to both event types for its own tenant."""
    return [
        Workflow(
            id=f"tenant_{k}",
            triggers={
                "created": Trigger(event=CREATED, where={"tenant": ("==", k)}),
                "paid": Trigger(event=PAID, where={"tenant": ("==", k), "amount": (">", 0)}),
            },
            pipelines={"created": [step], "paid": [step]},
        )
        for k in range(n)
    ]


def folder_source(n: int) -> str:
    """The same workflows as one workflow file, for the daemon."""
    lines = [
        "from orchestrator import Trigger, Workflow\n\n\n",
        "async def step(state):\n    return state\n\n\n",
    ]
    for k in range(n):
        lines.append(
            f'w{k} = Workflow(id="tenant_{k}", triggers={{'
            f'"created": Trigger(event="{CREATED}", where={{"tenant": ("==", {k})}}), '
            f'"paid": Trigger(event="{PAID}", where={{"tenant": ("==", {k}), "amount": (">", 0)}})'
            '}, pipelines={"created": [step], "paid": [step]})\n'
        )
    return "".join(lines)


class Capture:
    """The writes each emit enqueued (its acknowledged batch), kept for the raw replay."""

    def __init__(self, rt: Runtime) -> None:
        control = rt._control
        assert control is not None
        self.batches: list[list[Op]] = []
        self._current: list[Op] | None = None
        writer = rt._writer
        enqueue, emit = writer.enqueue, control.emit

        def capturing_enqueue(ops: Iterable[Op], *, urgent: bool = False) -> Any:
            ops = list(ops)
            if self._current is not None:
                self._current.extend(ops)
            return enqueue(ops, urgent=urgent)

        def capturing_emit(event_type: str, data: Any, *, source: str = "api") -> str:
            self._current = []
            try:
                return emit(event_type, data, source=source)
            finally:
                self.batches.append(self._current)
                self._current = None

        writer.enqueue = capturing_enqueue  # type: ignore[method-assign]
        control.emit = capturing_emit  # type: ignore[method-assign]


class Starts:
    """`run.started` notifications, each resolving the future of the emit waiting for it."""

    def __init__(self, rt: Runtime) -> None:
        self.pending: asyncio.Future[float] | None = None
        rt.on("run.started", self._started)

    def _started(self, _name: str, _payload: dict[str, Any]) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_result(time.perf_counter())

    def next(self) -> asyncio.Future[float]:
        self.pending = asyncio.get_running_loop().create_future()
        return self.pending


@dataclass
class Figures:
    n: int
    ready: float  # seconds
    restart: float  # seconds
    latency: list[float]  # seconds, emit -> acknowledged and started
    rate: float  # emits/s, concurrent
    cpu_us: float  # process CPU (all threads) per concurrent emit and its run, until idle
    route_us: float
    raw_latency: list[float]
    raw_rate: float
    daemon_ready: float | None = None


def event(i: int, n: int) -> dict[str, Any]:
    return {"tenant": i % n, "order": i, "amount": 10}


async def measure(tmp: Path, n: int, counts: Counts) -> Figures:
    db = tmp / "journal.db"
    flows = workflows(n)
    began = time.perf_counter()
    rt = Runtime(db, workflows=flows)
    await rt.start()
    ready = time.perf_counter() - began
    try:
        await rt.idle()
        await rt._writer.flush()
        snapshot(db, tmp / "raw.db")
        starts = Starts(rt)
        capture = Capture(rt)
        for i in range(counts.warmup):
            await rt.emit(CREATED, event(i, n))
        await rt.idle()
        capture.batches.clear()
        latency = []
        for i in range(counts.sequential):
            started = starts.next()
            t0 = time.perf_counter()
            await rt.emit(CREATED, event(counts.warmup + i, n))
            acknowledged = time.perf_counter()
            latency.append(max(acknowledged, await started) - t0)
        sequential_batches = list(capture.batches)
        starts.pending = None
        await rt.idle()
        capture.batches.clear()
        first = counts.warmup + counts.sequential
        per = counts.concurrent // EMITTERS

        async def emitter(e: int) -> None:
            for j in range(per):
                await rt.emit(CREATED, event(first + e * per + j, n))

        t0, cpu0 = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            for e in range(EMITTERS):
                group.create_task(emitter(e))
        rate = per * EMITTERS / (time.perf_counter() - t0)
        concurrent_batches = list(capture.batches)
        await rt.idle(timeout=120)
        cpu_us = (time.process_time() - cpu0) / (per * EMITTERS) * 1e6
        route_us = time_route(rt, n)
        completed = await rt.list_runs(status="completed", limit=-1)
        expected = counts.warmup + counts.sequential + per * EMITTERS
        if len(completed) != expected:
            raise RuntimeError(f"{len(completed)} runs completed, {expected} expected")
    finally:
        await rt.stop()
    began = time.perf_counter()
    async with Runtime(db, workflows=flows):
        restart = time.perf_counter() - began
    raw_latency, raw_rate = replay(tmp / "raw.db", sequential_batches, concurrent_batches)
    return Figures(n, ready, restart, latency, rate, cpu_us, route_us, raw_latency, raw_rate)


def time_route(rt: Runtime, n: int, events: int = 2_000, rounds: int = 5) -> float:
    """µs per `Dispatcher.route` (internal) for events each matching one trigger (best round)."""
    assert rt._control is not None
    route = rt._control.dispatcher.route
    datas = [event(i, n) for i in range(events)]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for data in datas:
            route(CREATED, data, "api")
        best = min(best, time.perf_counter() - start)
    return best / events * 1e6


def snapshot(db: Path, copy: Path) -> None:
    """A consistent copy of the journal as it is now (the writer idle), for the raw replay."""
    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def replay(
    path: Path, sequential: list[list[Op]], concurrent: list[list[Op]]
) -> tuple[list[float], float]:
    """Our emits' writes through plain sqlite3: per-emit seconds, and emits/s in groups."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        latency = []
        for ops in sequential:
            t0 = time.perf_counter()
            commit(conn, ops)
            latency.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for group in chunks(concurrent, EMITTERS):
            commit(conn, [op for ops in group for op in ops])
        rate = len(concurrent) / (time.perf_counter() - t0)
    finally:
        conn.close()
    return latency, rate


def commit(conn: sqlite3.Connection, ops: list[Op]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for stmt, rows in grouped(ops):
        conn.executemany(SQL[stmt], rows)
    conn.execute("COMMIT")


def chunks(items: list[list[Op]], size: int) -> Iterator[list[list[Op]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def daemon_ready(tmp: Path, n: int) -> float:
    folder = tmp / "flows"
    folder.mkdir()
    (folder / "tenants.py").write_text(folder_source(n))
    began = time.perf_counter()
    with daemon(folder, tmp / "daemon.db"):
        return time.perf_counter() - began


def ms(seconds: float) -> str:
    return fmt(seconds * 1000, 2)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Routing cost from 1 to 1,000 workflows.")
    parser.add_argument("--counts", default="1,10,100,1000", help="workflow counts")
    parser.add_argument("--quick", action="store_true", help="fewer emits, for a smoke run")
    parser.add_argument("--daemon", action="store_true", help="also time `orchestrator up`")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians printed)")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    ns = [int(c) for c in args.counts.split(",")]
    print(machine_line())
    print(
        f"N workflows (one per tenant, 2 triggers each on shared event types); "
        f"{counts.sequential:,} sequential emits after {counts.warmup:,}, "
        f"{counts.concurrent:,} from {EMITTERS} concurrent emitters; each emit starts one run; "
        f"median of {args.repeat} repetitions (ratios within each)"
    )
    print()
    reps: list[dict[int, dict[str, float]]] = []
    for _ in range(args.repeat):
        reps.append({})
        for n in ns:
            with fresh_dir() as tmp:
                figures = asyncio.run(measure(tmp, n, counts))
                if args.daemon:
                    figures.daemon_ready = daemon_ready(tmp, n)
            reps[-1][n] = summary(figures)
    print(HEADER)
    for n in ns:
        print_row(n, {key: median([rep[n][key] for rep in reps]) for key in reps[0][n]})
    print()
    print(
        "ratios: each N's figure / the 1-workflow figure, emits/s the other way up "
        "(goal: within 1.5x)"
    )
    print(f"{'N':>6}{'p50':>8}{'p99':>8}{'emits/s':>9}{'cpu':>8}{'ready':>8}")
    for n in ns:
        ratios = [ratio_row(rep[n], rep[ns[0]]) for rep in reps]
        print(f"{n:>6,}" + "".join(f"{median([r[i] for r in ratios]):>7.2f}x" for i in range(5)))


def summary(f: Figures) -> dict[str, float]:
    return {
        "ready": f.ready,
        "restart": f.restart,
        "p50": percentile(f.latency, 50),
        "p99": percentile(f.latency, 99),
        "raw_p50": percentile(f.raw_latency, 50),
        "raw_p99": percentile(f.raw_latency, 99),
        "rate": f.rate,
        "raw_rate": f.raw_rate,
        "ours_raw": f.rate / f.raw_rate,
        "cpu": f.cpu_us,
        "route": f.route_us,
        "daemon": math.nan if f.daemon_ready is None else f.daemon_ready,
    }


def ratio_row(row: dict[str, float], base: dict[str, float]) -> list[float]:
    """p50, p99, emits/s (as a slowdown), CPU per emit and ready, each against `base`."""
    return [
        row["p50"] / base["p50"],
        row["p99"] / base["p99"],
        base["rate"] / row["rate"],
        row["cpu"] / base["cpu"],
        row["ready"] / base["ready"],
    ]


HEADER = (
    f"{'N':>6}{'ready s':>9}{'restart s':>10}{'p50 ms':>8}{'p99 ms':>8}{'raw p50':>8}"
    f"{'raw p99':>8}{'emits/s':>9}{'raw/s':>8}{'ours/raw':>9}{'cpu µs':>8}{'route µs':>9}"
    f"{'daemon s':>9}"
)


def print_row(n: int, row: dict[str, float]) -> None:
    daemon_s = None if math.isnan(row["daemon"]) else row["daemon"]
    print(
        f"{n:>6,}{row['ready']:>9.2f}{row['restart']:>10.2f}"
        f"{ms(row['p50']):>8}{ms(row['p99']):>8}{ms(row['raw_p50']):>8}{ms(row['raw_p99']):>8}"
        f"{fmt(row['rate']):>9}{fmt(row['raw_rate']):>8}{row['ours_raw']:>9.2f}"
        f"{fmt(row['cpu']):>8}{row['route']:>9.1f}{fmt(daemon_s, 2):>9}",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])

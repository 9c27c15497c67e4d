"""Throughput and journal size of durable 3-step runs: our runtime against DBOS Transact.

Prints figures; it is not a test. Run: ``python bench/bench_runs.py [--quick] [--no-dbos]``.
Every measurement opens a fresh journal (or DBOS system database) in a temporary folder.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from common import (
    PoolWarnings,
    dbos_launched,
    dbos_sqlite_settings,
    dbos_unavailable,
    default_synchronous,
    fmt,
    fresh_dir,
    import_dbos,
    machine_line,
    parse_args,
    quiet_pool_warnings,
    ratio,
)

from orchestrator import Runtime, Step, Workflow

State = dict[str, int]


async def inc(state: State) -> State:
    return {**state, "n": state["n"] + 1}


def sinc(state: State) -> State:
    return {**state, "n": state["n"] + 1}


# Our three columns: async steps, sync steps in a worker thread (the default), inline sync.
STEP_KINDS: dict[str, Callable[[], Any]] = {
    "async": lambda: inc,
    "thread": lambda: sinc,
    "inline": lambda: Step(sinc, inline=True),
}


@dataclass(frozen=True)
class Counts:
    warmup: int
    sequential: int
    concurrent: tuple[int, ...]
    dbos_sequential: int
    dbos_concurrent: tuple[int, ...]


FULL = Counts(200, 2_000, (1_000, 10_000), 500, (1_000, 10_000))
QUICK = Counts(20, 200, (100, 1_000), 30, (100, 1_000))


@dataclass
class Column:
    rates: dict[str, float] = field(default_factory=dict)  # "sequential" / "N=1,000" -> runs/s
    step_us: float | None = None
    bytes_per_run: float | None = None


def bytes_per_run(path: Path, count_sql: str) -> float:
    """File size after a TRUNCATE checkpoint (plain sqlite3, owner closed), per run counted."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        runs = conn.execute(count_sql).fetchone()[0]
    finally:
        conn.close()
    return path.stat().st_size / runs


def check(results: list[State]) -> None:
    bad = [r for r in results if r.get("n") != 3]
    if bad:
        raise RuntimeError(f"{len(bad)} runs ended with a wrong state, e.g. {bad[0]!r}")


async def timed_sequential(call: Callable[[], Any], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        await call()
    start = time.perf_counter()
    for _ in range(runs):
        await call()
    return runs / (time.perf_counter() - start)


def workflow(kind: str) -> Workflow:
    make = STEP_KINDS[kind]
    return Workflow(id="bench", pipelines={"three": [make(), make(), make()], "one": [make()]})


async def ours_invoke(rt: Runtime, trigger: str = "three") -> State:
    result = await rt.invoke("bench", trigger, {"n": 0})
    if not result.ok:
        raise RuntimeError(f"run {result.run_id} ended {result.status}: {result.error}")
    return result.state


async def ours_sequential(kind: str, counts: Counts) -> float:
    with fresh_dir() as tmp:
        async with Runtime(tmp / "journal.db") as rt:
            await rt.register(workflow(kind))
            return await timed_sequential(lambda: ours_invoke(rt), counts.warmup, counts.sequential)


async def ours_concurrent(kind: str, n: int, warmup: int) -> tuple[float, float]:
    """Runs/s for asyncio.gather() of n invokes; journal bytes per run afterwards."""
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        async with Runtime(db) as rt:
            await rt.register(workflow(kind))
            check(await asyncio.gather(*(ours_invoke(rt) for _ in range(warmup))))
            start = time.perf_counter()
            results = await asyncio.gather(*(ours_invoke(rt) for _ in range(n)))
            rate = n / (time.perf_counter() - start)
        check(results)
        return rate, bytes_per_run(db, "SELECT count(*) FROM runs")


async def ours_step_overhead(kind: str, counts: Counts, rounds: int = 5) -> float:
    """(3-step run time - 1-step run time) / 2, in µs; blocks of each interleaved."""
    per_round = max(1, counts.sequential // rounds)
    spent = {"three": 0.0, "one": 0.0}
    with fresh_dir() as tmp:
        async with Runtime(tmp / "journal.db") as rt:
            await rt.register(workflow(kind))
            for trigger in spent:
                for _ in range(counts.warmup):
                    await ours_invoke(rt, trigger)
            for _ in range(rounds):
                for trigger in spent:
                    start = time.perf_counter()
                    for _ in range(per_round):
                        await ours_invoke(rt, trigger)
                    spent[trigger] += time.perf_counter() - start
    return (spent["three"] - spent["one"]) / (per_round * rounds) / 2 * 1e6


async def measure_ours(kind: str, counts: Counts) -> Column:
    column = Column(rates={"sequential": await ours_sequential(kind, counts)})
    for n in counts.concurrent:  # bytes per run: the largest N, measured last, is kept
        column.rates[f"N={n:,}"], column.bytes_per_run = await ours_concurrent(kind, n, 50)
    column.step_us = await ours_step_overhead(kind, counts)
    return column


class Dbos(NamedTuple):
    cls: Any  # the DBOS class
    three: Any  # the bench workflow: an async workflow of three async @DBOS.step() steps
    pool: PoolWarnings


def load_dbos() -> Dbos | None:
    DBOS = import_dbos()
    if DBOS is None:
        return None

    @DBOS.step()
    async def dbos_inc(state: State) -> State:
        return {**state, "n": state["n"] + 1}

    @DBOS.workflow()
    async def dbos_three(state: State) -> State:
        return await dbos_inc(await dbos_inc(await dbos_inc(state)))

    return Dbos(DBOS, dbos_three, quiet_pool_warnings())


# Above this many DBOS workflows in flight, its 20-connection pool times out (30 s) and retries.
DBOS_IN_FLIGHT = 1_000
HOW = {
    "gather": "asyncio.gather of async workflow calls",
    "start_workflow_async": "DBOS.start_workflow_async, then await get_result()",
}


async def dbos_concurrent(dbos: Dbos, n: int, how: str) -> tuple[float, float]:
    """Runs/s for n workflows started concurrently `how`; system-database bytes per run."""
    warned, gate = dbos.pool.count, asyncio.Semaphore(DBOS_IN_FLIGHT)

    async def one() -> State:
        async with gate:
            if how == "gather":
                return await dbos.three({"n": 0})
            handle = await dbos.cls.start_workflow_async(dbos.three, {"n": 0})
            return await handle.get_result()

    with fresh_dir() as tmp:
        db = tmp / "dbos.sqlite"
        with dbos_launched(dbos.cls, db):
            check(await asyncio.gather(*(dbos.three({"n": 0}) for _ in range(50))))
            start = time.perf_counter()
            results = await asyncio.gather(*(one() for _ in range(n)))
            rate = n / (time.perf_counter() - start)
        check(results)
        if dbos.pool.count > warned:
            print(
                f"DBOS at N={n:,}: {dbos.pool.count - warned:,} 'connection pool exhausted' "
                "waits, each retried by DBOS (its warnings are not shown)"
            )
        return rate, bytes_per_run(db, "SELECT count(*) FROM workflow_status")


async def measure_dbos(dbos: Dbos, counts: Counts) -> Column:
    with fresh_dir() as tmp, dbos_launched(dbos.cls, tmp / "dbos.sqlite"):
        sequential = await timed_sequential(
            lambda: dbos.three({"n": 0}), counts.warmup, counts.dbos_sequential
        )
    column = Column(rates={"sequential": sequential})
    first, *rest = counts.dbos_concurrent
    tried = {how: await dbos_concurrent(dbos, first, how) for how in HOW}
    how = max(tried, key=lambda k: tried[k][0])
    print(
        f"DBOS concurrent: {HOW[how]}, the faster at N={first:,} (asyncio.gather "
        f"{tried['gather'][0]:,.0f}/s, start_workflow_async "
        f"{tried['start_workflow_async'][0]:,.0f}/s); at most {DBOS_IN_FLIGHT:,} in flight"
    )
    column.rates[f"N={first:,}"], column.bytes_per_run = tried[how]
    for n in rest:  # bytes per run: the largest N, measured last, is kept
        column.rates[f"N={n:,}"], column.bytes_per_run = await dbos_concurrent(dbos, n, how)
    return column


def print_table(columns: dict[str, Column], counts: Counts) -> None:
    dbos = columns.get("DBOS")
    names = list(columns)
    rows: list[tuple[str, list[str], str]] = []
    for key in ["sequential", *(f"N={n:,}" for n in counts.concurrent)]:
        label = "sequential runs/s" if key == "sequential" else f"concurrent {key} runs/s"
        theirs = dbos.rates.get(key) if dbos else None
        rows.append(
            (
                label,
                [fmt(columns[name].rates.get(key)) for name in names],
                ratio(columns["async"].rates.get(key), theirs),
            )
        )
    rows.append(
        ("per-step overhead µs (sequential)", [fmt(columns[name].step_us, 1) for name in names], "")
    )
    rows.append(
        (
            f"bytes per run (N={counts.concurrent[-1]:,} journal)",
            [fmt(columns[name].bytes_per_run) for name in names],
            ratio(columns["async"].bytes_per_run, dbos.bytes_per_run if dbos else None),
        )
    )
    print(
        f"{'':34}"
        + "".join(f"{name:>10}" for name in names)
        + (f"{'async/DBOS':>12}" if dbos else "")
    )
    for label, cells, tail in rows:
        print(
            f"{label:34}"
            + "".join(f"{cell:>10}" for cell in cells)
            + (f"{tail:>12}" if dbos else "")
        )


def print_header(counts: Counts, quick: bool) -> None:
    print(machine_line())
    print(
        f"ours: synchronous={default_synchronous()} (the Runtime default), WAL; "
        "runs of 3 steps doing n += 1"
    )
    print(
        "  async = async def steps, thread = sync steps in worker threads (the default),"
        " inline = Step(sync, inline=True)"
    )
    concurrent = ", ".join(f"{n:,}" for n in counts.concurrent)
    print(
        f"counts{' (--quick)' if quick else ''}: sequential {counts.sequential:,} runs after "
        f"{counts.warmup} warm-up; concurrent N = {concurrent} after 50 warm-up"
    )


async def main(argv: list[str]) -> None:
    args = parse_args("Durable 3-step runs: ours against DBOS.", argv)
    counts = QUICK if args.quick else FULL
    print_header(counts, args.quick)
    columns = {kind: await measure_ours(kind, counts) for kind in STEP_KINDS}
    dbos = None if args.no_dbos else load_dbos()
    skipped = dbos_unavailable(args.no_dbos, dbos)
    if skipped:
        print(skipped)
    else:
        assert dbos is not None
        print(
            f"DBOS {importlib.metadata.version('dbos')}: SQLite system database with "
            f"{dbos_sqlite_settings(dbos.cls)} (its defaults); sequential "
            f"{counts.dbos_sequential:,} runs after {counts.warmup} warm-up"
        )
        columns["DBOS"] = await measure_dbos(dbos, counts)
    print()
    print_table(columns, counts)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

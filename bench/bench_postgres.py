"""Durable runs on each journal backend, and DBOS Transact on the same PostgreSQL.

Prints figures; it is not a test. Run: ``python bench/bench_postgres.py [--quick] [--no-dbos]``.

One throwaway PostgreSQL server (``tests/postgres.py``, started durable: fsync and full-page
writes on, as in production) serves every PostgreSQL column. Columns:

- SQLite: our runtime on a journal file (WAL, synchronous=FULL).
- PostgreSQL, 1 daemon: our runtime on a ``postgresql://`` journal (synchronous_commit=on).
- PostgreSQL, 3 daemons: the same runtime, the active daemon, with two standby daemons
  (``orchestrator up`` processes) on the same journal. One daemon runs a journal's runs at
  a time; the standbys watch it, to take over, and run the isolated steps it offers, but
  these runs' steps are async (they stay in the active daemon): this column is 1 daemon's,
  minus what the standbys cost. ``bench_pg_steps.py`` measures steps spread to standbys.
- DBOS on PostgreSQL: DBOS Transact with its system database in another database of the
  same server (an async workflow of three async steps; recv/send for event -> resume).

Rows: 3-step runs/s one at a time and with N in flight; event -> resume p50/p99 (a run
paused on an event, resumed by `emit`, timed to its completion's commit). For PostgreSQL
it also prints the server's own limit: WAL flushes per second (one-row autocommit INSERTs
from one connection) and our runs per commit (write transactions, by the server's
transaction ids), whose product is the ceiling group commit can reach.

Then the take-over time (`pg_daemons.takeovers`): three ``orchestrator up`` daemons on one
folder and journal, runs in flight and runs paused; the active daemon is SIGKILLed, or
frozen with SIGSTOP past its 5 s heartbeat and then continued; printed: the seconds until a
standby logged ready, and until the first and the last run interrupted completed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench_events import ORDERS, PAYMENT, Completions, Dbos, order, park
from bench_runs import check, load_dbos, ours_invoke, timed_sequential, workflow
from common import (
    dbos_launched,
    dbos_unavailable,
    fmt,
    fresh_dir,
    import_dbos,
    machine_line,
    parse_args,
    percentile,
)
from pg_daemons import standbys, takeover_lines, takeovers

from orchestrator import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres import Cluster, find_bindir, start_cluster  # the suite's throwaway server


@dataclass(frozen=True)
class Counts:
    sequential: int
    in_flight: tuple[int, ...]
    parked: int  # runs paused, then resumed one at a time (each one a latency sample)
    warmup: int
    flushes: int  # one-row autocommit INSERTs timed for the WAL-flush rate
    takeovers: tuple[str, ...]  # the signal the active daemon gets, one round each
    held: int  # runs in flight (in a step) when it gets it
    paused: int  # runs paused on an event meanwhile (each take-over re-arms them)
    rounds: int  # turns of the two PostgreSQL columns (1 daemon, 3 daemons): medians


FULL = Counts(
    500, (1_000, 5_000), 500, 50, 2_000, ("SIGKILL",) * 3 + ("SIGSTOP",) * 2, 100, 1_000, 3
)
QUICK = Counts(100, (500,), 100, 10, 500, ("SIGKILL", "SIGSTOP"), 20, 100, 1)


@dataclass
class Column:
    rates: dict[str, float | None] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)  # seconds, emit -> completion
    per_commit: float = 0.0  # runs per commit at the largest N (PostgreSQL: server's count)
    note: str = ""


# -- the server ----------------------------------------------------------------------------


@contextmanager
def server() -> Iterator[Cluster]:
    cluster = start_cluster(durable=True)
    try:
        yield cluster
    finally:
        cluster.stop()


def wal_flushes_per_second(url: str, n: int) -> float:
    """One-row INSERTs/s, each its own transaction: one WAL flush per commit."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS flushes (id BIGSERIAL PRIMARY KEY, at BIGINT)")
        start = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO flushes (at) VALUES (%s)", (i,))
        rate = n / (time.perf_counter() - start)
        conn.execute("DROP TABLE flushes")
    return rate


def commits(url: str) -> int:
    """The server's transaction id counter: it moves by one per transaction that wrote.

    Read transactions (the standbys' polls, our reads) take no id, and nothing else writes
    to this server while a column is measured: the difference over a burst is our commits
    (plus one for this call). The statistics' ``xact_commit``, used before, counts reads as
    well (the standbys' polls among them) and is reported by each backend at most once a
    second, after the burst.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    return int(row[0]) if row else 0


# -- ours ----------------------------------------------------------------------------------


async def ours(
    db: str | Path, counts: Counts, url: str | None, spare: Path | None = None
) -> Column:
    """Our column; with `spare` (a folder), two standby daemons watch the journal meanwhile."""
    async with Runtime(db, workflows=[ORDERS]) as rt:
        await rt.register(workflow("async"))
        if spare is None or url is None:
            return await measured(rt, counts, url)
        async with standbys(url, spare):
            return await measured(rt, counts, url)


async def measured(rt: Runtime, counts: Counts, url: str | None) -> Column:
    column = Column()
    column.rates["sequential"] = await timed_sequential(
        lambda: ours_invoke(rt), counts.warmup, counts.sequential
    )
    for n in counts.in_flight:
        before = commits(url) if url else 0
        start = time.perf_counter()
        check(list(await asyncio.gather(*(ours_invoke(rt) for _ in range(n)))))
        column.rates[f"N={n:,}"] = n / (time.perf_counter() - start)
        if url:
            column.per_commit = n / max(commits(url) - before - 1, 1)
            column.note = f"{column.per_commit:.1f} runs per commit at N={n:,}"
    column.latency = await resume_latency(rt, counts)
    return column


async def resume_latency(rt: Runtime, counts: Counts) -> list[float]:
    done_at = Completions(rt)
    runs = await park(rt, 0, counts.warmup + counts.parked)
    samples = []
    for i, (order_id, run_id) in enumerate(runs.items()):
        finished = done_at.of(run_id)
        start = time.perf_counter()
        await rt.emit(PAYMENT, {"order_id": order_id, "amount": 10})
        end = await finished
        if i >= counts.warmup:
            samples.append(end - start)
    return samples


async def guarded(what: str, measure: Callable[[], Awaitable[Column]]) -> Column:
    """The column, or an empty one saying why it could not be measured."""
    try:
        return await measure()
    except Exception as exc:  # a backend that cannot run here yet: say so, go on
        print(f"{what}: not measured: {type(exc).__name__}: {exc}")
        return Column(note="not measured")


PG1, PG3 = "PostgreSQL, 1 daemon", "PostgreSQL, 3 daemons"


async def ours_postgres(cluster: Cluster, counts: Counts) -> dict[str, Column]:
    """Our two PostgreSQL columns, measured in turns (1, 3, 3, 1, ...) on a shared machine.

    Each cell is the median of its rounds, each on a new database; latencies pool the
    rounds' samples. Taking turns spreads whatever else loads the machine over both.
    """
    rounds: dict[str, list[Column]] = {PG1: [], PG3: []}
    for number in range(counts.rounds):
        for name in (PG1, PG3) if number % 2 == 0 else (PG3, PG1):
            url = cluster.create_database("ours")
            with fresh_dir() as tmp:  # the standbys' folder: empty, they run nothing
                spare = None if name == PG1 else tmp
                measure = partial(ours, url, counts, url, spare)
                rounds[name].append(await guarded(name, measure))
    n = counts.in_flight[-1]
    return {name: median_column(columns, n) for name, columns in rounds.items()}


def median_column(rounds: list[Column], n: int) -> Column:
    """Each rate the median of the rounds', the latency samples pooled."""
    measured = [column for column in rounds if column.rates]
    if not measured:
        return Column(note="not measured")
    rates: dict[str, float | None] = {
        row: statistics.median(values)
        for row in measured[0].rates
        if (values := [v for c in measured if (v := c.rates.get(row)) is not None])
    }
    per_commit = statistics.median(column.per_commit for column in measured)
    note = f"median of {len(measured)} rounds; {per_commit:.1f} runs per commit at N={n:,}"
    return Column(rates, [x for c in measured for x in c.latency], per_commit, note)


def take_over(url: str, counts: Counts) -> list[str]:
    """The take-over table's lines, or why it could not be measured."""
    try:
        with fresh_dir() as tmp:
            results = takeovers(url, tmp, counts.takeovers, counts.held, counts.paused)
    except Exception as exc:  # a backend that cannot run here yet: say so, go on
        return [f"take-over: not measured: {type(exc).__name__}: {exc}"]
    return takeover_lines(results, counts.held, counts.paused)


# -- DBOS ----------------------------------------------------------------------------------


async def dbos_column(url: str, counts: Counts) -> Column:
    runs, events = load_dbos(), Dbos(_dbos_class())
    assert runs is not None
    column = Column()
    with dbos_launched(runs.cls, url):
        column.rates["sequential"] = await timed_sequential(
            lambda: runs.three({"n": 0}), counts.warmup, counts.sequential
        )
        gate = asyncio.Semaphore(1_000)  # as bench_runs: its pool times out beyond

        async def one() -> Any:
            async with gate:
                return await runs.three({"n": 0})

        for n in counts.in_flight:
            start = time.perf_counter()
            check(list(await asyncio.gather(*(one() for _ in range(n)))))
            column.rates[f"N={n:,}"] = n / (time.perf_counter() - start)
        column.latency = await dbos_resume_latency(events, counts)
    return column


def _dbos_class() -> Any:
    cls = import_dbos()
    assert cls is not None
    return cls


async def dbos_resume_latency(dbos: Dbos, counts: Counts) -> list[float]:
    """Workflows blocked in recv, sent their message one at a time, timed to their result."""
    from dbos import SetWorkflowID

    n = counts.warmup + counts.parked
    gate = asyncio.Semaphore(20)

    async def start(i: int) -> Any:
        async with gate:
            with SetWorkflowID(f"order-{i}"):
                return await dbos.cls.start_workflow_async(dbos.workflow, f"order-{i}")

    handles = await asyncio.gather(*(start(i) for i in range(n)))
    await asyncio.sleep(1.0)  # a bench, not a test: let every workflow reach its recv
    samples = []
    for i, handle in enumerate(handles):
        began = time.perf_counter()
        await dbos.cls.send_async(handle.get_workflow_id(), order(i), PAYMENT)
        await handle.get_result()
        if i >= counts.warmup:
            samples.append(time.perf_counter() - began)
    return samples


# -- printing ------------------------------------------------------------------------------


def print_table(columns: dict[str, Column], counts: Counts) -> None:
    names = list(columns)
    print(f"{'':28}" + "".join(f"{name:>24}" for name in names))
    rows = ["sequential", *(f"N={n:,}" for n in counts.in_flight)]
    for row in rows:
        cells = [fmt(columns[name].rates.get(row)) for name in names]
        print(f"{'runs/s ' + row:28}" + "".join(f"{cell:>24}" for cell in cells))
    for p in (50, 99):
        cells = [
            f"{percentile(c.latency, p) * 1000:.1f}" if c.latency else "-" for c in columns.values()
        ]
        print(f"{f'event -> resume p{p} ms':28}" + "".join(f"{cell:>24}" for cell in cells))
    for name, column in columns.items():
        if column.note:
            print(f"{name}: {column.note}")


async def main(argv: list[str]) -> None:
    args = parse_args("Durable runs per journal backend, and DBOS on the same PostgreSQL.", argv)
    counts = QUICK if args.quick else FULL
    print(machine_line())
    print(
        f"3-step async runs; {counts.sequential} one at a time, then N in flight; "
        f"{counts.parked} runs resumed one at a time (after {counts.warmup} warm-up)"
    )
    columns: dict[str, Column] = {}
    with fresh_dir() as tmp:
        columns["SQLite"] = await ours(tmp / "journal.db", counts, None)
    if find_bindir() is None:
        print("PostgreSQL: not installed here; its columns are skipped")
        print_table(columns, counts)
        return
    with server() as cluster:
        flushes = wal_flushes_per_second(cluster.create_database("flushes"), counts.flushes)
        print(
            f"PostgreSQL {cluster.bindir.parent.name} on 127.0.0.1 (fsync on): "
            f"{flushes:,.0f} WAL flushes/s (one-row autocommit INSERTs, one connection)"
        )
        columns.update(await ours_postgres(cluster, counts))
        skip = dbos_unavailable(args.no_dbos, import_dbos())
        if skip:
            print(skip)
        else:
            version = importlib.metadata.version("dbos")
            dbos_url = cluster.create_database("dbos")
            columns[f"DBOS {version}, PostgreSQL"] = await guarded(
                "DBOS", lambda: dbos_column(dbos_url, counts)
            )
        taken = take_over(cluster.create_database("takeover"), counts)
    print(
        "PostgreSQL, 3 daemons: this process's runtime is the active daemon, two "
        "`orchestrator up` standbys watch the journal (one active daemon at a time)"
    )
    print_table(columns, counts)
    for line in taken:
        print(line)
    ours_pg = columns.get(PG1)
    if ours_pg is not None and ours_pg.per_commit:
        print(
            f"group-commit ceiling: {flushes:,.0f} flushes/s x {ours_pg.per_commit:.1f} runs "
            f"per commit = {flushes * ours_pg.per_commit:,.0f} runs/s"
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

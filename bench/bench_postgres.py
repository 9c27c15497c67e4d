"""Durable runs on each journal backend, and DBOS Transact on the same PostgreSQL.

Prints figures; it is not a test. Run: ``python bench/bench_postgres.py [--quick] [--no-dbos]``.

One throwaway PostgreSQL server (``tests/postgres.py``, started durable: fsync and full-page
writes on, as in production) serves every PostgreSQL column. Every column of ours runs the
same workflows from files in a workflows folder (`Runtime(workflows_dir=...)`): only runs
of file workflows are spread to daemons standing by. Columns:

- SQLite: our runtime on a journal file (WAL, synchronous=FULL).
- PostgreSQL, 1 daemon: our runtime on a ``postgresql://`` journal (synchronous_commit=on).
- PostgreSQL, 3 daemons: the same runtime, the active daemon (the coordinator), with two
  standby daemons (``orchestrator up`` processes on the same folder and journal). The
  standbys enlist as executors; past its share of the runs in flight (a third of them,
  with two executors) the coordinator offers each run's segment as a run task, which an
  executor claims, executes with its own writer and answers (docs/POSTGRES.md, "Run
  tasks"). Measuring starts once the coordinator has counted both executors.
- DBOS on PostgreSQL: DBOS Transact with its system database in another database of the
  same server (an async workflow of three async steps; recv/send for event -> resume).

Rows: 3-step runs/s one at a time and with N in flight (trivial async steps); runs/s with
N in flight whose three async steps each do about 1 ms of pure Python (loop turns
calibrated here at start: the same work in every column); event -> resume p50/p99 (a run
paused on an event, resumed by `emit`, timed to its completion's commit). Under each,
for the PostgreSQL columns, how many of those runs executed on a standby (runs with a
`run.elsewhere` timeline entry: an executor journals one per segment it executes) and how
many the coordinator took back, continuing them itself, from an executor it judged gone
(its log). Runs one at a time are never offered (one run in flight is the coordinator's
share). For PostgreSQL it also prints the server's own limit: WAL flushes per second
(one-row autocommit INSERTs from one connection) and our runs per commit (write
transactions, by the server's transaction ids: the executors' batches and replies count
too), whose product is the ceiling group commit can reach.

This machine may have 2 cores: the 3 daemons, PostgreSQL and the bench's own client side
share them (the header line says how many), so spreading can add at most the cores the
coordinator leaves idle.

Then the take-over time (`pg_daemons.takeovers`): three ``orchestrator up`` daemons on one
folder and journal, runs in flight and runs paused; the active daemon is SIGKILLed, or
frozen with SIGSTOP past its 5 s heartbeat and then continued; printed: the seconds until a
standby logged ready, and until the first and the last run interrupted completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench_events import PAYMENT, Completions, Dbos, order, park
from bench_runs import check, load_dbos, ours_invoke, timed_sequential
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
from pg_daemons import TIMEOUT, standbys, takeover_lines, takeovers

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
    busy: int  # runs in flight whose 3 steps each do about 1 ms of pure Python


FULL = Counts(
    500, (1_000, 5_000), 500, 50, 2_000, ("SIGKILL",) * 3 + ("SIGSTOP",) * 2, 100, 1_000, 3, 1_000
)
QUICK = Counts(100, (500,), 100, 10, 500, ("SIGKILL", "SIGSTOP"), 20, 100, 1, 300)
STEP_MS = 1.0  # the CPU work of a step of the "busy" runs, in ms of pure Python (calibrated)
STANDBYS = 2


def rows(counts: Counts) -> list[str]:
    """The table's rows of runs/s, in order (the keys of `Column.rates`)."""
    return ["sequential", *(f"N={n:,}" for n in counts.in_flight), busy_row(counts)]


def busy_row(counts: Counts) -> str:
    return f"N={counts.busy:,}, CPU steps"


@dataclass
class Column:
    rates: dict[str, float | None] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)  # seconds, emit -> completion
    # Runs executed on a standby, by row of `rates` ("resume": the runs resumed one at a
    # time), from the journal's `run.elsewhere` timeline entries; empty: not counted.
    elsewhere: dict[str, int] = field(default_factory=dict)
    # Runs whose executor was judged gone (fenced) meanwhile: continued on the coordinator.
    taken_back: dict[str, int] = field(default_factory=dict)
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

# The workflows every column of ours runs, from files in a workflows folder: only runs of
# workflows loaded from files are offered to the daemons standing by (another machine may
# not have the module of a workflow registered in code). `bench_runs.workflow("async")`'s
# three steps, the same steps each doing `turns` loop turns of pure Python, and
# `bench_events.ORDERS`.
BENCH_FILE = '''\
"""bench_postgres.py's runs: three trivial async steps, or three of about {ms} ms of CPU."""

from orchestrator import Workflow

TURNS = {turns}


async def inc(state):
    return {{**state, "n": state["n"] + 1}}


async def busy(state):
    total = 0
    for i in range(TURNS):
        total += i * i % 7
    return {{**state, "n": state["n"] + 1, "total": total}}


workflow = Workflow(id="bench", pipelines={{"three": [inc, inc, inc], "busy": [busy, busy, busy]}})
'''
ORDERS_FILE = '''\
"""bench_postgres.py's runs paused on an event: bench_events.ORDERS."""

from orchestrator import Workflow


async def wait_for_payment(state, ctx):
    where = {"order_id": ("==", state["order_id"])}
    return ctx.pause(event="payment.received", where=where, into="payment")


async def done(state):
    return {**state, "done": True}


workflow = Workflow(id="orders", pipelines={"pay": [wait_for_payment, done]})
'''


def busy_turns(ms: float = STEP_MS) -> int:
    """Loop turns of `busy` that take about `ms` here (the fastest of a few timings)."""
    turns, best = 20_000, float("inf")
    for _ in range(20):
        start = time.perf_counter()
        total = 0
        for i in range(turns):
            total += i * i % 7
        best = min(best, time.perf_counter() - start)
    return max(1, round(turns * ms / 1000 / best))


def write_flows(folder: Path, turns: int) -> Path:
    """The workflows folder of every column of ours."""
    folder.mkdir()
    (folder / "bench.py").write_text(BENCH_FILE.format(ms=STEP_MS, turns=turns))
    (folder / "orders.py").write_text(ORDERS_FILE)
    return folder


class Coordinator(logging.Handler):
    """What this process's coordinator logs about its executors (figures only): how many
    it counts, and how many runs it continued itself because their executor was judged
    gone (fenced: its row in `standbys` went stale)."""

    COUNTED = re.compile(r"run segments: (\d+) daemons standing by can execute them")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.executors = 0
        self.taken_back = 0
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if counted := self.COUNTED.search(message):
            self.executors = int(counted[1])
            self._changed.set()
        elif "or was judged gone; continuing here from checkpoint" in message:
            self.taken_back += 1

    async def counting(self, n: int) -> None:
        """Until it counts `n` executors (after a fence they enlist again in a few s)."""
        async with asyncio.timeout(TIMEOUT):
            while self.executors != n:
                self._changed.clear()
                await self._changed.wait()


@contextlib.contextmanager
def coordinator_log() -> Iterator[Coordinator]:
    """A `Coordinator` on the runtime's logger while the block runs."""
    logger = logging.getLogger("orchestrator.runtime")
    handler, level = Coordinator(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Tally:
    """Per row: the runs executed on a standby and those taken back from a standby.

    Executed on a standby: runs with a `run.elsewhere` timeline entry (an executor writes
    one for each segment it executes), counted in the journal; taken back: the
    coordinator's log (`Coordinator`). Neither on SQLite.
    """

    def __init__(self, url: str | None, coordinator: Coordinator | None) -> None:
        self.url, self.coordinator = url, coordinator
        self.last_entry, self.taken_back = 0, 0

    async def ready(self) -> None:
        """Until the coordinator counts every standby as an executor (at once if none)."""
        if self.coordinator is not None:
            await self.coordinator.counting(STANDBYS)

    def since(self) -> tuple[int, int] | None:
        """(executed on a standby, taken back) since the last call; None on SQLite."""
        if self.url is None:
            return None
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(DISTINCT run), coalesce(max(id), %s) FROM orchestrator.timeline"
                " WHERE kind = 'run.elsewhere' AND id > %s",
                (self.last_entry, self.last_entry),
            ).fetchone()
        assert row is not None
        self.last_entry = int(row[1])
        total = self.coordinator.taken_back if self.coordinator is not None else 0
        taken_back, self.taken_back = total - self.taken_back, total
        return int(row[0]), taken_back

    def count(self, column: Column, row: str) -> None:
        counted = self.since()
        if counted is not None:
            column.elsewhere[row], column.taken_back[row] = counted


async def ours(
    db: str | Path, counts: Counts, url: str | None, flows: Path, logs: Path | None = None
) -> Column:
    """Our column on the workflows in `flows`; with `logs` (a folder for their logs), two
    standby daemons run the same folder on the journal meanwhile, executors of its runs."""
    async with Runtime(db, workflows_dir=flows) as rt:
        if logs is None or url is None:
            return await measured(rt, counts, Tally(url, None))
        with coordinator_log() as coordinator:
            async with standbys(url, flows, logs, STANDBYS):
                return await measured(rt, counts, Tally(url, coordinator))


async def measured(rt: Runtime, counts: Counts, tally: Tally) -> Column:
    """Each row; with standbys, each starts once the coordinator counts both as executors."""
    column, url = Column(), tally.url
    await tally.ready()
    tally.since()
    column.rates["sequential"] = await timed_sequential(
        lambda: ours_invoke(rt), counts.warmup, counts.sequential
    )
    tally.count(column, "sequential")
    bursts = [(f"N={n:,}", n, "three") for n in counts.in_flight]
    for row, n, trigger in [*bursts, (busy_row(counts), counts.busy, "busy")]:
        await tally.ready()
        tally.since()
        before = commits(url) if url else 0
        start = time.perf_counter()
        check(list(await asyncio.gather(*(ours_invoke(rt, trigger) for _ in range(n)))))
        column.rates[row] = n / (time.perf_counter() - start)
        if url and trigger == "three":
            column.per_commit = n / max(commits(url) - before - 1, 1)
            column.note = f"{column.per_commit:.1f} runs per commit at {row}"
        tally.count(column, row)
    await tally.ready()
    column.latency = await resume_latency(rt, counts, tally)
    tally.count(column, "resume")
    return column


async def resume_latency(rt: Runtime, counts: Counts, tally: Tally) -> list[float]:
    done_at = Completions(rt)
    runs = await park(rt, 0, counts.warmup + counts.parked)
    tally.since()  # the runs parked: spread as any burst; their resumes are counted
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


async def ours_postgres(cluster: Cluster, counts: Counts, flows: Path) -> dict[str, Column]:
    """Our two PostgreSQL columns, measured in turns (1, 3, 3, 1, ...) on a shared machine.

    Each cell is the median of its rounds, each on a new database; latencies pool the
    rounds' samples. Taking turns spreads whatever else loads the machine over both.
    """
    rounds: dict[str, list[Column]] = {PG1: [], PG3: []}
    for number in range(counts.rounds):
        for name in (PG1, PG3) if number % 2 == 0 else (PG3, PG1):
            url = cluster.create_database("ours")
            with fresh_dir() as tmp:  # the standbys' logs
                logs = None if name == PG1 else tmp
                measure = partial(ours, url, counts, url, flows, logs)
                rounds[name].append(await guarded(name, measure))
    n = counts.in_flight[-1]
    return {name: median_column(columns, n) for name, columns in rounds.items()}


def median_column(rounds: list[Column], n: int) -> Column:
    """Each rate and count the median of the rounds', the latency samples pooled."""
    measured = [column for column in rounds if column.rates]
    if not measured:
        return Column(note="not measured")
    rates: dict[str, float | None] = {
        row: statistics.median(values)
        for row in measured[0].rates
        if (values := [v for c in measured if (v := c.rates.get(row)) is not None])
    }
    elsewhere, taken_back = (
        {
            row: round(statistics.median(getattr(c, name).get(row, 0) for c in measured))
            for row in measured[0].elsewhere
        }
        for name in ("elsewhere", "taken_back")
    )
    per_commit = statistics.median(column.per_commit for column in measured)
    note = f"median of {len(measured)} rounds; {per_commit:.1f} runs per commit at N={n:,}"
    latency = [x for c in measured for x in c.latency]
    return Column(rates, latency, elsewhere, taken_back, per_commit, note)


def take_over(url: str, counts: Counts) -> list[str]:
    """The take-over table's lines, or why it could not be measured."""
    try:
        with fresh_dir() as tmp:
            results = takeovers(url, tmp, counts.takeovers, counts.held, counts.paused)
    except Exception as exc:  # a backend that cannot run here yet: say so, go on
        return [f"take-over: not measured: {type(exc).__name__}: {exc}"]
    return takeover_lines(results, counts.held, counts.paused)


# -- DBOS ----------------------------------------------------------------------------------


async def dbos_column(url: str, counts: Counts, turns: int) -> Column:
    runs, events, busy = load_dbos(), Dbos(_dbos_class()), dbos_busy(turns)
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

        async def one_busy() -> Any:
            async with gate:
                return await busy({"n": 0})

        start = time.perf_counter()
        check(list(await asyncio.gather(*(one_busy() for _ in range(counts.busy)))))
        column.rates[busy_row(counts)] = counts.busy / (time.perf_counter() - start)
        column.latency = await dbos_resume_latency(events, counts)
    return column


def dbos_busy(turns: int) -> Any:
    """A DBOS workflow of three async steps of `turns` loop turns each (ours' "busy" runs)."""
    cls = _dbos_class()

    @cls.step()
    async def dbos_busy_step(state: dict[str, int]) -> dict[str, int]:
        total = 0
        for i in range(turns):
            total += i * i % 7
        return {**state, "n": state["n"] + 1, "total": total}

    @cls.workflow()
    async def dbos_busy_three(state: dict[str, int]) -> dict[str, int]:
        return await dbos_busy_step(await dbos_busy_step(await dbos_busy_step(state)))

    return dbos_busy_three


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
    for row in rows(counts):
        cells = [fmt(columns[name].rates.get(row)) for name in names]
        print(f"{'runs/s ' + row:28}" + "".join(f"{cell:>24}" for cell in cells))
        print_elsewhere(columns, row)
    for p in (50, 99):
        cells = [
            f"{percentile(c.latency, p) * 1000:.1f}" if c.latency else "-" for c in columns.values()
        ]
        print(f"{f'event -> resume p{p} ms':28}" + "".join(f"{cell:>24}" for cell in cells))
    print_elsewhere(columns, "resume", "  resumed")
    for name, column in columns.items():
        if column.note:
            print(f"{name}: {column.note}")


def print_elsewhere(columns: dict[str, Column], row: str, what: str = "  runs") -> None:
    """The runs of `row` executed on a standby, and those taken back from one (judged gone)."""
    if not any(column.elsewhere for column in columns.values()):
        return
    for label, counts in ((" on standbys", "elsewhere"), (" taken back", "taken_back")):
        cells = [fmt(getattr(c, counts).get(row)) if c.elsewhere else "-" for c in columns.values()]
        print(f"{what + label:28}" + "".join(f"{cell:>24}" for cell in cells))


async def main(argv: list[str]) -> None:
    args = parse_args("Durable runs per journal backend, and DBOS on the same PostgreSQL.", argv)
    counts = QUICK if args.quick else FULL
    turns = busy_turns()
    print(machine_line())
    print(
        f"3-step async runs of a workflow file; {counts.sequential} one at a time, then N in "
        f"flight; {counts.busy:,} in flight whose steps each do about {STEP_MS:g} ms of pure "
        f"Python ({turns:,} loop turns); {counts.parked} runs resumed one at a time (after "
        f"{counts.warmup} warm-up)"
    )
    columns: dict[str, Column] = {}
    with fresh_dir() as tmp:
        flows = write_flows(tmp / "flows", turns)
        columns["SQLite"] = await ours(tmp / "journal.db", counts, None, flows)
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
            columns.update(await ours_postgres(cluster, counts, flows))
            skip = dbos_unavailable(args.no_dbos, import_dbos())
            if skip:
                print(skip)
            else:
                version = importlib.metadata.version("dbos")
                dbos_url = cluster.create_database("dbos")
                columns[f"DBOS {version}, PostgreSQL"] = await guarded(
                    "DBOS", lambda: dbos_column(dbos_url, counts, turns)
                )
            taken = take_over(cluster.create_database("takeover"), counts)
    print(
        f"PostgreSQL, 3 daemons: this process's runtime is the active daemon (the coordinator),"
        f" two `orchestrator up` standbys on the same folder and journal execute the runs it "
        f"offers past its share (a third of those in flight each); all {os.cpu_count()} cores"
        f" are shared by the 3 daemons, PostgreSQL and this process's client side"
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

"""Event-to-resume latency and routing cost of paused runs: our runtime against DBOS Transact.

Prints figures; it is not a test. Run: ``python bench/bench_events.py [--quick] [--no-dbos]``.
Every measurement opens a fresh journal (or DBOS system database) in a temporary folder.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from common import (
    dbos_launched,
    dbos_sqlite_settings,
    dbos_unavailable,
    default_synchronous,
    fmt,
    fresh_dir,
    import_dbos,
    machine_line,
    parse_args,
    percentile,
    quiet_pool_warnings,
)

from orchestrator import Runtime, StepContext, Workflow

PAYMENT = "payment.received"
State = dict[str, Any]


async def wait_for_payment(state: State, ctx: StepContext) -> Any:
    return ctx.pause(event=PAYMENT, where={"order_id": ("==", state["order_id"])}, into="payment")


async def done(state: State) -> State:
    return {**state, "done": True}


ORDERS = Workflow(id="orders", pipelines={"pay": [wait_for_payment, done]})


@dataclass(frozen=True)
class DbosCase:
    poll: float | None  # seconds between DBOS's message polls; None: its default (1 s)
    waiting: int  # DBOS workflows blocked in recv at once
    samples: int  # sends timed one at a time (to the first workflows started)


@dataclass(frozen=True)
class Counts:
    latency: int  # runs parked, then resumed one at a time (each one a sample)
    warmup: int  # runs resumed first and left out of the figures
    parked: tuple[int, ...]  # routing: runs left parked while events are emitted
    emits: int  # routing: events emitted per measurement (matching and matching nothing)
    dbos: tuple[DbosCase, ...]
    dbos_warmup: int  # sends before the timed ones, left out of the figures


# The DBOS config key behind its SQLite message poll (`DBOSConfig`, default 1.0 s), and the
# faster setting measured next to the default.
DBOS_POLL_KEY = "notification_listener_polling_interval_sec"
DBOS_FAST_POLL = 0.010

FULL = Counts(
    1_000,
    50,
    (100, 1_000, 10_000),
    1_000,
    (
        DbosCase(None, 1_000, 100),
        DbosCase(DBOS_FAST_POLL, 1_000, 200),
        DbosCase(DBOS_FAST_POLL, 100, 50),
    ),
    5,
)
QUICK = Counts(
    200, 20, (100, 1_000), 200, (DbosCase(None, 100, 10), DbosCase(DBOS_FAST_POLL, 100, 30)), 2
)
RECV_TIMEOUT = 3_600.0  # seconds: no DBOS workflow times out during a measurement


def order(i: int) -> State:
    return {"order_id": f"order-{i}", "amount": 10}


# -- ours ----------------------------------------------------------------------------------


class Completions:
    """`rt.on("run.completed")`: the handler runs once the completion has committed."""

    def __init__(self, rt: Runtime) -> None:
        self.count = 0
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._goal: tuple[int, asyncio.Future[float]] | None = None
        rt.on("run.completed", self._completed)

    def _completed(self, _name: str, payload: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.count += 1
        future = self._waiting.pop(payload["run_id"], None)
        if future is not None and not future.done():
            future.set_result(now)
        if self._goal is not None and self.count >= self._goal[0]:
            self._goal[1].set_result(now)
            self._goal = None

    def of(self, run_id: str) -> asyncio.Future[float]:
        """The perf_counter() at which `run_id`'s completion was committed."""
        future = self._waiting[run_id] = asyncio.get_running_loop().create_future()
        return future

    def until(self, count: int) -> Awaitable[float]:
        """The perf_counter() at which `count` runs in all have completed."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.count >= count:
            future.set_result(time.perf_counter())
        else:
            self._goal = (count, future)
        return future


async def park(rt: Runtime, first: int, n: int) -> dict[str, str]:
    """Start runs for orders first..first+n-1 and return once all are paused: order -> run."""
    results = await asyncio.gather(
        *(rt.invoke("orders", "pay", order(i)) for i in range(first, first + n))
    )
    bad = [r for r in results if r.status != "paused"]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not pause, e.g. {bad[0]!r}")
    return {r.state["order_id"]: r.run_id for r in results}


@dataclass
class Latency:
    completed: list[float]  # seconds, emit -> completion committed
    emitted: list[float]  # seconds, emit -> emit() returned (the event committed)


async def ours_latency(counts: Counts) -> Latency:
    with fresh_dir() as tmp:
        async with Runtime(tmp / "journal.db", workflows=[ORDERS]) as rt:
            done_at = Completions(rt)
            runs = await park(rt, 0, counts.warmup + counts.latency)
            completed, emitted = [], []
            for i, (order_id, run_id) in enumerate(runs.items()):
                finished = done_at.of(run_id)
                start = time.perf_counter()
                await rt.emit(PAYMENT, {"order_id": order_id, "amount": 10})
                returned = time.perf_counter()
                end = await finished
                if i >= counts.warmup:
                    completed.append(end - start)
                    emitted.append(returned - start)
            await check_completed(rt, runs)
    return Latency(completed, emitted)


async def check_completed(rt: Runtime, runs: dict[str, str]) -> None:
    finished = await rt.list_runs(status="completed", limit=-1)
    if len(finished) != len(runs):
        raise RuntimeError(f"{len(finished)} of {len(runs)} runs completed")
    for info in finished[:3]:
        if info.state.get("payment", {}).get("order_id") != info.state["order_id"]:
            raise RuntimeError(f"run {info.run_id} resumed with the wrong event: {info.state}")


@dataclass
class Routing:
    parked: int
    seconds_to_park: float
    nomatch_rate: float  # emits/s
    nomatch_cpu_us: float  # process CPU µs per emit (all threads)
    match_rate: float  # emits/s, each resuming one run, until the last one completed
    match_cpu_us: float
    route_us: float  # the dispatcher's route() alone, µs per event matching nothing


ROUNDS = 5  # routing: emits are timed in rounds, no match and match alternating


async def ours_routing(parked: int, emits: int) -> Routing:
    """`parked` runs stay parked throughout: `emits` more are parked and resumed.

    The emits go in `ROUNDS` rounds, each a block of events matching nothing then a block
    resuming runs, so that a burst of load from elsewhere hits both kinds alike; the
    median round of each kind is kept.
    """
    with fresh_dir() as tmp:
        async with Runtime(tmp / "journal.db", workflows=[ORDERS]) as rt:
            done_at = Completions(rt)
            start = time.perf_counter()
            runs = await park(rt, 0, parked + emits)
            seconds_to_park = time.perf_counter() - start
            targets = list(runs)[parked:]
            per_round = emits // ROUNDS
            nomatch, match = [], []
            for r in range(ROUNDS):
                first = r * per_round
                nomatch.append(
                    await timed_emits(
                        per_round,
                        lambda i, first=first: rt.emit(
                            PAYMENT, {"order_id": f"nobody-{first + i}", "amount": 10}
                        ),
                    )
                )
                finished = done_at.until(first + per_round)
                match.append(
                    await timed_emits(
                        per_round,
                        lambda i, first=first: rt.emit(
                            PAYMENT, {"order_id": targets[first + i], "amount": 10}
                        ),
                        finished,
                    )
                )
            route_us = time_route(rt, emits)
            left = parked + emits - ROUNDS * per_round
            if rt._control is not None and len(rt._control.parking.paused) != left:
                raise RuntimeError(f"{len(rt._control.parking.paused)} runs parked, not {left}")
    (nomatch_rate, nomatch_cpu), (match_rate, match_cpu) = median(nomatch), median(match)
    return Routing(
        parked, seconds_to_park, nomatch_rate, nomatch_cpu, match_rate, match_cpu, route_us
    )


def median(rounds: list[tuple[float, float]]) -> tuple[float, float]:
    """The median (rate, CPU µs) round, by rate."""
    return sorted(rounds)[len(rounds) // 2]


async def timed_emits(
    n: int, emit: Callable[[int], Awaitable[str]], last: Awaitable[float] | None = None
) -> tuple[float, float]:
    """Emits/s and CPU µs per emit for n sequential emits (until `last`, when given)."""
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(n):
        await emit(i)
    end = await last if last is not None else time.perf_counter()
    return n / (end - start), (time.process_time() - cpu) / n * 1e6


def time_route(rt: Runtime, n: int) -> float:
    """µs per `Dispatcher.route` (internal) for events matching nothing: routing, no I/O."""
    assert rt._control is not None
    route = rt._control.dispatcher.route
    events = [{"order_id": f"nobody-{i}", "amount": 10} for i in range(n)]
    start = time.perf_counter()
    for data in events:
        route(PAYMENT, data, "bench")
    return (time.perf_counter() - start) / n * 1e6


# -- DBOS ----------------------------------------------------------------------------------


class Dbos:
    """DBOS, with a workflow that blocks in recv_async, then runs one step."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls

        @cls.step()
        async def dbos_done(state: State) -> State:
            return {**state, "done": True}

        @cls.workflow()
        async def dbos_wait_for_payment(order_id: str) -> State:
            payment = await cls.recv_async(PAYMENT, timeout_seconds=RECV_TIMEOUT)
            return await dbos_done({"order_id": order_id, "payment": payment})

        self.workflow = dbos_wait_for_payment
        self.pool = quiet_pool_warnings()


@dataclass
class DbosLatency:
    poll: str
    waiting: int
    completed: list[float]
    seconds_to_block: float  # to start `waiting` workflows and see all of them in recv


async def dbos_latency(dbos: Dbos, case: DbosCase, warmup: int) -> DbosLatency:
    """`case.waiting` workflows blocked in recv; `case.samples` sends timed one at a time."""
    from dbos import SetWorkflowID

    poll, n = case.poll, case.waiting
    settings = {} if poll is None else {DBOS_POLL_KEY: poll}
    with fresh_dir() as tmp, dbos_launched(dbos.cls, tmp / "dbos.sqlite", **settings) as inst:
        gate = asyncio.Semaphore(20)  # DBOS's pool has 20 connections
        began = time.perf_counter()

        async def start(i: int) -> Any:
            async with gate:
                with SetWorkflowID(f"order-{i}"):
                    return await dbos.cls.start_workflow_async(dbos.workflow, f"order-{i}")

        handles = await asyncio.gather(*(start(i) for i in range(n)))
        waiters = inst._sys_db.notifications_map
        deadline = time.monotonic() + 120
        while len(waiters.snapshot()) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(waiters.snapshot())} of {n} DBOS workflows in recv")
            await asyncio.sleep(0.05)
        seconds_to_block = time.perf_counter() - began
        completed = []
        for i, handle in enumerate(handles[: warmup + case.samples]):
            start_at = time.perf_counter()
            await dbos.cls.send_async(handle.get_workflow_id(), {"amount": 10}, PAYMENT)
            result = await handle.get_result()
            if i >= warmup:
                completed.append(time.perf_counter() - start_at)
            if result["payment"] != {"amount": 10}:
                raise RuntimeError(f"DBOS workflow {i} ended with {result!r}")
        rest = handles[warmup + case.samples :]
        for handle in rest:  # release the others, so that nothing is left blocked
            await dbos.cls.send_async(handle.get_workflow_id(), {"amount": 10}, PAYMENT)
        await asyncio.gather(*(handle.get_result() for handle in rest))
    label = "default (1 s)" if poll is None else f"{poll * 1000:g} ms"
    return DbosLatency(label, n, completed, seconds_to_block)


# -- printing ------------------------------------------------------------------------------


def ms(values: list[float], p: float | None) -> float:
    return (max(values) if p is None else percentile(values, p)) * 1000


def print_latency(ours: Latency, theirs: list[DbosLatency]) -> None:
    print(f"{'':58}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'samples':>9}")
    rows = [
        ("ours: emit -> completion committed", ours.completed),
        ("ours: emit -> emit() returned (event committed)", ours.emitted),
    ]
    rows += [
        (f"DBOS, poll {t.poll}, {t.waiting:,} waiting: send -> result", t.completed) for t in theirs
    ]
    for label, values in rows:
        cells = "".join(f"{fmt(ms(values, p), 2):>10}" for p in (50, 99, None))
        print(f"{label:58}{cells}{len(values):>9,}")
    for t in theirs:
        cells = []
        for p in (50, 99):
            mine, other = ms(ours.completed, p), ms(t.completed, p)
            cells.append(f"p{p} {mine / other:.3g}x (DBOS {other / mine:,.0f} times slower)")
        print(f"ours/DBOS, poll {t.poll}, {t.waiting:,} waiting: " + ", ".join(cells))


def print_routing(rows: list[Routing]) -> None:
    print(
        f"{'runs parked':>12}{'park s':>8}{'no match/s':>12}{'CPU µs':>8}"
        f"{'match/s':>10}{'CPU µs':>8}{'route() µs':>12}"
    )
    for r in rows:
        print(
            f"{r.parked:>12,}{r.seconds_to_park:>8.2f}{fmt(r.nomatch_rate):>12}"
            f"{fmt(r.nomatch_cpu_us):>8}{fmt(r.match_rate):>10}{fmt(r.match_cpu_us):>8}"
            f"{fmt(r.route_us, 2):>12}"
        )


def print_header(counts: Counts, quick: bool) -> None:
    print(machine_line())
    print(
        f"ours: synchronous={default_synchronous()} (the Runtime default), WAL; runs of "
        f"[wait_for_payment, done], paused on {PAYMENT} where order_id == its own"
    )
    print(
        f"counts{' (--quick)' if quick else ''}: latency {counts.latency:,} runs after "
        f"{counts.warmup} warm-up; routing {counts.emits:,} emits at "
        + ", ".join(f"{n:,}" for n in counts.parked)
        + " runs parked"
    )


async def main(argv: list[str]) -> None:
    args = parse_args("Event-to-resume latency and routing cost: ours against DBOS.", argv)
    counts = QUICK if args.quick else FULL
    print_header(counts, args.quick)
    latency = await ours_latency(counts)
    routing = [await ours_routing(n, counts.emits) for n in counts.parked]
    theirs: list[DbosLatency] = []
    cls = None if args.no_dbos else import_dbos()
    skipped = dbos_unavailable(args.no_dbos, cls, "its row")
    if skipped:
        print(skipped)
    else:
        dbos = Dbos(cls)
        print(
            f"DBOS {importlib.metadata.version('dbos')}: SQLite system database with "
            f"{dbos_sqlite_settings(cls)} (its defaults); workflows blocked in recv_async, "
            f"sends timed after {counts.dbos_warmup} warm-up; poll {DBOS_FAST_POLL * 1000:g} ms "
            f"= DBOSConfig {DBOS_POLL_KEY}={DBOS_FAST_POLL}"
        )
        for case in counts.dbos:
            theirs.append(await dbos_latency(dbos, case, counts.dbos_warmup))
            print(
                f"DBOS, poll {theirs[-1].poll}: {case.waiting:,} workflows started and blocked "
                f"in recv_async in {theirs[-1].seconds_to_block:.1f} s"
            )
        if dbos.pool.count:
            print(f"DBOS: {dbos.pool.count:,} 'connection pool exhausted' waits, retried")
    print()
    print("1. Event-to-resume latency, one event at a time (goal: ours p99 under 5 ms)")
    print_latency(latency, theirs)
    print()
    print(
        f"2. Routing: {counts.emits:,} sequential emits in {ROUNDS} rounds (median round): events "
        "matching nothing, and events each resuming one run to its completion (goal: flat)"
    )
    print_routing(routing)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

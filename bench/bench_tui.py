"""The dashboard on a big journal: first paint, filters, live updates, CPU per poll.

Prints figures; it is not a test. Run: ``python bench/bench_tui.py [--runs N] [--quick]``.

A journal is seeded with `--runs` runs (100,000 by default) by a real `Runtime` (at
``synchronous="NORMAL"``: the rows are the same, only the fsyncs are skipped) invoking
cheap two-step workflows in concurrent batches of 1,000: four workflows, 82% completed,
10% failed (``STEP_FAILED``), 6% paused on an event, 2% aborted while paused, each with its
checkpoints, timeline and waits. The dashboard (`tui.app.DashboardApp`, at its default
100 ms poll) is then driven headless in this process with ``app.run_test(size=(140, 45))``:

- **first paint**: from creating the app until its runs table holds the first page (a
  garbage collection first, as a new process would have no garbage); next to it, the same
  start on a missing journal (Textual's own start-up of the screen);
- **status filter** / **search**: from setting the status selector (or the search box's
  value) until the table holds exactly the first page of the matching runs, which this
  script reads beforehand with plain ``sqlite3``;
- **commit -> row**: another process (this script with ``--writer``: a real `Runtime` on
  the journal) invokes one run at a time, 0.5-1 s apart, then 0.1-0.3 s apart; the latency
  runs from the run's ``created_at`` (wall time, written just before its commit) until its
  row tops the table;
- **CPU per poll tick**: process CPU time (`time.process_time`) over N calls of the app's
  poll / N, with the app's own timer slowed to once an hour: idle (nothing committed), a
  visible run's status changed (cells updated in place), a new run (the page shifts: the
  table is rebuilt). Each changed tick includes letting Textual settle and repaint. Then the
  whole process at the default 100 ms poll for `--seconds`, idle and with an idle daemon
  writing (it commits its lease heartbeat every second), then again with 5 just-paused runs
  on top (their durations change every second).

The table is checked every millisecond in the same event loop, so "shown" means the rows
are in the `DataTable`; Textual paints them on its next refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import sqlite3
import sys
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from common import fmt, latency_row, machine_line
from textual.css.query import NoMatches
from textual.widgets import DataTable, Input, Select

from orchestrator import Runtime, Workflow
from tui.app import DashboardApp
from tui.runs import PAGE_SIZE

SIZE = (140, 45)
WORKFLOW_IDS = ("orders", "billing", "reports", "ingest")
GOALS_MS = {"live": 250, "paint": 200}


async def accept(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "accepted": True}


async def charge(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "charged": state["n"] * 3}


async def decline(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"card declined for order {state['n']}")


def wait_for_go(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go", where={"n": ("==", state["n"])}, into="go")


WORKFLOWS = [
    Workflow(
        id=workflow_id,
        triggers={},
        pipelines={
            "new": [accept, charge],
            "fail": [accept, decline],
            "hold": [accept, wait_for_go],
        },
    )
    for workflow_id in WORKFLOW_IDS
]


# -- seeding ---------------------------------------------------------------------------------


def _kind(n: int) -> str:
    slot = n % 50
    if slot < 5:
        return "fail"
    if slot < 9:
        return "hold"  # 3 of them stay paused, 1 is aborted
    return "new"


async def seed(db: Path, runs: int, batch: int = 1_000) -> float:
    """`runs` runs through a real Runtime; returns the seconds it took."""
    started = time.perf_counter()
    async with Runtime(db, workflows=WORKFLOWS, synchronous="NORMAL") as rt:
        for first in range(0, runs, batch):
            numbers = range(first, min(runs, first + batch))
            results = await asyncio.gather(
                *(
                    rt.invoke(WORKFLOW_IDS[n % len(WORKFLOW_IDS)], _kind(n), {"n": n})
                    for n in numbers
                )
            )
            doomed = [r.run_id for n, r in zip(numbers, results, strict=True) if n % 50 == 8]
            await asyncio.gather(*(rt.abort(run_id) for run_id in doomed))
            if first // batch % 10 == 9:
                print(f"  seeded {first + batch:,} runs", flush=True)
    return time.perf_counter() - started


def count_runs(db: Path) -> int:
    try:
        return int(_read(db, "SELECT count(*) FROM runs")[0][0])
    except sqlite3.Error:
        return 0


def _read(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- the other writer: a Runtime in its own process ---------------------------------------------


async def writer_main(db: Path) -> None:
    """``--writer DB``: a Runtime on DB that obeys one command per stdin line."""
    loop = asyncio.get_running_loop()
    async with Runtime(db, workflows=WORKFLOWS) as rt:
        print("ready", flush=True)
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
            if line[0] == "new":
                print((await rt.invoke("orders", "new", {"n": -1})).run_id, flush=True)
            elif line[0] == "hold":
                print((await rt.invoke("orders", "hold", {"n": -1})).run_id, flush=True)
            elif line[0] == "abort":
                await rt.abort(line[1])
                print("ok", flush=True)


class Writer:
    """This script with ``--writer``, driven line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()
        return (await self.proc.stdout.readline()).decode().strip()


@contextlib.asynccontextmanager
async def writer(db: Path) -> AsyncIterator[Writer]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--writer",
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the writer process did not start")
        yield Writer(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()


# -- measuring ------------------------------------------------------------------------------


async def until(check: Callable[[], object], limit: float = 60.0) -> float:
    """Poll `check` every millisecond; the perf_counter time it first held."""
    deadline = time.perf_counter() + limit
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out waiting for {check}")
        await asyncio.sleep(0.001)
    return time.perf_counter()


_TABLES: weakref.WeakKeyDictionary[DashboardApp, DataTable[Any]] = weakref.WeakKeyDictionary()


def table_keys(app: DashboardApp) -> list[str | None]:
    """The run ids in the app's runs table, in order (checked every millisecond: kept cheap)."""
    table = _TABLES.get(app)
    if table is None:
        try:
            table = _TABLES[app] = app.screen.query_one("#runs", DataTable)
        except NoMatches:  # not mounted yet
            return []
    return [row.key.value for row in table.ordered_rows]


def first_page(db: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[str | None]:
    rows = _read(
        db, f"SELECT run_id FROM runs WHERE {where} ORDER BY id DESC LIMIT {PAGE_SIZE}", params
    )
    return [row[0] for row in rows]


async def first_paint(db: Path, samples: int) -> list[float]:
    """Creating the app until its table holds the first page (ms)."""
    expected = first_page(db)
    times = []
    for sample in range(samples + 1):  # the first is a warm-up
        gc.collect()  # a new process has no garbage from the apps before it
        started = time.perf_counter()
        app = DashboardApp(db)
        async with app.run_test(size=SIZE):
            shown = await until(lambda app=app: table_keys(app) == expected)
        if sample:
            times.append((shown - started) * 1000)
    return times


async def bare_start(samples: int) -> list[float]:
    """Creating the app on a missing journal until it runs (ms): Textual's part alone."""
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for sample in range(samples + 1):
            gc.collect()
            started = time.perf_counter()
            async with DashboardApp(Path(tmp) / "missing.db").run_test(size=SIZE):
                if sample:
                    times.append((time.perf_counter() - started) * 1000)
    return times


def _search_cases(db: Path) -> list[tuple[str, list[str | None]]]:
    like = "(run_id LIKE ? OR workflow_id LIKE ? OR trigger_id LIKE ? OR error LIKE ?"
    like += " OR error_code LIKE ?)"
    probe = _read(db, "SELECT run_id FROM runs WHERE id = (SELECT max(id) / 2 FROM runs)")[0][0]
    cases = []
    for term in ("bill", "declined", probe[:8], "order 4242", "zzz-nothing"):
        cases.append((term, first_page(db, like, (f"%{term}%",) * 5)))
    return cases


async def filters(db: Path, samples: int) -> tuple[list[float], list[float]]:
    """Status filter and search latencies (ms), each from a settled table of all runs."""
    statuses = ["failed", "paused", "aborted", "completed"]
    by_status = {s: first_page(db, "status = ?", (s,)) for s in statuses}
    searches = _search_cases(db)
    everything = first_page(db)
    status_ms: list[float] = []
    search_ms: list[float] = []
    app = DashboardApp(db)
    async with app.run_test(size=SIZE) as pilot:

        async def settled() -> None:  # back to all runs, repainted, nothing pending
            await until(lambda: table_keys(app) == everything)
            await pilot.pause(0.2)

        await settled()
        select = app.screen.query_one("#status", Select)
        search = app.screen.query_one("#search", Input)
        for sample in range(samples):
            status = statuses[sample % len(statuses)]
            started = time.perf_counter()
            select.value = status
            shown = await until(lambda s=status: table_keys(app) == by_status[s])
            status_ms.append((shown - started) * 1000)
            select.clear()
            await settled()
        for sample in range(samples):
            term, expected = searches[sample % len(searches)]
            started = time.perf_counter()
            search.value = term
            shown = await until(lambda e=expected: table_keys(app) == e)
            search_ms.append((shown - started) * 1000)
            search.value = ""
            await settled()
    return status_ms, search_ms


async def commit_to_row(
    db: Path, commits: int, rng: random.Random, apart: tuple[float, float]
) -> list[float]:
    """Milliseconds from a run's creation in another process to its row in the table."""
    shown_at: dict[str, float] = {}
    app = DashboardApp(db)
    async with writer(db) as other, app.run_test(size=SIZE):
        await until(lambda: len(table_keys(app)) == PAGE_SIZE)
        for _ in range(commits + 3):  # the first 3 are a warm-up
            await asyncio.sleep(rng.uniform(*apart))
            top = table_keys(app)[0]
            # The row may show before the writer's reply arrives: watch the top row meanwhile.
            sending = asyncio.ensure_future(other.send("new"))
            await until(lambda top=top: table_keys(app)[0] != top)
            seen, new_top = time.time(), table_keys(app)[0]
            run_id = await sending
            if new_top != run_id:
                raise RuntimeError(f"expected {run_id} on top, found {new_top}")
            shown_at[run_id] = seen
    marks = ", ".join("?" * len(shown_at))
    created = dict(
        _read(db, f"SELECT run_id, created_at FROM runs WHERE run_id IN ({marks})", tuple(shown_at))
    )
    return [(seen - created[run_id] / 1e6) * 1000 for run_id, seen in shown_at.items()][3:]


async def _settled_poll(app: DashboardApp, pilot: Any) -> float:
    """CPU seconds of one poll that reloads, then of Textual settling and repainting."""
    await until(lambda: time.monotonic() >= app._quiet_until)
    started = time.process_time()
    await app._poll()
    await pilot.pause()
    return time.process_time() - started


async def cpu_per_tick(db: Path, ticks: int, changes: int) -> dict[str, float]:
    """CPU ms per poll tick: idle, one visible row's status changed, one new run."""
    figures: dict[str, float] = {}
    app = DashboardApp(db, poll_seconds=3600)  # polled by hand below
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(table_keys(app)) == PAGE_SIZE)
        await pilot.pause()
        started = time.process_time()
        for _ in range(ticks):
            await app._poll()
        figures["idle (nothing committed)"] = (time.process_time() - started) / ticks * 1000
        async with writer(db) as other:
            held = [await other.send("hold") for _ in range(changes)]
            await _settled_poll(app, pilot)
            if held[-1] != table_keys(app)[0]:
                raise RuntimeError("the paused runs are not on the first page")
            spent = 0.0
            for run_id in held:
                await other.send(f"abort {run_id}")
                spent += await _settled_poll(app, pilot)
            figures["a visible run's status changed"] = spent / changes * 1000
            spent = 0.0
            for _ in range(changes):
                run_id = await other.send("new")
                spent += await _settled_poll(app, pilot)
                if table_keys(app)[0] != run_id:
                    raise RuntimeError("the new run is not on top after the poll")
            figures["a new run (page shifts, table rebuilt)"] = spent / changes * 1000
    return figures


async def whole_process(db: Path, seconds: float, with_writer: bool, paused: int = 0) -> float:
    """Process CPU ms per 100 ms poll tick over `seconds`, at the default poll.

    With `paused` runs started first (at the top of the page), durations that grow every
    second are on screen.
    """
    app = DashboardApp(db)
    async with contextlib.AsyncExitStack() as stack:
        if with_writer or paused:
            other = await stack.enter_async_context(writer(db))
            held = [await other.send("hold") for _ in range(paused)]
            if not with_writer:
                await stack.aclose()  # the runs stay paused; no daemon from here on
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: len(table_keys(app)) == PAGE_SIZE)
            if paused and table_keys(app)[0] != held[-1]:
                raise RuntimeError("the paused runs are not on top")
            await pilot.pause(0.5)
            started = time.process_time()
            await asyncio.sleep(seconds)
            return (time.process_time() - started) / (seconds / 0.1) * 1000


def row(label: str, values: list[float], goal: int | None = None) -> str:
    over = "" if goal is None else f"{sum(v > goal for v in values):>7}"
    return latency_row(label, values, label_width=44, count_width=5) + over


async def measure(db: Path, args: argparse.Namespace) -> None:
    rng = random.Random(7)
    header = f"{'latency (ms)':44}{'n':>5}{'median':>9}{'p95':>9}{'max':>9}{'> goal':>7}"
    print(header)
    paint = await first_paint(db, args.samples)
    print(row(f"first paint (goal {GOALS_MS['paint']})", paint, GOALS_MS["paint"]), flush=True)
    print(row("  start with no journal (Textual's part)", await bare_start(args.samples)))
    status_ms, search_ms = await filters(db, args.samples)
    print(row(f"status filter (goal {GOALS_MS['paint']})", status_ms, GOALS_MS["paint"]))
    print(row(f"search (goal {GOALS_MS['paint']})", search_ms, GOALS_MS["paint"]), flush=True)
    for apart in ((0.5, 1.0), (0.1, 0.3)):
        live = await commit_to_row(db, args.commits, rng, apart)
        label = f"commit -> row, {apart[0]:g}-{apart[1]:g} s apart (goal {GOALS_MS['live']})"
        print(row(label, live, GOALS_MS["live"]), flush=True)
    print()
    print(f"{'CPU per poll tick (ms of process time)':44}{'ticks':>5}{'per tick':>9}")
    for label, value in (await cpu_per_tick(db, args.ticks, args.changes)).items():
        n = args.ticks if label.startswith("idle") else args.changes
        print(f"{label:44}{n:>5}{fmt(value, 2):>9}", flush=True)
    for with_writer, paused, label in (
        (False, 0, "whole process, idle journal"),
        (True, 0, "whole process, idle daemon"),
        (False, 5, "  idle journal, 5 young paused runs shown"),
        (True, 0, "  idle daemon, the same 5 shown"),
    ):
        value = await whole_process(db, args.seconds, with_writer, paused)
        print(f"{label:44}{int(args.seconds * 10):>5}{fmt(value, 2):>9}", flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="The dashboard on a big journal.")
    parser.add_argument("--runs", type=int, default=100_000, help="runs seeded (100,000)")
    parser.add_argument("--samples", type=int, default=20, help="paint/filter samples (20)")
    parser.add_argument("--commits", type=int, default=50, help="live commits measured (50)")
    parser.add_argument("--ticks", type=int, default=500, help="idle poll ticks (500)")
    parser.add_argument("--changes", type=int, default=30, help="changed poll ticks (30)")
    parser.add_argument("--seconds", type=float, default=10.0, help="whole-process span (10)")
    parser.add_argument("--journal", type=Path, help="keep the seeded journal here; reuse it")
    parser.add_argument("--quick", action="store_true", help="10,000 runs, small counts")
    parser.add_argument("--writer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer is not None:
        asyncio.run(writer_main(args.writer))
        return
    if args.quick:
        args.runs, args.samples, args.commits, args.ticks = 10_000, 5, 10, 100
        args.changes, args.seconds = 10, 3.0
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        db = args.journal or Path(tmp) / "journal.db"
        have = count_runs(db)
        if have < args.runs:
            print(f"seeding {args.runs - have:,} runs with a real Runtime ...", flush=True)
            took = asyncio.run(seed(db, args.runs - have))
            print(f"seeded in {took:.1f} s ({(args.runs - have) / took:,.0f} runs/s)")
        statuses = _read(db, "SELECT status, count(*) FROM runs GROUP BY status ORDER BY 2 DESC")
        print(
            f"journal: {count_runs(db):,} runs ("
            + ", ".join(f"{s} {n:,}" for s, n in statuses)
            + f"), {db.stat().st_size / 1e6:.0f} MB; dashboard {SIZE[0]}x{SIZE[1]}, headless"
        )
        print()
        asyncio.run(measure(db, args))


if __name__ == "__main__":
    main(sys.argv[1:])

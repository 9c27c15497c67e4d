"""The journal at scale: bytes per run with large states, and a journal of 1,000,000 runs.

Printed, each beside its raw ceiling where there is one:

- **bytes per run**: 3-step runs over a 2 KB state (80 fields) whose steps each change one
  field, run one after another; the journal's size (after a TRUNCATE checkpoint) per run.
  Ours (checkpoints as patches against a snapshot), the same with every checkpoint whole
  (what the journal stored before), and the floor: the input's and the changes' JSON.
- **new runs/s** on an empty journal and on one of 1,000,000 runs, sequential and
  N concurrent (3 steps, small state), with the raw ceiling on each: the same statements
  the writer runs for such a run (ids made the same way), replayed with plain sqlite3
  (WAL, synchronous=FULL), one transaction per run (sequential) or per 100 runs.
- **journal bytes written per run** while the concurrent runs ran (WAL frames), on each.
- on the big journal: `runs --status S` of a rare status (the CLI's query, in process),
  the dashboard's first paint queries (status counts, workflows, the first page of runs
  and its total) and a search that matches a handful of runs, in ms.

The big journal is made fast with direct SQL inserts (documented here, not a path any user
takes): runs of 3 steps in final statuses, each with its input and last checkpoint and two
timeline rows, run ids made by the orchestrator's own id function, in batches of 50,000.
It is kept between runs of this script in ``$TMPDIR/bench-journal-1m.db`` (``--fresh`` to
make it again). ``--runs N`` changes its size.

``--postgres URL`` measures only the dashboard's queries, on SQLite and on the same journal
copied into PostgreSQL (`copy_journal` into the empty database URL names, kept there for
the next run), side by side.

Run: ``python bench/bench_journal_scale.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from common import fresh_dir, machine_line

from orchestrator import Runtime, Workflow
from orchestrator.clock import Clock, new_id
from orchestrator.errors import OrchestratorError
from orchestrator.journal import DashboardViews
from orchestrator.journal.sqlite import deltas
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.views import DashboardQueries
from orchestrator.journal.view_records import RunFilter
from orchestrator.records import RunStatus

State = dict[str, Any]
FIELDS = 64  # fields of the big state, each of ~30 bytes of JSON


def step(name: str) -> Any:
    """A step that changes one field: a number counts up, a string grows by one character."""

    async def change(state: State) -> State:
        value = state.get(name, 0)
        return {**state, name: value + "!" if isinstance(value, str) else value + 1}

    change.__name__ = name
    return change


BIG = Workflow(id="big", pipelines={"go": [step("field000"), step("field001"), step("field002")]})
SMALL = Workflow(id="bench", pipelines={"three": [step("n"), step("n"), step("n")]})


# Bytes of JSON of the states measured: the 2 KB; SQLite keeps two rows of up to
# ~2,030 bytes on a 4 KiB page, one of up to ~4 KB.
SIZES = (2_000, 3_000)


def big_input(size: int) -> State:
    """A state of `size` bytes of compact JSON: `FIELDS` fields of about equal length."""
    state = {f"field{i:03}": "v" * 17 for i in range(FIELDS)}
    state["field063"] += "v" * (size - len(json.dumps(state, separators=(",", ":"))))
    return state


def file_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.stat().st_size


async def bytes_per_run(runs: int, size: int, *, whole: bool) -> tuple[float, float]:
    """File bytes per run of `runs` big-state runs; and checkpoint state bytes per run."""
    with fresh_dir() as tmp, contextlib.ExitStack() as stack:
        if whole:  # every checkpoint whole and in its row, as before deltas
            stack.enter_context(mock.patch.object(deltas, "MAX_DELTA_CHARS", -1))
            stack.enter_context(mock.patch.object(deltas, "SPILL_CHARS", 1 << 62))
        db = tmp / "journal.db"
        async with Runtime(db, workflows=[BIG]) as rt:
            empty = file_bytes(db)
            for _ in range(runs):
                assert (await rt.invoke("big", "go", big_input(size))).ok
        states = (
            sqlite3.connect(db)
            .execute(
                "SELECT (SELECT sum(length(CAST(state AS BLOB))) FROM checkpoints)"
                " + (SELECT coalesce(sum(length(CAST(state AS BLOB))), 0) FROM snapshots)"
            )
            .fetchone()[0]
        )
        return (file_bytes(db) - empty) / runs, states / runs


# -- the big journal -----------------------------------------------------------------------


def big_journal(runs: int, fresh: bool) -> Path:
    """A journal of `runs` final runs, made with direct SQL (see the module docstring)."""
    path = Path(tempfile.gettempdir()) / f"bench-journal-{runs}.db"
    if path.exists() and not fresh:
        asyncio.run(_schema(path))  # migrated to this version's schema (once)
        return path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    asyncio.run(_schema(path))
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    now = Clock().now_us() - 86_400_000_000
    row = 0
    state = json.dumps({"n": 3, "note": "seeded"}, separators=(",", ":"))
    while row < runs:
        batch = min(50_000, runs - row)
        conn.execute("BEGIN")
        run_rows: list[tuple[Any, ...]] = []
        checkpoints: list[tuple[Any, ...]] = []
        timeline: list[tuple[Any, ...]] = []
        for _ in range(batch):
            row += 1
            status, error, code = _status(row)
            at = now + row * 50
            run_rows.append(
                (
                    row,
                    new_id(),
                    f"wf{row % 20:02}",
                    "go",
                    "v1",
                    status,
                    3,
                    None,
                    error,
                    code,
                    at,
                    at + 30,
                )
            )
            checkpoints.append((row, 0, None, at, at, state))
            checkpoints.append((row, 3, "s3", at + 20, at + 30, state))
            timeline.append((row, at, "runtime", "run.started"))
            timeline.append((row, at + 30, "runtime", f"run.{status}"))
        conn.executemany(
            "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, position,"
            " step, error, error_code, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            run_rows,
        )
        conn.executemany(
            "INSERT INTO checkpoints (run, position, step, started_at, ended_at, state)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            checkpoints,
        )
        conn.executemany(
            "INSERT INTO timeline (run, at, source, kind) VALUES (?, ?, ?, ?)", timeline
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"  (made a journal of {runs:,} runs in {time.perf_counter() - began:.0f} s)")
    return path


def _status(row: int) -> tuple[str, str | None, str | None]:
    if row % 100_000 == 7:
        return "rejected", "refused: the workflow was busy", "REJECTED"  # 10 in a million
    if row % 1_000 == 3:
        return "aborted", "aborted by request", "ABORTED"
    if row % 40 == 1:
        return "failed", f"step 's2' failed: ValueError: order {row} is broken", "STEP_FAILED"
    return "completed", None, None


async def _schema(path: Path) -> None:
    async with Runtime(path):
        pass


@contextlib.contextmanager
def copy_of(path: Path) -> Iterator[Path]:
    """A private copy of the big journal (its runs stay as made for the next measurement)."""
    with fresh_dir() as tmp:
        target = tmp / "journal.db"
        shutil.copyfile(path, target)
        # Written back before measuring: else the first fsyncs also flush the copy's pages.
        os.sync()
        yield target


# -- new runs ------------------------------------------------------------------------------


def wal_bytes(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def ours_rates(db: Path, sequential: int, concurrent: int) -> tuple[float, float, float]:
    """Sequential runs/s, concurrent runs/s, WAL bytes per concurrent run."""
    async with Runtime(db, workflows=[SMALL]) as rt:
        for _ in range(20):
            await rt.invoke("bench", "three", {"n": 0})
        began = time.perf_counter()
        for _ in range(sequential):
            await rt.invoke("bench", "three", {"n": 0})
        seq = sequential / (time.perf_counter() - began)
        await rt.idle()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        began = time.perf_counter()
        results = await asyncio.gather(
            *(rt.invoke("bench", "three", {"n": 0}) for _ in range(concurrent))
        )
        conc = concurrent / (time.perf_counter() - began)
        written = wal_bytes(db)
    assert all(r.state == {"n": 3} for r in results)
    return seq, conc, written / concurrent


def raw_rate(db: Path, runs: int, per_transaction: int) -> float:
    """Runs/s of a 3-step run's statements replayed with plain sqlite3 (WAL, FULL)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    row = conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0]
    clock = Clock()
    began = time.perf_counter()
    for start in range(0, runs, per_transaction):
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(min(per_transaction, runs - start)):
            row += 1
            at = clock.now_us()
            conn.execute(
                "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, step,"
                " step_started_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row, new_id(), "bench", "three", "v1", "running", "n", at, at, at),
            )
            conn.execute(
                "INSERT INTO timeline (run, position, at, source, kind, step) VALUES"
                " (?, NULL, ?, 'runtime', 'run.started', NULL)",
                (row, at),
            )
            for position in range(4):
                conn.execute(
                    "INSERT OR REPLACE INTO checkpoints (run, position, step, started_at,"
                    " ended_at, state, kind, base) VALUES (?, ?, ?, ?, ?, ?, 'step', NULL)",
                    (row, position, None if position == 0 else "n", at, at, f'{{"n":{position}}}'),
                )
                if position:
                    conn.execute(
                        "UPDATE runs SET position = max(position, ?), step = ?,"
                        " step_started_at = ?, updated_at = max(updated_at, ?) WHERE id = ?",
                        (position, "n", at, at, row),
                    )
            conn.execute(
                "UPDATE runs SET status = 'completed', error = NULL, error_code = NULL,"
                " updated_at = max(updated_at, ?) WHERE id = ?",
                (at, row),
            )
            conn.execute(
                "INSERT INTO timeline (run, position, at, source, kind, step) VALUES"
                " (?, NULL, ?, 'runtime', 'run.completed', NULL)",
                (row, at),
            )
        conn.execute("COMMIT")
    rate = runs / (time.perf_counter() - began)
    conn.close()
    return rate


# -- queries on the big journal --------------------------------------------------------------


async def query_ms(db: Path, runs: int, samples: int) -> dict[str, list[float]]:
    reader = await JournalReader.open(db)
    views = DashboardQueries(reader)
    times: dict[str, list[float]] = {}
    try:
        prefix = (await reader.list_runs(limit=1))[0].run_id[:6]
        for _ in range(samples):
            rare = await _timed(
                times,
                "runs --status rejected",
                lambda: reader.list_runs(status="rejected", limit=100),
            )
            assert len(rare) == len(range(7, runs + 1, 100_000)), len(rare)
            await _timed(
                times, "runs --status failed (common)", lambda: reader.list_runs(status="failed")
            )
            await dashboard_ms(views, runs, prefix, times)
    finally:
        await reader.close()
    return times


async def _timed(times: dict[str, list[float]], name: str, work: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = await work()
    times.setdefault(name, []).append((time.perf_counter() - began) * 1000)
    return result


async def dashboard_ms(
    views: DashboardViews, runs: int, prefix: str, times: dict[str, list[float]]
) -> None:
    """One sample of each dashboard query, added to `times` (ms)."""

    async def paint() -> None:
        await views.status_counts()
        await views.workflow_ids()
        await views.runs_page(RunFilter(), offset=0, limit=50)

    await _timed(times, "dashboard first paint queries", paint)
    page = await _timed(
        times,
        "dashboard search 'order 123' (a few match)",
        lambda: views.runs_page(RunFilter(search="order 123"), offset=0, limit=50),
    )
    assert page.total >= 1, page.total
    page = await _timed(
        times,
        "dashboard search 'wf0' (half the runs: dense)",
        lambda: views.runs_page(RunFilter(search="wf0"), offset=0, limit=50),
    )
    assert page.total == runs // 2, page.total
    await _timed(
        times,
        "dashboard search: a run id's first 6",
        lambda: views.runs_page(RunFilter(search=prefix), offset=0, limit=50),
    )
    await _timed(
        times,
        "dashboard search, no match",
        lambda: views.runs_page(RunFilter(search="nothing-like-this"), offset=0, limit=50),
    )
    await _timed(
        times,
        "dashboard runs --status failed, page 2",
        lambda: views.runs_page(RunFilter(status=RunStatus.FAILED), offset=50, limit=50),
    )


async def postgres_ms(big: Path, url: str, runs: int, samples: int) -> dict[str, list[float]]:
    """The dashboard's queries on the big journal copied into PostgreSQL at `url`.

    The copy is made once (`copy_journal` into the empty database `url` names) and kept:
    a database already holding `runs` runs is measured as it is.
    """
    from orchestrator.journal.backends import migrate_journal
    from orchestrator.journal.copy import copy_journal
    from orchestrator.journal.postgres.views import PostgresViews

    try:
        views = await PostgresViews.open(url)
    except OrchestratorError:  # not migrated yet: migrated below
        held = 0
    else:
        held = (await views.reader.fetch("SELECT count(*) FROM runs"))[0][0]
        await views.close()
    import psycopg

    if held != runs:
        began = time.perf_counter()
        await migrate_journal(url)
        await copy_journal(big, url)  # run_counts counted once at the end (`postgres/load.py`)
        print(f"  (copied the journal into PostgreSQL in {time.perf_counter() - began:.0f} s)")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum does after a copy: statistics, and
        # the visibility map index-only scans need
    views = await PostgresViews.open(url)
    times: dict[str, list[float]] = {}
    try:
        prefix = (await views.runs_page(RunFilter(), offset=0, limit=1)).rows[0].run_id[:6]
        for _ in range(samples):
            await dashboard_ms(views, runs, prefix, times)
    finally:
        await views.close()
    return times


def fresh(stack: contextlib.ExitStack, source: Path | None) -> Path:
    """An empty journal's path (`source` None) or a copy of `source`, kept by `stack`."""
    if source is None:
        return stack.enter_context(fresh_dir()) / "journal.db"
    return stack.enter_context(copy_of(source))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs in the big journal")
    parser.add_argument("--fresh", action="store_true", help="make the big journal again")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="only the dashboard's queries, on SQLite and on the big journal copied into the"
        " empty PostgreSQL database URL names (kept there for the next run)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 20_000)
    os.umask(0o077)  # journals are private (the runtime refuses others)
    print(machine_line())
    if args.postgres:
        compare_backends(args)
        return

    per = 50 if args.quick else 300
    print(f"\nbytes per run: {per} runs of 3 steps, each step changing one field of the state")
    print(f"  {'state':>7}  {'checkpoints':28}{'file/run':>10}{'states/run':>12}")
    for size in SIZES:
        floor = size + 3 * len('{"field000":"vvvvvvvvvvvvvvvvvv"}')
        for label, whole in (("whole (before)", True), ("snapshot + patches (ours)", False)):
            file, states = asyncio.run(bytes_per_run(per, size, whole=whole))
            print(f"  {size:>7,}  {label:28}{file:>10,.0f}{states:>12,.0f}")
        print(f"  {size:>7,}  {'floor: input + changes':28}{'':>10}{floor:>12,}")

    seq_n, conc_n = (100, 500) if args.quick else (300, 1_000)
    big = big_journal(args.runs, args.fresh)
    print(f"\nnew runs (3 steps, small state): sequential {seq_n}, concurrent {conc_n}")
    print(
        f"  {'journal':22}{'seq ours':>10}{'seq raw':>9}{'conc ours':>11}{'conc raw':>10}"
        f"{'WAL B/run':>11}"
    )
    rates = {}
    for name, source in (("empty", None), (f"{args.runs:,} runs", big)):
        with contextlib.ExitStack() as stack:
            ours_db, raw_db = (fresh(stack, source) for _ in range(2))
            seq, conc, wal = asyncio.run(ours_rates(ours_db, seq_n, conc_n))
            if source is None:
                asyncio.run(_schema(raw_db))
            raw_seq = raw_rate(raw_db, seq_n, 1)
            raw_conc = raw_rate(raw_db, conc_n, 100)
        rates[name] = (seq, conc)
        print(
            f"  {name:22}{seq:>10,.0f}{raw_seq:>9,.0f}{conc:>11,.0f}{raw_conc:>10,.0f}{wal:>11,.0f}"
        )
    (e_seq, e_conc), (b_seq, b_conc) = rates.values()
    print(
        f"  empty / big: sequential {e_seq / b_seq:.2f}x, concurrent {e_conc / b_conc:.2f}x"
        " (goal: within 1.3x)"
    )

    samples = 3 if args.quick else 7
    print(f"\nqueries on the journal of {args.runs:,} runs (ms, median of {samples}; max)")
    for name, values in asyncio.run(query_ms(big, args.runs, samples)).items():
        print(f"  {name:48}{statistics.median(values):>8.1f}{max(values):>8.1f}")


def compare_backends(args: argparse.Namespace) -> None:
    """`--postgres URL`: the dashboard's queries on the big journal, SQLite beside PostgreSQL."""
    samples = 3 if args.quick else 7
    big = big_journal(args.runs, args.fresh)
    lite: dict[str, list[float]] = {}

    async def on_sqlite() -> None:
        views = DashboardQueries(await JournalReader.open(big))
        try:
            prefix = (await views.runs_page(RunFilter(), offset=0, limit=1)).rows[0].run_id[:6]
            for _ in range(samples):
                await dashboard_ms(views, args.runs, prefix, lite)
        finally:
            await views.close()

    asyncio.run(on_sqlite())
    pg = asyncio.run(postgres_ms(big, args.postgres, args.runs, samples))
    print(f"\nthe dashboard's queries on {args.runs:,} runs (ms, median of {samples}; max)")
    print(f"  {'':48}{'SQLite':>16}{'PostgreSQL':>16}")
    for name, values in lite.items():
        theirs = pg[name]
        print(
            f"  {name:48}{statistics.median(values):>8.1f}{max(values):>8.1f}"
            f"{statistics.median(theirs):>8.1f}{max(theirs):>8.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

"""The dashboard's per-workflow figures and its log pane on a large journal: ms per read.

Prints figures; it is not a test. Run: ``python bench/bench_figures.py [--quick]``.

Writes a journal of 1,000,000 runs (100,000 with ``--quick``) of 20 loaded workflows
directly with SQL (one run every 200 ms of the last ~55 hours: about 430,000 in the last
24 hours; a tenth failed), one timeline row a run, and a schedule. Then times, on the
dashboard's own views (`DashboardViews`), the median and max of 20 reads each of:
`workflow_figures` (the Workflows screen: runs and failures in the last 24 h, capped at
10,000 each, p95 of the last 100 completed runs, next fire), the log pane's first read
(`log_entries`, the last 1,000 rows) and a follow-up read with nothing new. Last, the same
figures (3 reads) with the index of migration 15 dropped, to show what it is for.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import machine_line, parse_args

from orchestrator.journal import open_journal
from orchestrator.journal.sqlite.schema import migrate

WORKFLOWS = 20
READS = 20
STATUSES = ["completed"] * 8 + ["failed", "paused"]


def seed(db: Path, runs: int) -> None:
    """`runs` runs, 200 ms apart up to now, and one timeline row each."""
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, db)
    now = int(time.time() * 1_000_000)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO workflows VALUES (?, '1', NULL, '[]', 'default', 0, 1)",
        [(f"w{n:02d}",) for n in range(WORKFLOWS)],
    )
    conn.executemany(
        "INSERT INTO runs (id, run_id, workflow_id, trigger_id, version, status, created_at,"
        " updated_at) VALUES (?, ?, ?, 'go', '1', ?, ?, ?)",
        (
            (
                n,
                f"{n:032x}",
                f"w{n % WORKFLOWS:02d}",
                STATUSES[n % len(STATUSES)],
                now - (runs - n) * 200_000,
                now - (runs - n) * 200_000 + 500_000 + n % 13 * 100_000,
            )
            for n in range(1, runs + 1)
        ),
    )
    conn.execute(
        "INSERT INTO timeline (run, at, source, kind, step, message)"
        " SELECT id, updated_at, 'runtime', 'info', 'go', 'line ' || id FROM runs"
    )
    conn.execute("INSERT INTO schedule_state VALUES ('w01', 'nightly', 0, ?)", (now + 60_000_000,))
    conn.execute("COMMIT")
    conn.close()
    db.chmod(0o600)


async def timed(read: Callable[[], Awaitable[Any]], reads: int = READS) -> tuple[float, float]:
    """Median and max ms of `reads` calls of `read`."""
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        await read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


async def measure(db: Path, *, figures_only: bool = False) -> list[tuple[str, float, float]]:
    views = await open_journal(str(db)).open_views()
    since = datetime.now(UTC) - timedelta(hours=24)
    try:
        if figures_only:  # without the index: slow, so 3 reads
            return [("", *await timed(lambda: views.workflow_figures(since), 3))]
        last = (await views.log_entries(limit=1))[-1].id
        figures = await timed(lambda: views.workflow_figures(since))
        first = await timed(lambda: views.log_entries(limit=1000))
        idle = await timed(lambda: views.log_entries(after=last))
        return [
            ("workflow_figures (20 workflows)", *figures),
            ("log pane, first read (1,000 rows)", *first),
            ("log pane, nothing new", *idle),
        ]
    finally:
        await views.close()


def main(argv: list[str]) -> None:
    args = parse_args(__doc__ or "", argv)
    runs = 100_000 if args.quick else 1_000_000
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        db = Path(tmp, "j.db")
        started = time.perf_counter()
        seed(db, runs)
        took = time.perf_counter() - started
        print(f"{runs:,} runs of {WORKFLOWS} workflows seeded in {took:.0f} s")
        print(f"{'read':<36}{'median ms':>10}{'max ms':>10}")
        for name, median, worst in asyncio.run(measure(db)):
            print(f"{name:<36}{median:>10.1f}{worst:>10.1f}")
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("DROP INDEX runs_by_workflow_status")
        conn.close()
        _, median, worst = asyncio.run(measure(db, figures_only=True))[0]
        print(f"{'the same, without its index':<36}{median:>10.1f}{worst:>10.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])

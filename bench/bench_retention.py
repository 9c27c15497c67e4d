"""Retention at scale: a big prune beside a daemon at full speed, and the journal's size
over a million runs with ``[retention]`` keeping about 100,000.

**a. Prune beside a busy daemon.** A journal is seeded with N completed runs that ended two
days ago (default 500,000). Each is what a one-step run started by an event leaves: the
event, its route, the run, its input and result checkpoints, one log line. They are
written with the journal's own ops and statements (`orchestrator.journal.ops`, the SQLite
backend's SQL), 10,000 runs a transaction: seeding through a daemon would take hours.
Then ``orchestrator up`` runs on a folder with a one-step async workflow triggered by
``tick``, and this process keeps it at full speed: it commits ``tick`` events 200 a
transaction whenever fewer than 1,000 wait to be routed. A probe thread commits a tiny
write (``BEGIN IMMEDIATE``, one row, ``COMMIT``) every 20 ms and times it: the longest
probe is the longest any writer waited for the lock. After a baseline of load alone,
``orchestrator prune --older-than 1h --json`` runs in a subprocess. Printed: rows/s
pruned, the daemon's runs/s and the probe's latencies before and during, the longest
event-to-completed time of the daemon's runs in each phase, the file's size before and
after (the prune ends with incremental vacuum).

**b. Size over a million runs.** A fresh journal gets runs in rounds of 50,000 on a
simulated clock (one run a simulated second; 1 in 10 also leaves an event that matched
nothing, and 1 in 10,000 stays paused for ever with its event). After each round the
daemon's retention pass runs as the daemon runs it (`retention_cutoffs`, then the
journal's ``prune`` and ``vacuum``) with ``[retention] default`` = 100,000 s, so about
100,000 runs stay. Printed per round: runs kept, the file's size, its page count and free
pages, and the pass's time and rows deleted. Goal: flat once retention kicks in.

Run: ``python bench/bench_retention.py`` (``--quick`` for a smoke run; ``--runs``,
``--total``, ``--keep``, ``--round`` set the sizes; ``--part a`` or ``--part b`` runs one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from common import daemon, fresh_dir, machine_line, percentile

from orchestrator.clock import Clock, new_id
from orchestrator.journal import open_journal, ops
from orchestrator.journal.retention import retention_cutoffs
from orchestrator.journal.sqlite.connection import connect_writer
from orchestrator.journal.sqlite.schema import migrate
from orchestrator.journal.sqlite.statements import SQL
from orchestrator.records import RunStatus

FLOW = """\
from orchestrator import Trigger, Workflow


async def inc(state):
    return {**state, "n": state.get("n", 0) + 1}


workflow = Workflow(id="w", triggers={"go": Trigger(event="tick")}, pipelines={"go": [inc]})
"""
SEED_BATCH = 10_000
FEED_BATCH = 200
BACKLOG = 1_000
PROBE_SECONDS = 0.02
DAY_US = 86_400 * 1_000_000


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--runs", type=int, default=500_000, help="a: runs to prune")
    parser.add_argument("--baseline", type=float, default=20.0, help="a: seconds of load alone")
    parser.add_argument(
        "--dry-run", action="store_true", help="a: prune --dry-run (the reads alone)"
    )
    parser.add_argument("--total", type=int, default=1_000_000, help="b: runs in all")
    parser.add_argument("--keep", type=int, default=100_000, help="b: runs retention keeps")
    parser.add_argument("--round", type=int, default=50_000, help="b: runs between samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.baseline = 20_000, 3.0
        args.total, args.keep, args.round = 60_000, 10_000, 5_000
    return args


# -- seeding with the journal's own ops ---------------------------------------------------


def seed(db: Path, first_row: int, times: list[int], *, paused_every: int = 0) -> None:
    """One completed event-started run ending at each of `times` (µs), in big batches."""
    conn = connect_writer(db, "NORMAL")
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a seed: nothing to lose
        migrate(conn, db)
        for start in range(0, len(times), SEED_BATCH):
            writes: list[ops.Op] = []
            for i, at in enumerate(times[start : start + SEED_BATCH], start=first_row + start):
                writes += _one_run(i, at, paused=bool(paused_every) and i % paused_every == 0)
                if i % 10 == 0 and paused_every:
                    writes.append(ops.add_event(new_id(), "noise", "{}", "bench", at))
            conn.execute("BEGIN IMMEDIATE")
            for stmt, rows in ops.grouped(writes):
                conn.executemany(SQL[stmt], rows)
            conn.execute("COMMIT")
    finally:
        conn.close()


def _one_run(row: int, at: int, *, paused: bool) -> list[ops.Op]:
    event_id = new_id()
    state = json.dumps({"n": 0, "order": row})
    writes = [
        ops.add_event(event_id, "tick", state, "bench", at),
        *ops.create_run(
            row,
            new_id(),
            "w",
            "go",
            "v1",
            status=RunStatus.RUNNING,
            first_step="inc",
            state=state,
            at=at,
        ),
        ops.add_route(event_id, row, "started"),
    ]
    if paused:
        return [*writes, ops.set_status(row, RunStatus.PAUSED, at)]
    return [
        *writes,
        *ops.checkpoint(
            row, 1, "inc", started_at=at, ended_at=at, state=json.dumps({"n": 1}), next_step=None
        ),
        ops.add_timeline(row, at, "logger", "info", position=0, step="inc", message="done"),
        ops.set_status(row, RunStatus.COMPLETED, at),
    ]


def file_figures(db: Path) -> dict[str, float]:
    """The file's size (MB, after a checkpoint of the WAL where it can), pages and free pages."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    wal = Path(f"{db}-wal")
    return {
        "mb": db.stat().st_size / 1e6,
        "wal_mb": wal.stat().st_size / 1e6 if wal.exists() else 0.0,
        "pages": pages,
        "free": free,
        "runs": runs,
    }


# -- a. prune beside a busy daemon ----------------------------------------------------------


class Load:
    """Keeps the daemon busy with `tick` events and probes the write lock, in two threads."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.stop = threading.Event()
        self.probes: list[tuple[float, float]] = []  # (when, seconds)
        self.threads = [threading.Thread(target=self._feed), threading.Thread(target=self._probe)]

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=60)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _feed(self) -> None:
        conn = self._connect()
        clock = Clock()
        sql = "INSERT INTO events (event_id, type, data, source, created_at) VALUES (?,?,?,?,?)"
        while not self.stop.is_set():
            waiting = conn.execute(
                "SELECT count(*) FROM events WHERE routed_at IS NULL"
            ).fetchone()[0]
            if waiting < BACKLOG:
                rows = [
                    (new_id(), "tick", "{}", "bench", clock.now_us()) for _ in range(FEED_BATCH)
                ]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            else:
                time.sleep(0.005)
        conn.close()

    def _probe(self) -> None:
        conn = self._connect()
        while not self.stop.is_set():
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO prune_marks (name, value) VALUES ('bench-probe', 0)"
                " ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            conn.execute("COMMIT")
            self.probes.append((time.monotonic(), time.perf_counter() - started))
            time.sleep(PROBE_SECONDS)
        conn.close()

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self.threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join()


class Phase(NamedTuple):
    """What the daemon did in one phase, read back from the journal."""

    runs: int
    longest_ms: float  # from an event's commit to its run's completion
    gap_ms: float  # the longest time in which no run of the daemon completed


def daemon_runs(db: Path, since_us: int, until_us: int) -> Phase:
    """The daemon's runs completed in [since, until)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT r.updated_at, r.updated_at - e.created_at FROM runs r"
            " JOIN event_routes x ON x.run = r.id JOIN events e ON e.event_id = x.event_id"
            " WHERE r.status = 'completed' AND r.updated_at >= ? AND r.updated_at < ?"
            " ORDER BY r.updated_at",
            (since_us, until_us),
        ).fetchall()
    finally:
        conn.close()
    ends = [since_us, *(row[0] for row in rows), until_us]
    gap = max(b - a for a, b in itertools.pairwise(ends))
    return Phase(len(rows), max((row[1] for row in rows), default=0) / 1000, gap / 1000)


def part_a(args: argparse.Namespace) -> None:
    print(f"\n== a. prune {args.runs:,} runs beside a daemon at full speed ==")
    with fresh_dir() as tmp:
        db, folder = tmp / "journal.db", tmp / "flows"
        folder.mkdir()
        (folder / "flow.py").write_text(FLOW)
        old = Clock().now_us() - 2 * DAY_US
        t0 = time.perf_counter()
        seed(db, 1, [old + i for i in range(args.runs)])
        took = time.perf_counter() - t0
        print(
            f"seeded {args.runs:,} completed runs (6 rows each) with the journal's ops and SQL, "
            f"{SEED_BATCH:,} a transaction, in {took:.1f} s"
        )
        before = file_figures(db)
        clock = Clock()
        with daemon(folder, db), Load(db).running() as load:
            base_from = clock.now_us()
            base_mono = time.monotonic()
            time.sleep(args.baseline)
            base_until, prune_mono = clock.now_us(), time.monotonic()
            started = time.perf_counter()
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "orchestrator",
                    "prune",
                    "--db",
                    str(db),
                    "--older-than",
                    "1h",
                    "--json",
                    *(["--dry-run"] if args.dry_run else []),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - started
            prune_until, end_mono = clock.now_us(), time.monotonic()
        if out.returncode != 0:
            raise SystemExit(f"prune failed ({out.returncode}): {out.stderr}")
        after = file_figures(db)
        report = json.loads(out.stdout)
        base = daemon_runs(db, base_from, base_until)
        during = daemon_runs(db, base_until, prune_until)
        probes_before = [s for at, s in load.probes if base_mono <= at < prune_mono]
        probes_during = [s for at, s in load.probes if prune_mono <= at < end_mono]
    _print_a(report, wall, base, during, args.baseline, probes_before, probes_during, before, after)


def _print_a(
    report: dict[str, int],
    wall: float,
    base: Phase,
    during: Phase,
    baseline: float,
    probes_before: list[float],
    probes_during: list[float],
    before: dict[str, float],
    after: dict[str, float],
) -> None:
    rows = sum(v for k, v in report.items() if k not in ("dry_run", "pages_freed"))
    print(
        f"prune: {report['runs']:,} runs, {rows:,} rows in {wall:.1f} s = {rows / wall:,.0f} "
        f"rows/s ({report['runs'] / wall:,.0f} runs/s), {report.get('pages_freed', 0):,} "
        f"pages freed; counts {json.dumps(report, sort_keys=True)}"
    )
    print(
        f"daemon: {base.runs / baseline:,.0f} runs/s before, {during.runs / wall:,.0f} runs/s "
        f"during the prune ({during.runs:,} runs)"
    )
    print(
        f"daemon's longest stall (no run completed): {base.gap_ms:,.0f} ms before, "
        f"{during.gap_ms:,.0f} ms during; longest event-to-completed {base.longest_ms:,.0f} ms "
        f"before, {during.longest_ms:,.0f} ms during"
    )
    for label, probes in (("before", probes_before), ("during", probes_during)):
        ms = [s * 1000 for s in probes]
        print(
            f"probe write {label}: {len(ms):,} writes, median {percentile(ms, 50):.1f} ms, "
            f"p99 {percentile(ms, 99):.1f} ms, longest {max(ms):.1f} ms"
        )
    for label, fig in (("before", before), ("after", after)):
        print(
            f"file {label}: {fig['mb']:,.1f} MB, {fig['pages']:,} pages ({fig['free']:,} free), "
            f"{fig['runs']:,} runs = {fig['mb'] * 1e6 / max(1, fig['runs']):,.0f} B a run"
        )


# -- b. size over a million runs ------------------------------------------------------------


def part_b(args: argparse.Namespace) -> None:
    print(
        f"\n== b. {args.total:,} runs, [retention] keeping ~{args.keep:,} "
        f"(default = {args.keep:,} s, 1 run a simulated second), a pass every "
        f"{args.round:,} runs =="
    )
    print(f"{'runs':>10} {'kept':>8} {'MB':>8} {'pages':>8} {'free':>7} {'pass s':>7} {'rows':>9}")
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        journal = open_journal(db)
        start = Clock().now_us() - 30 * DAY_US
        for done in range(0, args.total, args.round):
            size = min(args.round, args.total - done)
            seed(
                db,
                done + 1,
                [start + (done + i) * 1_000_000 for i in range(size)],
                paused_every=10_000,
            )
            now = start + (done + size) * 1_000_000
            cutoffs, events = retention_cutoffs(now, {"default": float(args.keep)})
            began = time.perf_counter()
            counts = journal.commands.prune(cutoffs, events_before=events)
            counts["pages_freed"] = journal.commands.vacuum()
            took = time.perf_counter() - began
            rows = sum(v for k, v in counts.items() if k != "pages_freed")
            kept = sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0]
            fig = file_figures(db)
            print(
                f"{done + size:>10,} {kept:>8,} {fig['mb']:>8.1f} {fig['pages']:>8,} "
                f"{fig['free']:>7,} {took:>7.1f} {rows:>9,}",
                flush=True,
            )


def main(argv: list[str]) -> None:
    args = arguments(argv)
    print(machine_line())
    if args.part in ("a", "both"):
        part_a(args)
    if args.part in ("b", "both"):
        part_b(args)


if __name__ == "__main__":
    main(sys.argv[1:])

"""`orchestrator logs -f` latency: from a timeline row's commit to the line it prints.

Prints figures; it is not a test. Run: ``python bench/bench_logs_follow.py [--lines N] [--quick]``.

A real ``orchestrator logs -f --db JOURNAL`` subprocess follows the journal; a thread here
reads its stdout and notes the wall-clock time each line arrives. Two sources of rows:

- **direct**: this process commits one timeline row at a time on its own connection (as
  any writer does), after a random 10-60 ms pause, and notes the time of each commit:
  latency = line read - commit returned. This is the follower alone.
- **direct, after idle**: the same, a tenth as many rows, each after 1-1.5 s of quiet
  (the follower has backed off to its slowest poll).
- **daemon**: ``orchestrator up --headless`` runs a workflow whose step calls
  ``ctx.log.info`` N times, a random 10-60 ms apart; each row's ``at`` is when the step
  logged it: latency = line read - ``ctx.log`` called, so it includes the daemon's group
  commit too.

Then the follower's idle CPU: % of one core over a few seconds with nothing committed.
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import daemon, machine_line, percentile, read_journal

from orchestrator import Runtime, Step, Workflow
from orchestrator.journal import open_journal

SEQ = re.compile(r"\bseq (\d+)\b")
FLOW = """\
import asyncio
import random

from orchestrator import Trigger, Workflow


async def chatter(state, ctx):
    for n in range(state["lines"]):
        ctx.log.info(f"seq {state['first'] + n}")
        await asyncio.sleep(random.uniform(0.01, 0.06))
    return state


workflow = Workflow(
    id="chatter", triggers={"go": Trigger(event="bench.go")}, pipelines={"go": [chatter]}
)
"""


class Follower:
    """``orchestrator logs -f``: the wall-clock time each ``seq N`` line arrived."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "logs", "-f", "--limit", "1", "--db", str(db)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.seen: dict[int, float] = {}
        self.lines = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.time()
            with self._changed:
                self.lines += 1
                found = SEQ.search(line)
                if found:
                    self.seen.setdefault(int(found.group(1)), now)
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` lines have arrived (or fail after `timeout` s)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.lines >= count, timeout):
                raise SystemExit(f"the follower printed {self.lines} lines, not {count}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@contextmanager
def following(db: Path) -> Iterator[Follower]:
    follower = Follower(db)
    try:
        yield follower
    finally:
        follower.close()


async def seed(db: Path) -> int:
    """A journal with one run (its row id returned) and one timeline row of it."""

    def one(state: dict[str, object], ctx: object) -> dict[str, object]:
        ctx.log.info("ready")  # type: ignore[attr-defined]
        return state

    async with Runtime(db, workflows=[Workflow(id="w", pipelines={"go": [Step(one)]})]) as rt:
        result = await rt.invoke("w", "go", {})
    [(row,)] = read_journal(db, "SELECT id FROM runs WHERE run_id = ?", (result.run_id,))
    return int(row)


def direct(db: Path, lines: int, gap: tuple[float, float] = (0.01, 0.06)) -> list[float]:
    """Milliseconds from each row's commit to its line, rows committed one at a time.

    Each after a pause drawn from `gap` (seconds).
    """
    import asyncio

    run = asyncio.run(seed(db))
    committed: dict[int, float] = {}
    with following(db) as follower:
        follower.wait_for(1)  # the seed's row: it reads
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            for n in range(lines):
                time.sleep(random.uniform(*gap))
                conn.execute(
                    "INSERT INTO timeline (run, position, at, source, kind, step, message)"
                    " VALUES (?, 1, ?, 'logger', 'info', 'bench', ?)",
                    (run, time.time_ns() // 1000, f"seq {n}"),
                )
                committed[n] = time.time()  # autocommit: the INSERT has committed
        finally:
            conn.close()
        follower.wait_for(1 + lines)
    return [1000 * (follower.seen[n] - at) for n, at in committed.items()]


def through_daemon(tmp: Path, lines: int) -> list[float]:
    """Milliseconds from each ``ctx.log`` call in a daemon's step to its line."""
    folder, db = tmp / "flows", tmp / "daemon.db"
    folder.mkdir()
    (folder / "chatter.py").write_text(textwrap.dedent(FLOW))
    warm_up = 1_000_000  # one line first, so the follower has something to read at once
    commands = open_journal(str(db)).commands
    with daemon(folder, db):
        commands.emit_event("bench.go", {"lines": 1, "first": warm_up})
        while not read_journal(db, "SELECT 1 FROM runs WHERE status = 'completed'"):
            time.sleep(0.01)
        with following(db) as follower:
            follower.wait_for(1)  # the warm-up run's last row: it reads
            commands.emit_event("bench.go", {"lines": lines, "first": 0})
            while sum(1 for n in follower.seen if n < warm_up) < lines:
                follower.wait_for(follower.lines + 1)
        rows = read_journal(
            db, "SELECT message, at FROM timeline WHERE kind = 'info' AND message LIKE 'seq %'"
        )
    logged = {int(str(m).split()[1]): at / 1e6 for m, at in rows}
    return [1000 * (follower.seen[n] - at) for n, at in logged.items() if n < warm_up]


def idle_cpu(tmp: Path, seconds: float) -> float:
    """% of one core a follower uses over `seconds` with nothing committed."""
    from bench_idle import measure

    db = tmp / "idle.db"
    import asyncio

    asyncio.run(seed(db))
    with following(db) as follower:
        follower.wait_for(1)
        return measure(follower.proc.pid, seconds)


def summary(label: str, values: list[float]) -> str:
    return (
        f"  {label:<32} p50 {percentile(values, 50):6.1f}  p99 {percentile(values, 99):6.1f}"
        f"  max {max(values):6.1f}  ({len(values)} lines)"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200, help="lines per source (200)")
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds (10)")
    parser.add_argument("--quick", action="store_true", help="40 lines, 3 s idle")
    args = parser.parse_args(argv)
    lines, idle = (40, 3.0) if args.quick else (args.lines, args.idle)
    print(machine_line())
    print("logs -f: commit -> line printed, ms")
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as name:
        tmp = Path(name)
        print(summary("direct write (commit)", direct(tmp / "direct.db", lines)))
        print(summary("daemon ctx.log (log call)", through_daemon(tmp, lines)))
        quiet = direct(tmp / "quiet.db", max(5, lines // 10), gap=(1.0, 1.5))
        print(summary("direct, each after 1-1.5 s idle", quiet))
        print(f"  follower idle CPU over {idle:g} s  {idle_cpu(tmp, idle):6.2f}% of one core")


if __name__ == "__main__":
    main(sys.argv[1:])

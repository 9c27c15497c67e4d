"""Several daemons on one PostgreSQL journal, for `bench_postgres.py`: standbys, take-over.

Imported by ``bench_postgres.py`` (run from this folder, so it is imported as ``pg_daemons``).
Real daemons are ``orchestrator up FOLDER --db URL --headless`` processes, each logging to a
file of its own. One daemon is active at a time; the others are hot standbys that check the
journal's daemons table every 0.5 s and take over when the active one stops, dies or freezes.

- `standbys`: two standby daemons beside a `Runtime` of this process (the active one, the
  coordinator), on the same workflows folder: they enlist as executors and run the
  segments of its file workflows' runs that it offers (runs past its share).
- `takeovers`: three daemons on a folder; runs in flight and runs paused; the active daemon
  SIGKILLed (or frozen with SIGSTOP, then continued); how long until a standby logged
  ready, and until the interrupted runs completed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
POLL = 0.005  # seconds between two looks at a log or the journal while timing
TIMEOUT = 120.0

# The take-over benchmark's workflow file. `hold` notes that it started, then waits while
# the hold file exists: the runs it holds are in flight when the daemon is killed, and the
# bench removes the file right after, so the step run again by the new daemon returns at once.
WORKFLOW = '''\
"""Runs held in a step while a file exists, and runs paused on an event."""

import asyncio
import os
from pathlib import Path

from orchestrator import Workflow


async def hold(state):
    fd = os.open(state["started"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (state["n"] + "\\n").encode())
    os.close(fd)
    while Path(state["hold"]).exists():
        await asyncio.sleep(0.05)
    return state


async def wait(state, ctx):
    return ctx.pause(event="go", where={"n": ("==", state["n"])})


async def done(state):
    return {**state, "done": True}


workflow = Workflow(id="takeover", pipelines={"held": [hold, done], "parked": [wait, done]})
'''


class Up:
    """``orchestrator up FOLDER --db URL --headless``: a real daemon, its output in `log`."""

    def __init__(self, folder: Path, url: str, log: Path, *extra: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestrator",
                    "up",
                    str(folder),
                    "--db",
                    url,
                    "--headless",
                    *extra,
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ready(self) -> bool:
        """Whether it logged ``daemon pid N ready``: it is (or was) the active daemon."""
        return f"daemon pid {self.pid} ready" in self.text()

    def standby(self) -> bool:
        """Whether it logged that it waits as a standby."""
        return "standby: " in self.text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGKILL after a minute) and wait; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def until(check: Callable[[], T | None], what: str, daemons: Sequence[Up] = ()) -> T:
    """Poll `check` every 5 ms until it returns something true; fail if a daemon exited early."""
    deadline = time.monotonic() + TIMEOUT
    while not (found := _look(check, what, daemons, deadline)):
        time.sleep(POLL)
    return found


async def until_async(check: Callable[[], T | None], what: str, daemons: Sequence[Up]) -> T:
    """`until`, letting the event loop (a runtime in this process) run meanwhile."""
    deadline = time.monotonic() + TIMEOUT
    while not (found := _look(check, what, daemons, deadline)):  # noqa: ASYNC110 (logs, no event)
        await asyncio.sleep(POLL)
    return found


def _look(
    check: Callable[[], T | None], what: str, daemons: Sequence[Up], deadline: float
) -> T | None:
    found = check()
    if found:
        return found
    for up in daemons:
        if up.proc.poll() is not None:
            last = (up.text().strip().splitlines() or [""])[-1]
            raise RuntimeError(
                f"waiting for {what}: daemon {up.pid} exited {up.proc.returncode}: {last}"
            )
    if time.monotonic() > deadline:
        raise RuntimeError(f"waiting for {what}: not after {TIMEOUT:.0f} s")
    return None


# -- two standbys beside this process's runtime ---------------------------------------------


@contextlib.asynccontextmanager
async def standbys(url: str, folder: Path, logs: Path, n: int = 2) -> AsyncIterator[list[Up]]:
    """`n` standby daemons on `url` and `folder` (an active daemon must run the journal),
    each logging to a file in `logs` (not `folder`: they watch it), stopped at the end."""
    started = [Up(folder, url, logs / f"standby-{i}.log") for i in range(n)]
    try:
        await until_async(lambda: all(up.standby() for up in started), "the standbys", started)
        yield started
    finally:
        codes = [up.stop() for up in started]
        if any(codes):
            print(f"standbys exited {codes}: {[up.text()[-300:] for up in started]}")


# -- take-over ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Takeover:
    """One take-over: seconds from the signal to each mark."""

    how: str  # SIGKILL or SIGSTOP
    ready: float  # a standby logged ``daemon pid N ready``
    first: float  # the first run interrupted by the signal completed (its step run again)
    last: float  # the last one completed
    frozen: str = ""  # SIGSTOP: what the frozen daemon did once continued


class Journal:
    """Plain reads of the journal's runs, on one autocommit connection (no orchestrator code)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True, options="-c search_path=orchestrator")

    def completed(self, run_ids: Sequence[str]) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM runs WHERE run_id = ANY(%s) AND status = 'completed'",
            (list(run_ids),),
        ).fetchone()
        return int(row[0]) if row else 0

    def count(self, status: str, workflow: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM runs WHERE status = %s AND workflow_id = %s", (status, workflow)
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


class Daemons:
    """Three daemons on one folder and journal; the one that died is replaced by a new standby."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder, self.url = folder, url
        self.all: list[Up] = []

    def start(self) -> Up:
        up = Up(self.folder, self.url, self.folder.parent / f"daemon-{len(self.all)}.log")
        self.all.append(up)
        return up

    def alive(self) -> list[Up]:
        return [up for up in self.all if up.proc.poll() is None]

    def stop(self) -> None:
        for up in self.all:
            up.stop()


def takeovers(url: str, tmp: Path, rounds: Sequence[str], held: int, parked: int) -> list[Takeover]:
    """Each round: `held` runs in flight, `parked` paused; the active daemon gets the signal."""
    from orchestrator.journal import open_journal

    folder = tmp / "flows"
    folder.mkdir()
    (folder / "takeover.py").write_text(WORKFLOW)
    hold, started = tmp / "hold", tmp / "started"
    daemons, commands, journal = Daemons(folder, url), open_journal(url).commands, None
    try:
        first = daemons.start()
        until(first.ready, "the first daemon to be ready", [first])
        for _ in range(2):
            _new_standby(daemons)
        journal = Journal(url)
        for i in range(parked):
            commands.queue_invoke("takeover", "parked", {"n": f"p{i}"})
        until(lambda: journal.count("paused", "takeover") == parked, "runs to pause")
        results = []
        for number, how in enumerate(rounds):
            (active,) = [up for up in daemons.alive() if up.ready()]
            hold.touch()
            names = {f"r{number}-{i}" for i in range(held)}
            data = {"hold": str(hold), "started": str(started)}
            run_ids = [commands.queue_invoke("takeover", "held", {**data, "n": n}) for n in names]
            until(partial(_started, started, names), "the held runs' steps to start", [active])
            results.append(_take_over(daemons, active, how, hold, journal, run_ids))
            _new_standby(daemons)
        for i in range(parked):  # the paused runs carried over every take-over: end them
            commands.emit_event("go", {"n": f"p{i}"})
        total = parked + held * len(rounds)
        until(lambda: journal.count("completed", "takeover") == total, "every run to complete")
        return results
    finally:
        if journal is not None:
            journal.close()
        daemons.stop()


def _started(log: Path, names: set[str]) -> bool:
    """Whether the hold step of each of these runs has started (it logs its name)."""
    return log.exists() and names <= set(log.read_text().split())


def _new_standby(daemons: Daemons) -> None:
    up = daemons.start()
    until(up.standby, "a new daemon to wait as a standby", [up])


def _take_over(
    daemons: Daemons, active: Up, how: str, hold: Path, journal: Journal, run_ids: list[str]
) -> Takeover:
    others = [up for up in daemons.alive() if up is not active]
    sig = signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP
    start = time.perf_counter()
    active.proc.send_signal(sig)
    hold.unlink()
    until(lambda: any(up.ready() for up in others), "a standby to take over", others)
    ready = time.perf_counter() - start
    until(lambda: journal.completed(run_ids) > 0, "an interrupted run to complete")
    first = time.perf_counter() - start
    until(lambda: journal.completed(run_ids) == len(run_ids), "every interrupted run")
    last = time.perf_counter() - start
    frozen = ""
    if how == "SIGKILL":
        active.proc.wait()
    else:
        continued = time.perf_counter()
        code = active.stop(signal.SIGCONT)  # it exits on its own: its next batch is fenced
        fenced = "fenced" in active.text()
        frozen = f"continued, it exited {code} after {time.perf_counter() - continued:.2f} s" + (
            " (logged: fenced)" if fenced else " (no fence logged)"
        )
    return Takeover(how, ready, first, last, frozen)


def takeover_lines(results: Sequence[Takeover], held: int, parked: int) -> list[str]:
    """The take-over table, one line a round."""
    lines = [
        f"take-over: 3 daemons on one folder and journal; {held} runs in flight in a step and "
        f"{parked} paused when the active daemon gets the signal (seconds from the signal)",
        f"  {'signal':9}{'standby ready':>15}{'first run done':>16}{'all done':>10}",
    ]
    for r in results:
        lines.append(f"  {r.how:9}{r.ready:>15.2f}{r.first:>16.2f}{r.last:>10.2f}  {r.frozen}")
    return lines

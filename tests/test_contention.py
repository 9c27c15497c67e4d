"""Many processes on one journal while the daemon runs hundreds of runs a second.

A real daemon (``orchestrator up``) serves a folder holding two workflows: ``quick``, one
cheap async step started by each ``tick`` event, and ``hold``, whose runs pause until they
are signalled, resumed or aborted. While a feeder process emits about 500 ``tick`` events a
second (each one a run), two worker processes each write 200 commands with the functions
the CLI calls (`emit_event`, `queue_invoke`, `queue_command`: emit, invoke, signal, resume,
abort), real CLI processes write a few more of each, and a reader process polls the journal
at 10 Hz as the dashboard does, with ``orchestrator runs --json`` now and then beside it.

What users rely on: no "database is locked", nor any other error, reaches any of them
(every process exits 0 with a clean stderr, and the daemon logs no warning); every command
is applied (each inbox row is done, with outcome ``ok``) in the order it was written; every
event starts its one run; every run ends as its commands say. The run rate achieved is
printed, not asserted (the machine is shared).
"""

from __future__ import annotations

import collections
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Daemon, checkpoint_chains, cli, no_error, query

from orchestrator.journal.sqlite.commands import emit_event, queue_invoke
from orchestrator.testing import eventually_blocking

pytestmark = pytest.mark.slow

CLIENTS = ROOT / "tests" / "journal_clients.py"
RATE, FEED_SECONDS, FEED_THREADS = 500, 8.0, 3
PER_KIND = 40  # each worker: 40 each of invoke, emit, signal, resume, abort = 200 commands
WORKERS = 2
CLI_HOLDS = 5  # hold runs the CLI signals and resumes, and as many it aborts

WORKFLOWS = """\
from orchestrator import Trigger, Workflow


async def bump(state):
    return {**state, "bumped": True}


def wait_release(state, ctx):
    return ctx.pause(event="release", where={"key": ("==", state["key"])}, into="release")


async def done(state):
    return {**state, "done": True}


quick = Workflow(id="quick", triggers={"tick": Trigger(event="tick")}, pipelines={"tick": [bump]})
hold = Workflow(id="hold", pipelines={"start": [wait_release, done]})
"""


@pytest.fixture
def daemon(tmp_path: Path, db: Path) -> Iterator[Daemon]:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "load.py").write_text(WORKFLOWS)
    with Daemon(folder, db) as started:
        yield started.start()


def client(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CLIENTS), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def report_of(name: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The client's JSON report, once it exited 0 with nothing on stderr."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and not err, f"{name} exited {proc.returncode}:\n{err}"
    report: dict[str, Any] = json.loads(out)
    return report


def hold_runs(db: Path, count: int) -> list[str]:
    """Start `count` hold runs through the inbox; their ids once all are paused."""
    run_ids = [queue_invoke(db, "hold", "start", {"key": k}) for k in range(count)]
    eventually_blocking(
        lambda: statuses(db, "hold") == {"paused": count}, what="the hold runs to pause", timeout=60
    )
    return run_ids


def worker_plan(worker: int, signalled: list[str], aborted: list[str]) -> list[list[Any]]:
    """A worker's 200 commands, in shuffled blocks of invoke, emit, signal and abort.

    Each signalled run is resumed one block after its signal.
    """
    rng = random.Random(worker)
    plan: list[list[Any]] = []
    for k in range(PER_KIND):
        block: list[list[Any]] = [
            ["invoke", "quick", "tick", {"worker": worker, "k": k}],
            ["emit", "tick", {"worker": worker, "k": k}],
            ["signal", signalled[k], {"signalled_by": worker}],
            ["abort", aborted[k]],
        ]
        rng.shuffle(block)
        plan += block
        if k:
            plan.append(["resume", signalled[k - 1], {"resumed_by": worker}])
    plan.append(["resume", signalled[-1], {"resumed_by": worker}])
    return plan


def cli_lane(db: Path, signalled: list[str], aborted: list[str]) -> list[str]:
    """Real CLI commands, one process each, while the load runs; the run ids invoked."""
    invoked = []
    for k in range(CLI_HOLDS):
        for args in (
            ["emit", "tick", json.dumps({"cli": k})],
            ["invoke", "quick", "tick", json.dumps({"cli": k})],
            ["signal", signalled[k], json.dumps({"signalled_by": "cli"})],
            ["abort", aborted[k]],
            ["runs", "--json", "--limit", "50"],
            ["resume", signalled[k], json.dumps({"resumed_by": "cli"})],
        ):
            out = cli(*args, "--db", str(db))
            assert out.returncode == 0 and no_error(out.stderr), f"{args}: {out.stderr}"
            if args[0] == "runs":
                assert len(json.loads(out.stdout)) == 50
            if args[0] == "invoke":
                invoked.append(out.stdout.strip())
    return invoked


def statuses(db: Path, workflow: str) -> collections.Counter[str]:
    rows = query(
        db, "SELECT status, count(*) FROM runs WHERE workflow_id = ? GROUP BY status", (workflow,)
    )
    return collections.Counter(dict(rows))


def settled(db: Path) -> bool:
    (pending,) = query(
        db,
        "SELECT (SELECT count(*) FROM events WHERE routed_at IS NULL)"
        " + (SELECT count(*) FROM inbox WHERE done_at IS NULL)"
        " + (SELECT count(*) FROM runs WHERE status IN ('queued', 'running'))",
    )[0]
    return pending == 0


class Load:
    """Who does what in the test: the hold runs each command targets, and the reports."""

    def __init__(self, run_ids: list[str]) -> None:
        cli_first = len(run_ids) - 2 * CLI_HOLDS
        self.worker_signalled = run_ids[:cli_first:2]
        self.cli_signalled, self.cli_aborted = run_ids[cli_first::2], run_ids[cli_first + 1 :: 2]
        self.workers: list[dict[str, Any]] = []
        self.cli_invoked: list[str] = []
        self.fed: dict[str, Any] = {}

    def plans(self, run_ids: list[str], folder: Path) -> list[Path]:
        """Each worker's plan, in a file: its share of the hold runs, half of them aborted."""
        plans = []
        for worker in range(WORKERS):
            mine = run_ids[worker * 2 * PER_KIND : (worker + 1) * 2 * PER_KIND]
            plan = folder / f"plan{worker}.json"
            commands = worker_plan(worker, mine[::2], mine[1::2])
            plan.write_text(json.dumps({"pause": 0.02, "commands": commands}))
            plans.append(plan)
        return plans


def test_commands_and_readers_beside_hundreds_of_runs_a_second(
    db: Path, daemon: Daemon, tmp_path: Path
) -> None:
    run_ids = hold_runs(db, WORKERS * 2 * PER_KIND + 2 * CLI_HOLDS)
    load = Load(run_ids)
    plans = load.plans(run_ids, tmp_path)

    began = time.time()
    feeder = client("feed", str(db), str(RATE), str(FEED_SECONDS), str(FEED_THREADS))
    reader = client("read", str(db), str(FEED_SECONDS + 1))
    eventually_blocking(  # the load is on before the commands start
        lambda: query(db, "SELECT count(*) FROM events WHERE source = 'feeder'")[0][0] > 0,
        what="the feeder's first events",
        timeout=60,
    )
    workers = [client("commands", str(db), str(plan)) for plan in plans]
    load.cli_invoked = cli_lane(db, load.cli_signalled, load.cli_aborted)
    load.workers = [report_of(f"worker {i}", proc) for i, proc in enumerate(workers)]
    load.fed = report_of("feeder", feeder)
    ended = time.time()
    daemon.wait_until(lambda: settled(db), 60, "every event and command applied")
    drained = time.time()
    polls = report_of("reader", reader)["polls"]
    assert polls > 0
    assert daemon.stop() == 0, daemon.log()
    noisy = [line for line in daemon.log().splitlines() if " INFO " not in line]
    assert not noisy, "the daemon logged:\n" + "\n".join(noisy[:20])
    assert "locked" not in daemon.log()

    final = {run_id: chain[-1].state for run_id, chain in checkpoint_chains(db).items()}
    assert_commands_applied(db, load, final, len(run_ids))
    assert_one_run_per_event(db, load, final)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    print(
        f"feeder: {load.fed['acked']} events in {load.fed['seconds']:.1f} s"
        f" ({load.fed['acked'] / load.fed['seconds']:.0f}/s asked {RATE}/s);"
        f" {figures(db, began, ended)}; drained {drained - ended:.1f} s after the load;"
        f" reader polls: {polls}"
    )


def assert_commands_applied(db: Path, load: Load, final: dict[str, Any], holds: int) -> None:
    """Every command done with outcome ok; signals and resumes reached their runs in order."""
    outcomes = collections.Counter(outcome for (outcome,) in query(db, "SELECT outcome FROM inbox"))
    assert outcomes == {"ok": holds + WORKERS * 4 * PER_KIND + 4 * CLI_HOLDS}
    assert sum(r["queued"] for r in load.workers) == WORKERS * 3 * PER_KIND
    assert statuses(db, "hold") == {"completed": holds // 2, "aborted": holds // 2}
    for run_id in load.worker_signalled:
        state = final[run_id]
        assert state["signalled_by"] == state["resumed_by"] and state["done"], state
    for run_id in load.cli_signalled:
        assert final[run_id]["signalled_by"] == final[run_id]["resumed_by"] == "cli"


def assert_one_run_per_event(db: Path, load: Load, final: dict[str, Any]) -> None:
    """Every tick event started one quick run; every invoke made one; all completed."""
    ticks = load.fed["acked"] + WORKERS * PER_KIND + CLI_HOLDS
    invoked = [*(r for report in load.workers for r in report["invoked"]), *load.cli_invoked]
    assert len(invoked) == WORKERS * PER_KIND + CLI_HOLDS
    assert query(db, "SELECT count(*) FROM events") == [(ticks,)]
    routes = query(db, "SELECT action, count(*) FROM event_routes GROUP BY action")
    assert routes == [("started", ticks)]
    assert statuses(db, "quick") == {"completed": ticks + len(invoked)}
    emitted = {event_id for report in load.workers for event_id in report["emitted"]}
    assert len(emitted) == WORKERS * PER_KIND
    assert emitted <= {event_id for (event_id,) in query(db, "SELECT event_id FROM events")}
    assert all(final[run_id]["bumped"] for run_id in invoked)


def figures(db: Path, began: float, ended: float) -> str:
    """The run rate while loaded, and how long an event waited for its run."""
    window = query(
        db,
        "SELECT count(*) FROM runs WHERE workflow_id = 'quick' AND updated_at BETWEEN ? AND ?",
        (int(began * 1e6), int(ended * 1e6)),
    )[0][0]
    lags = sorted(
        (run - event) / 1000
        for event, run in query(
            db,
            "SELECT e.created_at, r.created_at FROM events e"
            " JOIN event_routes er ON er.event_id = e.event_id JOIN runs r ON r.id = er.run",
        )
    )
    return (
        f"runs completed while loaded: {window / (ended - began):.0f}/s;"
        f" event -> run created: p50 {statistics.median(lags):.1f} ms,"
        f" p99 {lags[int(len(lags) * 0.99)]:.1f} ms"
    )


def test_writing_beside_an_open_connection_keeps_its_locks(db: Path) -> None:
    """A process that reads the journal and writes commands (the dashboard) keeps its locks.

    Closing any descriptor of a file drops every POSIX lock the process holds on it, its
    SQLite connections' too. Had writing a command opened the journal outside SQLite, the
    next process to close its connection would think itself the last one and delete the
    -wal and -shm files under the reader.
    """
    emit_event(db, "first", {})
    reader = sqlite3.connect(db)
    try:
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
        emit_event(db, "second", {})  # in this process, beside the open reader
        assert cli("emit", "third", "--db", str(db)).returncode == 0  # closes its connection
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (3,)
    finally:
        reader.close()

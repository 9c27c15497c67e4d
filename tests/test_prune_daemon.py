"""Prune beside a real daemon at full speed: nothing unfinished is touched, counts are right.

A daemon (``orchestrator up``) runs a fast workflow for every ``tick`` event that another
process keeps emitting, holds paused runs (waiting for an event, or holding a serialized
slot) and queued runs behind them, while ``orchestrator prune --older-than 0s`` runs from a
third process. Every wait is on a journal row or a process's output, never a sleep.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from procs import ROOT, Daemon, cli, query

TIMEOUT = 60.0
FLOW = """\
from orchestrator import Serialized, Trigger, Workflow


async def inc(state):
    return {**state, "n": state.get("n", 0) + 1}


def wait_for_payment(state, ctx):
    return ctx.pause(event="payment.received", where={"order_id": ("==", state["order_id"])},
                     into="payment")


def wait_for_gate(state, ctx):
    return ctx.pause(event="gate.open", into="gate")


ticks = Workflow(id="ticks", triggers={"tick": Trigger(event="tick")}, pipelines={"tick": [inc]})
orders = Workflow(id="orders", triggers={"new": Trigger(event="order.created")},
                  pipelines={"new": [wait_for_payment, inc]})
serial = Workflow(id="serial", pipelines={"go": [wait_for_gate, inc]}, mode=Serialized())
"""
# Emits `tick` events through the journal's commands, one transaction each, until the stop
# file appears; prints how many it emitted. Any error (a "database is locked") fails it.
EMITTER = """\
import sys
from functools import partial
from pathlib import Path
from orchestrator.journal import open_journal
commands, stop, sent = open_journal(sys.argv[1]).commands, Path(sys.argv[2]), 0
while not stop.exists():
    commands.emit_event("tick", {"i": sent})
    sent += 1
print(sent)
"""
PER_RUN = ("checkpoints", "timeline", "event_routes", "waits", "recoveries")


def rows_of(db: Path, run_ids: list[str]) -> dict[str, Any]:
    """Everything the journal holds for these runs, table by table, and their events."""
    marks = ",".join("?" * len(run_ids))
    inner = f"SELECT id FROM runs WHERE run_id IN ({marks})"
    found: dict[str, Any] = {
        table: query(db, f"SELECT * FROM {table} WHERE run IN ({inner}) ORDER BY 1, 2", (*run_ids,))
        for table in PER_RUN
    }
    found["runs"] = query(
        db,
        f"SELECT run_id, status, position, step FROM runs WHERE run_id IN ({marks})",
        (*run_ids,),
    )
    found["wait_buffer"] = query(
        db,
        f"SELECT * FROM wait_buffer WHERE wait IN (SELECT id FROM waits WHERE run IN ({inner}))",
        (*run_ids,),
    )
    found["events"] = query(
        db,
        "SELECT event_id, type FROM events WHERE event_id IN"
        f" (SELECT event_id FROM event_routes WHERE run IN ({inner})) ORDER BY id",
        (*run_ids,),
    )
    return found


def statuses(db: Path, workflow: str) -> list[str]:
    rows = query(db, "SELECT status FROM runs WHERE workflow_id = ? ORDER BY id", (workflow,))
    return [row[0] for row in rows]


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_prune_beside_a_daemon_at_full_speed(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "flow.py").write_text(FLOW)

    def paused(run_id: str) -> bool:
        return query(db, "SELECT status FROM runs WHERE run_id = ?", (run_id,)) == [("paused",)]

    with Daemon(folder, db) as daemon:
        daemon.start()
        for n in range(3):
            ok(cli("emit", "order.created", json.dumps({"order_id": n}), "--db", str(db)))
        serial = [ok(cli("invoke", "serial", "go", "{}", "--db", str(db))) for _ in range(3)]
        daemon.wait_until(
            lambda: (
                statuses(db, "orders") == ["paused"] * 3
                and statuses(db, "serial") == ["paused", "queued", "queued"]
            ),
            TIMEOUT,
            "paused and queued runs",
        )
        unfinished = [
            row[0] for row in query(db, "SELECT run_id FROM runs WHERE workflow_id != 'ticks'")
        ]
        kept = rows_of(db, unfinished)

        stop = tmp_path / "stop"
        emitter = subprocess.Popen(
            [sys.executable, "-c", EMITTER, str(db), str(stop)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            daemon.wait_until(
                lambda: (
                    query(db, "SELECT count(*) FROM runs WHERE status = 'completed'")[0][0] >= 200
                ),
                TIMEOUT,
                "ticks completed by the daemon",
            )
            pruned = cli("prune", "--db", str(db), "--older-than", "0s", "--json")
            again = cli("prune", "--db", str(db), "--older-than", "0s", "--json")
        finally:
            stop.touch()
            out, err = emitter.communicate(timeout=TIMEOUT)
        assert emitter.returncode == 0, err
        sent = int(out)
        for report in (pruned, again):
            assert report.returncode == 0 and report.stderr == "", report.stderr
        first, second = json.loads(pruned.stdout), json.loads(again.stdout)
        assert first["runs"] >= 200

        # Every tick's run ends; nothing unfinished was touched, and the daemon goes on.
        daemon.wait_until(
            lambda: (
                query(db, "SELECT count(*) FROM events WHERE routed_at IS NULL") == [(0,)]
                and query(
                    db,
                    "SELECT count(*) FROM runs WHERE workflow_id = 'ticks'"
                    " AND status != 'completed'",
                )
                == [(0,)]
            ),
            TIMEOUT,
            "every tick routed and its run completed",
        )
        assert rows_of(db, unfinished) == kept
        assert daemon.proc is not None and daemon.proc.poll() is None

        # Counts are right: run and event ids are dense and only a prune deletes rows.
        [(last_run, runs_left)] = query(db, "SELECT max(id), count(*) FROM runs")
        [(last_event, events_left)] = query(db, "SELECT max(id), count(*) FROM events")
        assert last_run == sent + 6  # every tick started a run; 3 orders, 3 serial runs
        assert first["runs"] + second["runs"] == last_run - runs_left
        assert first["events"] + second["events"] == last_event - events_left
        for report in (first, second):
            assert report["routes"] == report["runs"]  # one route each: a tick's run
            assert report["checkpoints"] == 2 * report["runs"]  # its input and its step
            assert report["waits"] == report["wait_buffer"] == report["recoveries"] == 0

        # The paused and queued runs go on where they were.
        for n in range(3):
            ok(cli("emit", "payment.received", json.dumps({"order_id": n}), "--db", str(db)))
        for run_id in serial:
            daemon.wait_until(partial(paused, run_id), TIMEOUT, "the serialized run's turn")
            ok(cli("resume", run_id, "--db", str(db)))
        daemon.wait_until(
            lambda: (
                statuses(db, "orders") == ["completed"] * 3
                and statuses(db, "serial") == ["completed"] * 3
            ),
            TIMEOUT,
            "the paused and queued runs completed",
        )
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "locked" not in log and "Traceback" not in log, log

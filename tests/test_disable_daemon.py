"""Disable and enable against a real daemon: a burst of events, invoke, restarts, reloads.

Every daemon is ``orchestrator up DIR --headless`` (`procs.Daemon`), every command a real
``python -m orchestrator`` process, and the burst of events comes from another process.
Tests wait on journal rows (the switch command applied, events routed), never on sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Daemon, cli, query

TIMEOUT = 60.0

ORDERS = """\
from orchestrator import Trigger, Workflow


def mark(state):
    return {**state, "seen": VERSION}


workflow = Workflow(
    id="orders",
    triggers={"new": Trigger("order.created"), "paid": Trigger("order.paid")},
    pipelines={"new": [mark], "paid": [mark]},
)
"""

# Emits ``order.created`` events with n = 0, 1, 2, ... until DB.stop exists.
BURST = """\
import sys
from pathlib import Path

from orchestrator.journal.sqlite.commands import emit_event

db = Path(sys.argv[1])
stop = Path(f"{db}.stop")
n = 0
while not stop.exists():
    emit_event(db, "order.created", {"n": n})
    n += 1
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "workflows").resolve()
    path.mkdir()
    write_orders(path, "v1")
    return path


def write_orders(folder: Path, version: str) -> None:
    (folder / "orders.py").write_text(ORDERS.replace("VERSION", repr(version)))


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    return out


def workflows(db: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ok("workflows", "--json", "--db", str(db)).stdout)
    return document


def switch_applied(db: Path, command: str) -> int | None:
    """The created_at of the latest `command` once the daemon applied it (else None)."""
    rows = query(
        db,
        "SELECT created_at, done_at, outcome FROM inbox WHERE command = ? ORDER BY id DESC LIMIT 1",
        (command,),
    )
    if not rows or rows[0][1] is None:
        return None
    assert rows[0][2] == "ok", rows[0][2]
    return int(rows[0][0])


def routed_after(db: Path, since: int) -> int:
    """How many events created after `since` are routed (none is unrouted before them)."""
    rows = query(
        db, "SELECT count(*) FROM events WHERE created_at > ? AND routed_at IS NOT NULL", (since,)
    )
    return int(rows[0][0])


def started(db: Path, after: int, before: int) -> tuple[int, int]:
    """Of the events created in (after, before): how many, and how many started a run."""
    rows = query(
        db,
        "SELECT count(*), count(r.event_id) FROM events e LEFT JOIN event_routes r"
        " ON r.event_id = e.event_id WHERE e.created_at > ? AND e.created_at < ?",
        (after, before),
    )
    return int(rows[0][0]), int(rows[0][1])


def test_disable_during_a_burst_of_events(folder: Path, db: Path) -> None:
    with Daemon(folder, db) as daemon:
        daemon.start()
        burst = subprocess.Popen([sys.executable, "-c", BURST, str(db)], cwd=ROOT)
        try:
            daemon.wait_until(
                lambda: query(db, "SELECT count(*) FROM runs")[0][0] >= 5, TIMEOUT, "first runs"
            )
            ok("disable", "orders", "--db", str(db))
            off = daemon.wait_until(lambda: switch_applied(db, "disable"), TIMEOUT, "disable")
            assert workflows(db)["workflows"][0]["enabled"] is False
            daemon.wait_until(lambda: routed_after(db, off) >= 20, TIMEOUT, "events meanwhile")
            ok("enable", "orders", "--db", str(db))
            on = daemon.wait_until(lambda: switch_applied(db, "enable"), TIMEOUT, "enable")
            daemon.wait_until(lambda: routed_after(db, on) >= 20, TIMEOUT, "events after")
        finally:
            Path(f"{db}.stop").touch()
            burst.wait(timeout=TIMEOUT)
        daemon.wait_until(
            lambda: query(db, "SELECT count(*) FROM events WHERE routed_at IS NULL")[0][0] == 0,
            TIMEOUT,
            "every event routed",
        )
        end = 2**62
        before, during, after = started(db, 0, off), started(db, off, on), started(db, on, end)
        assert before[0] == before[1] > 0, "each event before the disable started a run"
        assert during[0] >= 20 and during[1] == 0, "no event while disabled started a run"
        assert after[0] == after[1] >= 20, "each event after the enable started a run"
        runs = query(db, "SELECT count(*) FROM runs")[0][0]
        assert runs == before[1] + after[1]
        assert "workflow orders disabled" in daemon.log()
        assert "workflow orders enabled" in daemon.log()
        document = workflows(db)["workflows"][0]
        assert document["enabled"] is True
        assert all(trigger["enabled"] for trigger in document["triggers"])


def test_invoke_of_a_disabled_trigger_and_a_switch_that_survives_reload_and_restart(
    folder: Path, db: Path
) -> None:
    # Written while no daemon runs: the disable, then an invoke (checked against nothing yet).
    ok("disable", "orders", "new", "--db", str(db))
    queued = ok("invoke", "orders", "new", '{"n": 1}', "--db", str(db)).stdout.strip()
    with Daemon(folder, db) as daemon:
        daemon.start()
        daemon.wait_until(lambda: switch_applied(db, "disable"), TIMEOUT, "the disable")
        rejected = daemon.wait_until(
            lambda: query(
                db, "SELECT status, error_code, error FROM runs WHERE run_id = ?", (queued,)
            ),
            TIMEOUT,
            "the queued invoke to end",
        )
        assert rejected[0][:2] == ("rejected", "DISABLED"), rejected
        assert "orchestrator enable orders new" in rejected[0][2]

        refused = cli("invoke", "orders", "new", "--wait", "--db", str(db))
        assert refused.returncode == 1 and refused.stdout == ""
        assert "trigger 'new' of workflow 'orders' is disabled" in refused.stderr
        assert "[DISABLED]" in refused.stderr
        unknown = cli("disable", "orders", "nope", "--db", str(db))
        assert unknown.returncode == 2 and "has no trigger 'nope'" in unknown.stderr
        paid = cli("invoke", "orders", "paid", "--wait", "--db", str(db))
        assert paid.returncode == 0, paid.stderr

        [shown] = workflows(db)["workflows"]
        assert shown["enabled"] is True
        assert {t["trigger_id"]: t["enabled"] for t in shown["triggers"]} == {
            "new": False,
            "paid": True,
        }
        text = ok("workflows", "--db", str(db)).stdout
        assert "new (event order.created, disabled)" in text

        version = shown["version"]
        write_orders(folder, "v2")  # a reload of the file keeps the switch
        daemon.wait_until(
            lambda: workflows(db)["workflows"][0]["version"] != version, TIMEOUT, "the reload"
        )
        ok("emit", "order.created", "{}", "--db", str(db))
        daemon.wait_until(
            lambda: query(db, "SELECT count(*) FROM events WHERE routed_at IS NULL")[0][0] == 0,
            TIMEOUT,
            "the event routed",
        )
        assert query(db, "SELECT count(*) FROM runs WHERE trigger_id = 'new'")[0][0] == 1
        assert daemon.stop() == 0

    with Daemon(folder, db) as daemon:  # and so does a restart
        daemon.start()
        [shown] = workflows(db)["workflows"]
        assert [t["enabled"] for t in shown["triggers"]] == [False, True]
        again = cli("invoke", "orders", "new", "--db", str(db))
        assert again.returncode == 1 and "DISABLED" in again.stderr
        ok("enable", "orders", "new", "--db", str(db))
        daemon.wait_until(lambda: switch_applied(db, "enable"), TIMEOUT, "the enable")
        done = cli("invoke", "orders", "new", "--wait", "--db", str(db))
        assert done.returncode == 0, done.stderr


def test_disable_and_enable_print_what_they_queued(db: Path) -> None:
    out = ok("disable", "later", "--db", str(db))
    assert out.stdout == "disable of workflow later queued; the daemon applies it\n"
    out = ok("enable", "later", "nightly", "--db", str(db))
    assert out.stdout == (
        "enable of trigger nightly of workflow later queued; the daemon applies it\n"
    )
    assert query(db, "SELECT command, workflow_id, trigger_id, done_at FROM inbox") == [
        ("disable", "later", None, None),
        ("enable", "later", "nightly", None),
    ]

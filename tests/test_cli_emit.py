"""`orchestrator emit` says what its event did: against a real daemon, and with none.

The daemon is ``python -m orchestrator up DIR --headless`` (`procs.Daemon`), every emit a
real ``python -m orchestrator`` process. stdout keeps the event id alone; the report is on
stderr (or the whole answer on stdout with ``--json``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, cli, query

from orchestrator.cli.emitting import EmitReport
from orchestrator.journal import EventListeners, EventRoute

FLOWS = """\
from orchestrator import Trigger, Workflow


def ask(state, ctx):
    return ctx.pause(event="order.paid", where={"order_id": ("==", state["order_id"])}, into="paid")


def ship(state):
    return {**state, "shipped": True}


orders = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created", where={"total": (">", 0)})},
    pipelines={"new": [ask, ship]},
)
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "flows").resolve()
    path.mkdir()
    (path / "orders.py").write_text(textwrap.dedent(FLOWS))
    return path


def emit(db: Path, *args: str) -> tuple[str, list[str]]:
    out = cli("emit", *args, "--db", str(db))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()  # the report, after any "no daemon" note (test_daemons)
    return out.stdout, [line for line in lines if not line.startswith("note: no daemon ")]


PAUSED = "SELECT run_id FROM runs WHERE status = 'paused'"


def paused(db: Path, run_id: str) -> bool:
    return (run_id,) in query(db, PAUSED)


def run_of(db: Path, event_id: str) -> str:
    [(run_id,)] = query(
        db,
        "SELECT r.run_id FROM event_routes e JOIN runs r ON r.id = e.run WHERE e.event_id = ?",
        (event_id,),
    )
    return str(run_id)


def test_emit_reports_what_its_event_started_resumed_or_that_nothing_matched(
    folder: Path, db: Path
) -> None:
    with Daemon(folder, db) as daemon:
        daemon.start()
        stdout, report = emit(db, "order.created", '{"order_id": 7, "total": 5}')
        event_id = stdout.strip()
        assert stdout == f"{event_id}\n"  # stdout: the id alone
        run_id = run_of(db, event_id)
        assert report == [f"started run {run_id} (orders/new)"]
        daemon.wait_until(lambda: paused(db, run_id), 30, "the run to pause")

        _, report = emit(db, "order.paid", '{"order_id": 8}')  # another order's payment
        assert report == [
            "no trigger or waiting run matched 'order.paid': its data does not meet the "
            "conditions of 1 waiting run"
        ]
        _, report = emit(db, "order.paid", '{"order_id": 7}')
        assert report == [f"resumed run {run_id} (orders)"]

        _, report = emit(db, "order.created", '{"order_id": 9, "total": 0}')
        assert report == [
            "no trigger or waiting run matched 'order.created': its data does not meet the "
            "conditions of orders/new"
        ]
        _, report = emit(db, "order.craeted", '{"order_id": 9}')
        assert report == [
            "no trigger or waiting run matched 'order.craeted'; did you mean 'order.created'?"
        ]

        out = cli(
            "emit", "order.created", '{"order_id": 10, "total": 1}', "--json", "--db", str(db)
        )
        assert out.returncode == 0 and out.stderr == "", out.stderr
        document = json.loads(out.stdout)
        started = run_of(db, document["event_id"])
        assert document == {
            "event_id": document["event_id"],
            "type": "order.created",
            "routed": True,
            "started": [
                {
                    "run_id": started,
                    "workflow_id": "orders",
                    "trigger_id": "new",
                    "action": "started",
                }
            ],
            "resumed": [],
            "buffered": [],
            "matched": True,
            "listened": True,
            "suggestions": [],
            "reused": False,
        }
        typo = json.loads(cli("emit", "order.craeted", "--json", "--db", str(db)).stdout)
        assert (typo["routed"], typo["matched"], typo["suggestions"]) == (
            True,
            False,
            ["order.created"],
        )


def test_a_reused_key_says_nothing_new_was_emitted_and_reports_the_first_event(
    folder: Path, db: Path
) -> None:
    with Daemon(folder, db) as daemon:
        daemon.start()
        first, report = emit(db, "order.created", '{"order_id": 7, "total": 5}', "--key", "k7")
        run_id = run_of(db, first.strip())
        assert report == [f"started run {run_id} (orders/new)"]
        # Another type under the same key: the first event is what the key names.
        again, report = emit(db, "order.craeted", '{"order_id": 8}', "--key", "k7")
        assert again == first
        assert report == [
            f"key 'k7' was used before, by event {first.strip()} ('order.created'): nothing "
            "new was emitted; what that event did:",
            f"started run {run_id} (orders/new)",
        ]
        out = cli("emit", "order.created", "{}", "--key", "k7", "--json", "--db", str(db))
        document = json.loads(out.stdout)
        assert (document["event_id"], document["reused"]) == (first.strip(), True)
        assert document["started"][0]["run_id"] == run_id
    assert query(db, "SELECT count(*) FROM events") == [(1,)]


def test_without_a_daemon_emit_says_whether_the_loaded_workflows_listen(
    folder: Path, db: Path
) -> None:
    stdout, report = emit(db, "order.created", '{"order_id": 1, "total": 1}')  # a new journal
    assert len(stdout.strip()) == 32
    assert report == [
        "no trigger or waiting run listens to 'order.created'; nothing in this journal "
        "listens to events (no workflow loaded)"
    ]
    with Daemon(folder, db) as daemon:
        daemon.start()  # it routes the event above, and registers orders
        daemon.wait_until(lambda: query(db, PAUSED), 30, "the event's run to pause")
    _, report = emit(db, "order.created", '{"total": 1}')
    assert report == [
        "'order.created' is taken by orders/new (as the daemon last loaded them); a daemon "
        "routes it when it starts"
    ]
    _, report = emit(db, "order.craeted")
    assert report == [
        "no trigger or waiting run listens to 'order.craeted'; did you mean 'order.created'?"
    ]
    _, report = emit(db, "nothing.like.it")
    assert report == [
        "no trigger or waiting run listens to 'nothing.like.it'; the known event types: "
        "order.created, order.paid"  # the run paused by the first event waits for order.paid
    ]
    document = json.loads(cli("emit", "order.created", "--json", "--db", str(db)).stdout)
    assert (document["routed"], document["matched"], document["started"]) == (False, True, [])


def report_of(**fields: Any) -> EmitReport:
    defaults: dict[str, Any] = {
        "event_id": "e1",
        "event_type": "order.created",
        "daemon": True,
        "waited": 5.0,
        "routed": True,
        "routes": [],
        "listeners": EventListeners(triggers={"order.created": ["orders/new"]}),
    }
    return EmitReport(**{**defaults, **fields})


def test_each_kind_of_route_reads_as_one_line() -> None:
    routes = [
        EventRoute(action=action, run_id=f"r{n}", workflow_id="orders", trigger_id="new")
        for n, action in enumerate(("started", "queued", "resumed", "buffered"))
    ]
    assert report_of(routes=routes).lines() == [
        "started run r0 (orders/new)",
        "queued run r1 (orders/new): its workflow is busy",
        "resumed run r2 (orders)",
        "buffered for run r3 (orders): it takes it when it pauses for it",
    ]


def test_a_slow_daemon_and_disabled_triggers_are_said_so() -> None:
    assert report_of(routed=False).lines() == [
        "accepted; the daemon has not routed it within 5 s (`orchestrator logs -f` shows what "
        "it does)"
    ]
    off = EventListeners(disabled={"order.created": ["orders/new"]})
    assert report_of(listeners=off).lines() == [
        "no trigger or waiting run matched 'order.created': its triggers are disabled (orders/new)"
    ]

"""A rich journal written by a real `Runtime` on SQLite, to compare the PostgreSQL reader with.

`seed` writes it: runs completed, failed, retried, forked, aborted, paused on an event (with
and without a timeout, dormant or not), sleeping, parents joining children, a schedule,
disabled triggers, a load error, events routed and not, commands pending, idempotency keys,
large states kept as checkpoint deltas (nested changes, removed keys), non-ASCII text. After
the runtime stops, another process's writes (the commands API) leave events, commands and a
queued run pending; a few rows no runtime writes in a test (files seen, a service scope
never closed) are added by hand. `tests/test_pg_reader.py` copies it into PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from orchestrator import Runtime, Schedule, Serialized, Trigger, Workflow
from orchestrator.journal.backends import open_journal

BIG = "é日本🎉" * 400  # long enough for its state to be kept as merge patches


def grow(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "big": BIG, "nested": {"a": 1, "b": {"c": 2, "d": [1, None]}}, "n": 1}


def nudge(state: dict[str, Any]) -> dict[str, Any]:
    nested = {**state["nested"], "b": {"c": 3, "d": [1, None]}, "new": "ñ"}
    return {**state, "nested": nested, "n": state["n"] + 1, "日本": "語"}


def drop(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key != "nested"} | {"n": 0.5}


def wait_paid(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="paid", where={"order": ("==", state["order"])}, into="payment")


def wait_shipped(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="shipped", into="shipping", timeout=3600)


def nap(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.sleep(3600)


def decline(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(f"card declined ☃ for {state.get('order')}")


def spawn(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    kids = [ctx.start("kids", "go", {"i": i, "stay": state["stay"]}) for i in range(2)]
    return {**state, "kids": kids}


def gather(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.join(state["kids"], into="results")


def kid(state: dict[str, Any], ctx: Any) -> Any:
    if state["stay"] and state["i"] == 1:
        return ctx.pause(event="never")
    return {**state, "done": True}


def tally(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "tallied": len(state.get("results") or [])}


WORKFLOWS = [
    Workflow(
        id="orders",
        triggers={"new": Trigger(event="order.created"), "rush": Trigger(event="order.rush")},
        pipelines={
            "new": [grow, nudge, wait_paid, drop],
            "rush": [grow, wait_shipped, drop],
            "bad": [grow, decline],
        },
    ),
    Workflow(
        id="naps",
        triggers={"go": Trigger(event="nap")},
        pipelines={"go": [nap]},
        mode=Serialized(),
    ),
    Workflow(id="parents", pipelines={"go": [spawn, gather, tally]}),
    Workflow(id="kids", pipelines={"go": [kid]}),
    # Upper case sorts first by bytes (SQLite), last in most locales.
    Workflow(id="Zeta", triggers={"z": Trigger(event="zeta")}, pipelines={"z": [grow]}),
    Workflow(
        id="reports",
        triggers={"nightly": Schedule(cron="0 2 * * *", tz="UTC")},
        pipelines={"nightly": [grow]},
    ),
]


async def seed(db: Path) -> dict[str, str]:
    """Write the journal at `db` (a new file); some run ids by what happened to them."""
    ids: dict[str, str] = {}
    async with Runtime(db, workflows=WORKFLOWS) as rt:
        for order in range(4):
            await rt.emit("order.created", {"order": order, "note": "commande n°"})
        await rt.emit("paid", {"order": 0, "amount": 12})
        await rt.emit("order.rush", {"order": 9})
        await rt.emit("nobody.listens", {"x": [1, 2, {"y": None}]}, key="once")
        bad = await rt.invoke("orders", "bad", {"order": 7})
        ids["failed"] = bad.run_id
        await rt.retry(bad.run_id, {"retried": True})
        await rt.emit("nap", {})
        await rt.emit("nap", {"second": 1})  # queued behind the first (Serialized)
        ids["joined"] = (await rt.invoke("parents", "go", {"stay": False})).run_id
        ids["joining"] = (await rt.invoke("parents", "go", {"stay": True})).run_id
        ids["keyed"] = (await rt.invoke("kids", "go", {"i": 0, "stay": False}, key="k1")).run_id
        await rt.idle()
        runs = await rt.list_all_runs()
        ids["napping"] = next(
            r.run_id for r in runs if r.workflow_id == "naps" and r.status == "paused"
        )
        ids["completed"] = next(
            r.run_id for r in runs if r.workflow_id == "orders" and r.status == "completed"
        )
        ids["fork"] = await rt.fork(ids["completed"], "nudge", {"forked": "oui"})
        aborted = (await rt.invoke("orders", "new", {"order": 99})).run_id
        await rt.abort(aborted)
        ids["aborted"] = aborted
        await rt.disable("orders", "rush")
        await rt.disable("reports")
        await rt.enable("reports")
        await rt.disable("kids")
        await rt.disable("Zeta", "z")
        rt.report_load(Path("workflows/broken ☃.py"), 3, "SyntaxError: invalid syntax")
        rt.report_load(Path("workflows/Zed.py"), None, "ImportError: no module named zed")
        await rt.emit("nobody.listens", {"ping": 1})
        await rt.idle()
    _after_stop(db, ids)
    return ids


def _after_stop(db: Path, ids: dict[str, str]) -> None:
    """What other processes write while no daemon runs, and rows written by hand."""
    commands = open_journal(db).commands
    commands.emit_event("late.event", {"ü": "later"}, key="late")
    commands.emit_event("paid", {"order": 1, "amount": 3})
    ids["queued"] = commands.queue_invoke("orders", "new", {"order": 42}, key="q1")
    commands.queue_command("resume", ids["napping"], {"woken": True})
    commands.queue_switch("enable", "kids")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO files_seen (dir, glob, name, inode, at) VALUES"
            " ('/in', '*.csv', 'a.csv', 11, 1), ('/in', '*.csv', 'b.csv', NULL, 2),"
            " ('/in', '*.txt', 'ö.txt', 12, 3)"
        )
        # An event and a command no process of this version writes: unreadable payloads.
        conn.execute(
            "INSERT INTO events (event_id, type, data, source, created_at)"
            " VALUES ('bad-1', 'weird', 'not json', 'cli', 10)"
        )
        conn.execute(
            "INSERT INTO inbox (command, run_id, payload, created_at)"
            " VALUES ('signal', ?, '{\"deep\": ', 11)",
            [ids["napping"]],
        )
        # An armed wait (registered before its step paused) with two buffered events.
        (napping,) = conn.execute(
            "SELECT id FROM runs WHERE run_id = ?", [ids["napping"]]
        ).fetchone()
        wait = conn.execute(
            "INSERT INTO waits (run, event_type, conditions, persistent, status, into_key,"
            " timeout_at, on_timeout, created_at) VALUES (?, 'paid', '[]', 1, 'armed', 'p',"
            " NULL, 'continue', 9) RETURNING id",
            [napping],
        ).fetchone()[0]
        events = [e for (e,) in conn.execute("SELECT event_id FROM events ORDER BY id LIMIT 2")]
        conn.executemany(
            "INSERT INTO wait_buffer (wait, seq, event_id) VALUES (?, ?, ?)",
            [(wait, seq, event_id) for seq, event_id in enumerate(reversed(events), 1)],
        )
        row = conn.execute("SELECT id FROM runs WHERE run_id = ?", [ids["completed"]]).fetchone()
        conn.execute(
            "INSERT INTO timeline (run, position, at, source, kind, step, message)"
            " VALUES (?, 1, 5, 'system', 'service.opened', 'grow', 'cart')",
            [row[0]],
        )

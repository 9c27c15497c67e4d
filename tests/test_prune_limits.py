"""Prune's edges: idempotency keys go with what they made, rows of no run go, a pass costs
what it deletes (the events sweep resumes at its mark), and ids never go back."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from procs import cli, query

from orchestrator import Runtime, Trigger, Workflow
from orchestrator.journal import open_journal
from orchestrator.journal.sqlite import pacing
from orchestrator.testing import eventually


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


def chatty(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.log.info("a line in the timeline")
    return state


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="payment.received", where={"order_id": ("==", state["order_id"])}, into="payment"
    )


FLOWS = [
    Workflow(
        id="w",
        triggers={"go": Trigger(event="ping")},
        pipelines={"go": [inc], "chatty": [chatty, chatty]},
    ),
    Workflow(
        id="orders",
        triggers={"new": Trigger(event="order.created")},
        pipelines={"new": [wait_for_payment, inc]},
    ),
]


def keys(db: Path) -> list[tuple[str, str]]:
    return query(db, "SELECT kind, key FROM idempotency_keys ORDER BY kind, key")


async def test_keys_go_with_their_run_or_event_and_then_start_anew(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        first = await rt.invoke("w", "go", {}, key="job-1")
        event = await rt.emit("nothing", {}, key="note-1")
        paused = await rt.invoke("orders", "new", {"order_id": 1}, key="order-1")
        await rt.emit("ping", {})  # the newest event: stays, so `note-1`'s can go
        assert keys(db) == [("emit", "note-1"), ("invoke", "job-1"), ("invoke", "order-1")]

        dry = await rt.prune(older_than=0, dry_run=True)
        report = await rt.prune(older_than=0)
        assert dry["keys"] == report["keys"] == 2
        assert keys(db) == [("invoke", "order-1")]  # its run has not ended: kept

        again = await rt.invoke("w", "go", {"x": 1}, key="job-1")
        assert again.ok and again.run_id != first.run_id and again.state == {"x": 1, "n": 1}
        assert await rt.emit("nothing", {}, key="note-1") != event
        assert (await rt.invoke("orders", "new", {}, key="order-1")).run_id == paused.run_id

    # The CLI claims a pruned key again too.
    await_prune = cli("prune", "--db", str(db), "--older-than", "0", "--json")
    assert await_prune.returncode == 0, await_prune.stderr
    out = cli("invoke", "w", "go", "{}", "--key", "job-1", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() not in (first.run_id, again.run_id)


async def test_a_keyed_invoke_whose_run_is_pruned_meanwhile_starts_a_new_one(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        first = await rt.invoke("w", "go", {}, key="k")
        # Another process prunes between this runtime's lookup of the key and its wait.
        assert rt._control is not None
        looked_up = rt._control.keys.lookup

        async def lookup_then_prune(kind: str, key: str) -> str | None:
            found = await looked_up(kind, key)
            if found == first.run_id:
                open_journal(db).commands.prune({"completed": 2**62})
            return found

        rt._control.keys.lookup = lookup_then_prune  # type: ignore[method-assign]
        again = await rt.invoke("w", "go", {}, key="k")
        assert again.ok and again.run_id != first.run_id


def orphans(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT run, kind FROM timeline WHERE run IS NULL"
        " OR NOT EXISTS (SELECT 1 FROM runs WHERE id = timeline.run) ORDER BY id",
    )


async def test_timeline_rows_of_no_run_or_of_a_missing_run_are_pruned(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        kept = await rt.invoke("orders", "new", {"order_id": 1})
        gone = await rt.invoke("w", "chatty", {})
    conn = sqlite3.connect(db)  # as a user's sqlite3 shell does: foreign keys off
    conn.execute(
        "INSERT INTO timeline (run, at, source, kind) VALUES (NULL, 1, 'runtime', 'stray')"
    )
    conn.execute("DELETE FROM runs WHERE run_id = ?", (gone.run_id,))
    conn.commit()
    conn.close()
    stray = orphans(db)
    assert (None, "stray") in stray and len(stray) >= 3
    live_rows = query(db, "SELECT count(*) FROM timeline")[0][0] - len(stray)

    dry = cli("prune", "--db", str(db), "--older-than", "0", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert orphans(db) == stray
    out = cli("prune", "--db", str(db), "--older-than", "0", "--json")
    assert out.returncode == 0, out.stderr
    counted, report = json.loads(dry.stdout), json.loads(out.stdout)
    assert counted["timeline"] == report["timeline"] == len(stray)
    assert counted["checkpoints"] == report["checkpoints"] > 0  # the missing run's too
    assert orphans(db) == []
    assert query(db, "SELECT count(*) FROM checkpoints WHERE run NOT IN (SELECT id FROM runs)") == [
        (0,)
    ]
    assert query(db, "SELECT count(*) FROM timeline") == [(live_rows,)]
    async with Runtime(db, workflows=FLOWS) as rt:
        assert len(await rt.timeline(kept.run_id)) > 0
        await rt.emit("payment.received", {"order_id": 1})
        assert (await rt.wait(kept.run_id, timeout=10)).status == "completed"


def mark(db: Path) -> int:
    rows = query(db, "SELECT value FROM prune_marks WHERE name = 'events'")
    return int(rows[0][0]) if rows else 0


async def test_the_event_sweep_resumes_where_it_stopped(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        paused = [await rt.invoke("orders", "new", {"order_id": n}) for n in range(3)]
        started = [await rt.emit("order.created", {"order_id": n}) for n in range(10, 13)]
        for _ in range(3):
            await rt.emit("nothing", {})
        await rt.emit("ping", {})  # the newest: always stays
        ids = dict(query(db, "SELECT event_id, id FROM events"))
        await rt.prune(older_than=0)
        # Past the events paused runs were routed: the next pass starts after them.
        assert mark(db) >= max(ids[e] for e in started)
        assert {row[0] for row in query(db, "SELECT type FROM events")} == {
            "order.created",
            "ping",
        }
        # Below the mark, an event goes with the last run that names it.
        for run in paused:
            await rt.abort(run.run_id)
        for n in range(10, 13):
            await rt.emit("payment.received", {"order_id": n})
        await rt.emit("ping", {})
        report = await rt.prune(older_than=0)
        assert report["runs"] >= 6
        left = {row[0] for row in query(db, "SELECT event_id FROM events")}
        assert not left & set(started)
        assert len(left) == 1  # the newest


async def test_ids_never_go_back_so_the_daemon_sees_every_new_event_and_command(
    db: Path,
) -> None:
    commands = open_journal(db).commands
    async with Runtime(db, workflows=FLOWS) as rt:
        await rt.invoke("orders", "new", {"order_id": 1})
        commands.emit_event("ping", {})  # from "another process": the inbox routes it

        async def ran(count: int) -> bool:
            return len(await rt.list_runs(status="completed")) == count

        await eventually(lambda: ran(1), what="the first ping's run")
        newest = query(db, "SELECT max(id) FROM events")[0][0]
        report = await rt.prune(older_than=0)
        assert report["runs"] == 1
        assert query(db, "SELECT max(id) FROM events")[0][0] == newest
        commands.emit_event("ping", {})
        await eventually(lambda: ran(1), what="the second ping's run")
        [paused] = await rt.list_runs(status="paused")
        commands.queue_command("abort", paused.run_id)
        await eventually(lambda: rt.list_runs(status="aborted"), what="the abort applied")
        await rt.prune(older_than=0)
        assert query(db, "SELECT count(*) FROM inbox") == [(1,)]
        commands.emit_event("order.created", {"order_id": 2})

        async def paused_again() -> bool:
            return len(await rt.list_runs(status="paused")) == 1

        await eventually(paused_again, what="a run started by an event after the prune")


def test_waiting_for_the_lock_does_not_shrink_a_prune_batch(db: Path) -> None:
    open_journal(db).commands.emit_event("nothing", {})  # creates the journal
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another writer, busy well past the target
    release = threading.Timer(10 * pacing.TARGET_SECONDS, holder.execute, ["COMMIT"])
    release.start()
    try:
        size = pacing.Size(100)
        pacing.Pacer().paced(db, lambda conn: conn.execute("SELECT 1").fetchall(), size)
    finally:
        release.join()
        holder.close()
    assert size.now == 200  # held briefly: grows (timed from the request, it would shrink)

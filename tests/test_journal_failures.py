"""Journal writes that fail for a while (a full disk) are kept and retried, not lost.

Fault points make the next commits fail as a full disk would; the runtime keeps running,
what it acknowledged is in the journal, and nothing is acknowledged before it commits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from procs import acli, fill_disk, query, small_disk

from orchestrator import Runtime, RuntimeStopped, Step, Trigger, Workflow
from orchestrator.journal.faults import FaultPoints
from orchestrator.testing import eventually


def _bump(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


def _workflow() -> Workflow:
    return Workflow(
        id="counter",
        triggers={"go": Trigger(event="tick")},
        pipelines={"go": [Step(_bump, name="one"), Step(_bump, name="two")]},
    )


async def test_failing_commits_are_retried_and_nothing_acknowledged_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    faults = FaultPoints()
    db = tmp_path / "j.db"
    async with Runtime(db, workflows=[_workflow()], faults=faults) as rt:
        await rt.idle()
        faults.fail(6)  # about 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of retries
        emitted = asyncio.ensure_future(rt.emit("tick", {}))
        await asyncio.sleep(0)  # not a wait: lets the emit enqueue before the next check
        assert not emitted.done(), "an event was acknowledged before it committed"
        event_id = await emitted
        assert faults.failures_left == 0
        await rt.idle()
        result = await rt.invoke("counter", "go", {})
        assert result.ok and result.state == {"n": 2}
        assert rt.active_runs() == 0
    assert query(db, "SELECT count(*) FROM events WHERE event_id = ?", (event_id,)) == [(1,)]
    statuses = query(db, "SELECT status FROM runs ORDER BY id")
    assert statuses == [("completed",), ("completed",)]
    failing = [r for r in caplog.records if "journal writes failing" in r.getMessage()]
    recovered = [r for r in caplog.records if "journal writes recovered" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.ERROR
    assert len(recovered) == 1


async def test_the_writer_says_it_is_degraded_while_it_retries(tmp_path: Path) -> None:
    faults = FaultPoints()
    db = tmp_path / "j.db"
    async with Runtime(db, workflows=[_workflow()], faults=faults) as rt:
        await rt.idle()
        writer = rt._writer
        faults.fail(1_000_000)
        emitted = asyncio.ensure_future(rt.emit("tick", {}))
        reason = await eventually(lambda: writer.degraded, what="the writer to degrade")
        assert "database or disk is full" in reason
        assert writer.lease_fresh()  # the lease alone is still renewed

        async def degraded() -> str | None:
            return (await _daemon_json(db)).get("degraded")

        shown = await eventually(degraded, what="workflows --json to say so")
        assert "database or disk is full" in shown
        faults.fail(0)
        await emitted
        assert writer.degraded is None
        await rt.idle()
        assert (await _daemon_json(db))["degraded"] is None


async def _daemon_json(db: Path) -> dict[str, Any]:
    out = await acli("workflows", "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    daemon: dict[str, Any] = json.loads(out.stdout)["daemon"]
    return daemon


async def test_a_full_disk_pauses_writes_and_the_runtime_carries_on_once_freed(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        db = disk / "j.db"
        async with Runtime(db, workflows=[_workflow()]) as rt:
            await rt.idle()
            writer = rt._writer
            filler = fill_disk(disk)
            pad = "x" * 10_000  # so each event needs new pages
            emits = [
                asyncio.ensure_future(rt.emit("tick", {"i": i, "pad": pad})) for i in range(30)
            ]
            reason = await eventually(lambda: writer.degraded, what="writes to fail", timeout=30)
            assert "full" in reason
            acknowledged = [e.result() for e in emits if e.done() and not e.exception()]
            assert len(acknowledged) < len(emits), "every event was acknowledged on a full disk"
            filler.unlink()
            event_ids = await asyncio.gather(*emits)
            await rt.idle(timeout=30)
            assert writer.degraded is None and rt.failure is None
            result = await rt.invoke("counter", "go", {})
            assert result.ok and result.state == {"n": 2}
        found = {row[0] for row in query(db, "SELECT event_id FROM events")}
        assert set(event_ids) <= found
        statuses = query(db, "SELECT status, count(*) FROM runs GROUP BY status")
        assert statuses == [("completed", 31)]


async def test_a_lost_lease_stops_the_runtime_from_starting_steps(tmp_path: Path) -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        started.append(1)
        await release.wait()
        return state

    db = tmp_path / "j.db"
    workflow = Workflow(id="slow", pipelines={"go": [Step(slow, name="a"), Step(slow, name="b")]})
    async with Runtime(db, workflows=[workflow]) as rt:
        invoked = asyncio.ensure_future(rt.invoke("slow", "go", {}))
        await eventually(lambda: started, what="the first step to start")
        query(db, "UPDATE lease SET token = 'another process'")  # taken over
        failure = await asyncio.wait_for(rt.failed(), 30)
        assert "another process took over the lease" in str(failure)
        release.set()
        with pytest.raises(RuntimeStopped):
            await invoked
        assert started == [1], "a step started after the lease was lost"
        assert rt.failure is failure


def test_a_journal_being_created_by_another_process_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two CLI commands creating one journal together: the second met "database is locked"
    # from the pragmas at once (SQLite skips its busy handler there) and exited 2.
    import sqlite3

    from orchestrator.journal.sqlite import connection

    path = tmp_path / "new.db"
    connection.create_private(path)
    creator = sqlite3.connect(path, isolation_level=None)
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE made_first (x)")
    waits: list[float] = []
    real_sleep = connection.time.sleep

    def creator_finishes_while_we_wait(seconds: float) -> None:
        if not waits:
            creator.execute("COMMIT")
        waits.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(connection.time, "sleep", creator_finishes_while_we_wait)
    # The creator is in this thread: its lock cannot go while SQLite's busy handler waits.
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 50)
    conn = connection.connect_writer(path, "FULL")
    try:
        assert waits, "the locked file was never waited for"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT name FROM sqlite_schema").fetchall() == [("made_first",)]
    finally:
        conn.close()
        creator.close()

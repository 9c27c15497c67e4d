"""The recovery budget in process, and a journal of the previous schema migrating to it.

A runtime stopped while a step hangs leaves its run ``running``, as a crash does, but the
next runtime's recovery does not count it as a crash; these tests write the count a crash
would have left into the journal. Crashes with real processes are in `test_crash_loop.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from procs import query

from orchestrator import Runtime, Step, Workflow
from orchestrator.journal.sqlite import schema
from orchestrator.journal.sqlite.commands import queue_command

starts: list[str] = []
started = asyncio.Event()


async def hang(state: dict[str, Any]) -> dict[str, Any]:
    starts.append("hang")
    started.set()
    await asyncio.sleep(3600)  # until the runtime stops
    return state


async def finish(state: dict[str, Any]) -> dict[str, Any]:
    starts.append("finish")
    return {**state, "finished": True}


HANGING = Workflow(id="w", pipelines={"go": [hang]})


@pytest.fixture(autouse=True)
def _reset() -> None:
    global started
    starts.clear()
    started = asyncio.Event()  # bound to this test's loop on first use


async def session(
    db: Path, *, invoke: bool = False, starts_step: bool = True, max_recoveries: int | None = 3
) -> None:
    """One runtime on `db` until the hanging step starts, or until it is idle."""
    async with Runtime(
        db, workflows=[HANGING], shutdown_grace=0.01, max_recoveries=max_recoveries
    ) as rt:
        if invoke:
            pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
            pending.add_done_callback(lambda task: task.exception())  # RuntimeStopped
        if starts_step:
            await asyncio.wait_for(started.wait(), 5)
            started.clear()
        else:
            await rt.idle()


async def only_run(db: Path) -> tuple[Any, ...]:
    [run] = query(db, "SELECT run_id, status, error_code, error FROM runs")
    return run


def crashed(db: Path, times: int) -> None:
    """Make the journal say recovery already continued its run at "hang" `times` times."""
    query(db, "DELETE FROM recoveries")
    query(db, "INSERT INTO recoveries (run, step, count) SELECT id, 'hang', ? FROM runs", (times,))


async def test_a_stop_that_cancels_a_step_is_not_a_crash(db: Path) -> None:
    await session(db, invoke=True, max_recoveries=1)
    for _ in range(4):
        await session(db, max_recoveries=1)
    assert starts == ["hang"] * 5 and (await only_run(db))[1] == "running"
    assert query(db, "SELECT step, count FROM recoveries") == [("hang", -1)]


async def test_the_last_recovery_in_the_budget_starts_the_step(db: Path) -> None:
    await session(db, invoke=True, max_recoveries=2)
    crashed(db, 1)
    await session(db, max_recoveries=2)
    assert starts == ["hang"] * 2 and (await only_run(db))[1] == "running"


async def test_past_the_budget_recovery_fails_the_run_with_crash_loop(db: Path) -> None:
    await session(db, invoke=True, max_recoveries=2)
    crashed(db, 2)  # the step started 3 times, and the process died each time
    await session(db, starts_step=False, max_recoveries=2)
    assert starts == ["hang"]
    run_id, status, code, error = await only_run(db)
    assert (status, code) == ("failed", "CRASH_LOOP")
    assert error is not None and "step 'hang'" in error and "3 times" in error
    async with Runtime(db) as rt:
        kinds = [entry.kind for entry in await rt.timeline(run_id)]
    assert "run.crash_loop" in kinds and "run.recovered" not in kinds


async def test_no_limit_with_none(db: Path) -> None:
    await session(db, invoke=True, max_recoveries=None)
    crashed(db, 1000)
    await session(db, max_recoveries=None)
    assert starts == ["hang"] * 2 and (await only_run(db))[1] == "running"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_recoveries_is_checked(db: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="max_recoveries"):
        Runtime(db, max_recoveries=bad)


def previous_schema(path: Path) -> list[tuple[str, str]]:
    """The schema a journal had before the recoveries table (migrations 1 to 6)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
            schema.migrate(conn, path)
        return _schema_of(conn)
    finally:
        conn.close()


def _schema_of(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT name, sql FROM sqlite_schema ORDER BY name").fetchall()


async def test_a_journal_of_the_previous_schema_migrates_and_recovers(
    db: Path, tmp_path: Path
) -> None:
    assert len(schema.MIGRATIONS) >= 18  # this test is about migrations 7 to 18
    await session(db, invoke=True)  # a run left running in step "hang"
    # The same journal as the previous release wrote it: without what migrations 7 to 18 add.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("ALTER TABLE runs DROP COLUMN paused_in")
    conn.execute("DROP INDEX runs_by_workflow_status")
    conn.execute("ALTER TABLE checkpoints DROP COLUMN base")  # its states are small: whole
    conn.execute("DROP TRIGGER runs_snapshots")
    conn.execute("DROP TABLE snapshots")
    for trigger in ("run_counts_insert", "run_counts_update", "run_counts_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE run_counts")
    conn.execute("DROP INDEX runs_errors")
    conn.execute("DROP TABLE children")
    conn.execute("ALTER TABLE waits DROP COLUMN joins")
    conn.execute("DROP TABLE switches")
    conn.execute("ALTER TABLE schedule_state DROP COLUMN next_tick")
    conn.execute("DROP TABLE idempotency_keys")  # and its index of migration 13
    conn.execute("DROP TABLE prune_marks")
    conn.execute("DROP INDEX timeline_no_run")
    conn.execute("DROP TABLE recoveries")
    conn.execute("ALTER TABLE lease DROP COLUMN degraded")
    conn.execute("ALTER TABLE runs DROP COLUMN forked_from_run")
    conn.execute("ALTER TABLE runs DROP COLUMN forked_from_step")
    for index in ("runs_by_end", "waits_by_run", "wait_buffer_by_event"):
        conn.execute(f"DROP INDEX {index}")
    conn.execute("PRAGMA user_version = 6")
    assert _schema_of(conn) == previous_schema(tmp_path / "v6.db")
    conn.close()

    fixed = Workflow(id="w", pipelines={"go": [Step(finish, name="hang")]})
    async with Runtime(db, workflows=[fixed]) as rt:
        [run] = await rt.list_all_runs()
        result = await rt.wait(run.run_id, timeout=5)
    assert result.status == "completed" and result.state == {"finished": True}
    assert query(db, "PRAGMA user_version") == [(len(schema.MIGRATIONS),)]
    assert query(db, "SELECT step, count FROM recoveries") == [("hang", 1)]
    indexes = {row[0] for row in query(db, "SELECT name FROM sqlite_schema WHERE type = 'index'")}
    assert {"runs_by_end", "waits_by_run", "wait_buffer_by_event", "timeline_no_run"} <= indexes
    assert {"idempotency_keys_by_target", "runs_by_workflow_status"} <= indexes
    # Counted when migrated, then kept by the triggers: the run completed since.
    assert query(db, "SELECT status, n FROM run_counts WHERE n > 0") == [("completed", 1)]


async def test_a_signal_written_while_down_reaches_the_recovered_step(db: Path) -> None:
    await session(db, invoke=True)  # a run left running in step "hang"
    [(run_id, *_)] = query(db, "SELECT run_id FROM runs")
    queue_command(db, "signal", run_id, {"signalled": True})
    fixed = Workflow(id="w", pipelines={"go": [Step(finish, name="hang")]})
    async with Runtime(db, workflows=[fixed]) as rt:
        result = await rt.wait(run_id, timeout=5)
    # Applied before the step started again: the signal wins over what the step returns.
    assert result.status == "completed"
    assert result.state == {"finished": True, "signalled": True}
    assert query(db, "SELECT outcome FROM inbox") == [("ok",)]


async def test_a_retry_of_a_crash_looped_run_starts_its_count_again(db: Path) -> None:
    await session(db, invoke=True, max_recoveries=2)
    crashed(db, 2)
    await session(db, starts_step=False, max_recoveries=2)
    run_id, status, code, _ = await only_run(db)
    assert (status, code) == ("failed", "CRASH_LOOP")
    assert query(db, "SELECT step, count FROM recoveries") == [("hang", 2)]
    async with Runtime(db, workflows=[HANGING], shutdown_grace=0.01, max_recoveries=2) as rt:
        retrying = asyncio.ensure_future(rt.retry(run_id))
        retrying.add_done_callback(lambda task: task.exception())  # RuntimeStopped
        await asyncio.wait_for(started.wait(), 5)
        await rt.list_runs()  # after what this runtime wrote so far has committed
        # The retried attempt starts with no crash counted: its budget is whole again.
        assert query(db, "SELECT step, count FROM recoveries") == []
        assert (await only_run(db))[1:3] == ("running", None)
    assert starts == ["hang", "hang"]

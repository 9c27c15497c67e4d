"""An executor's writer (`ExecutorWriter`): group commit fenced by its own `standbys` row.

Real databases (`pg_url`); the coordinator's side is `PostgresRunTasks.abandon`, which
judges an executor gone (its row stale), ends its writer's connection, fences its row and
deletes its tasks. A writer frozen inside a batch is a real process stopped with SIGSTOP at
the batch's last point before COMMIT.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from procs import FREEZE_INSIDE_A_BATCH, frozen_script, query
from test_pg_run_tasks import tasks_of
from test_pg_step_jobs import NOW, add_daemon, add_standby

from orchestrator.errors import JournalLocked
from orchestrator.journal import ops
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.postgres.executor_writer import ExecutorWriter
from orchestrator.journal.postgres.run_tasks import PostgresRunTasks

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def coordinator(pg_url: str) -> AsyncIterator[PostgresRunTasks]:
    await migrate_journal(pg_url)
    tasks = PostgresRunTasks(pg_url)
    await tasks.open()
    try:
        yield tasks
    finally:
        await tasks.close()


def notes(url: str) -> list[tuple[object, ...]]:
    return query(url, "SELECT message FROM timeline WHERE kind = 'executor.test' ORDER BY id")


def note(text: str) -> list[ops.Op]:
    return [ops.add_timeline(None, NOW, "runtime", "executor.test", message=text)]


async def claim_one(url: str, coordinator: PostgresRunTasks, token: str) -> tuple[int, int]:
    """An executor `token` enlisted, holding one task of a new daemon: (daemon, task)."""
    daemon = add_daemon(url)
    await coordinator.enlist(token=token, executes_for="standby")
    (task_id,) = await coordinator.offer(tasks_of(1), daemon_id=daemon, epoch=1, now=NOW)
    (claimed,) = await coordinator.claim(token=token, digests=["d1"], limit=1, now=NOW)
    assert claimed.id == task_id
    return daemon, task_id


def go_stale(url: str, token: str) -> None:
    query(url, "UPDATE standbys SET seen_at = 0 WHERE token = ?", (token,))


async def test_an_executor_writes_under_its_row_until_it_is_fenced(
    pg_url: str, coordinator: PostgresRunTasks
) -> None:
    daemon, task_id = await claim_one(pg_url, coordinator, "x")
    writer = ExecutorWriter(pg_url, token="x")
    await writer.open()
    running = asyncio.create_task(writer.run())
    try:
        await writer.write(note("before"))
        (marked,) = query(pg_url, "SELECT wrote_at FROM standbys WHERE token = 'x'")
        assert marked[0] is not None  # each batch marks the row it is fenced by
        go_stale(pg_url, "x")
        assert await coordinator.abandon(daemon_id=daemon, now=NOW + 1) == [task_id]
        with pytest.raises(JournalLocked, match="fenced this executor"):
            await writer.write(note("after"))
        assert isinstance(writer.failure, JournalLocked)
        assert not await coordinator.renew("x")  # its loop learns it too: it enlists anew
    finally:
        await writer.close()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert notes(pg_url) == [("before",)]
    assert query(pg_url, "SELECT count(*) FROM run_tasks") == [(0,)]


async def test_a_row_deleted_fences_as_well(pg_url: str, coordinator: PostgresRunTasks) -> None:
    await coordinator.enlist(token="y", executes_for="standby")
    writer = ExecutorWriter(pg_url, token="y")
    await writer.open()
    running = asyncio.create_task(writer.run())
    try:
        await coordinator.leave("y")  # as a registering daemon deletes a stale row
        with pytest.raises(JournalLocked):
            await writer.write(note("after"))
        await coordinator.enlist(token="z", executes_for="standby")
        assert await coordinator.executors() == 1  # a new token, never the old row back
    finally:
        await writer.close()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert notes(pg_url) == []


async def test_the_standby_it_executes_for_fenced_fences_the_executor(
    pg_url: str, coordinator: PostgresRunTasks
) -> None:
    """Judged gone for the steps it serves, a standby's executor writes nothing more."""
    add_standby(pg_url, "standby")
    await coordinator.enlist(token="w", executes_for="standby")
    writer = ExecutorWriter(pg_url, token="w")
    await writer.open()
    running = asyncio.create_task(writer.run())
    try:
        await writer.write(note("before"))
        query(pg_url, "UPDATE standbys SET fenced_at = 1 WHERE token = 'standby'")
        with pytest.raises(JournalLocked):
            await writer.write(note("after"))
        assert not await coordinator.renew("w")  # its loop enlists anew, and cannot:
        with pytest.raises(JournalLocked, match="fenced this standby"):
            await coordinator.enlist(token="v", executes_for="standby")
        assert await coordinator.executors() == 0
    finally:
        await writer.close()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert notes(pg_url) == [("before",)]


FROZEN = (
    FREEZE_INSIDE_A_BATCH
    + """
from orchestrator.journal import ops
from orchestrator.journal.postgres.executor_writer import ExecutorWriter


async def main() -> None:
    faults = FreezeInsideABatch()
    writer = ExecutorWriter(sys.argv[1], token=sys.argv[2], faults=faults)
    await writer.open()
    running = asyncio.create_task(writer.run())
    print("ready", flush=True)
    faults.armed = True
    note = ops.add_timeline(None, 1, "runtime", "executor.test", message="frozen")
    try:
        await writer.write([note])
        print("written", flush=True)
    except Exception as exc:
        print("refused", getattr(exc, "code", type(exc).__name__), flush=True)
    await writer.close()
    running.cancel()


asyncio.run(main())
"""
)


async def test_an_executor_frozen_inside_a_batch_is_cut_off_fenced_and_refused(
    tmp_path: Path, pg_url: str, coordinator: PostgresRunTasks
) -> None:
    """Frozen, its batch holds its row's lock: the fence would wait for it as long."""
    daemon, task_id = await claim_one(pg_url, coordinator, "f")
    go_stale(pg_url, "f")  # now: once frozen in its batch, its row is locked
    async with frozen_script(tmp_path, FROZEN, pg_url, "f") as proc:
        abandoned = await asyncio.wait_for(coordinator.abandon(daemon_id=daemon, now=NOW), 30)
        assert abandoned == [task_id]
        os.kill(proc.pid, signal.SIGCONT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"refused JOURNAL_LOCKED" in out, (out, err)
    assert notes(pg_url) == []  # neither the frozen batch nor its retry committed

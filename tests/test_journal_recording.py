"""`RecordingJournal`, the in-memory writer double: batches, commits, `together`, failures."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import JournalError
from orchestrator.journal import JournalWriter, RecordingJournal, ops
from orchestrator.journal.ops import Stmt


def as_writer(journal: RecordingJournal) -> JournalWriter:
    """The double is a `JournalWriter` (mypy checks this assignment)."""
    return journal


async def test_each_enqueue_is_a_batch_committed_at_once() -> None:
    journal = RecordingJournal()
    first = journal.enqueue([ops.set_status(1, "running", 10)])
    second = journal.enqueue([ops.set_status(2, "running", 11), ops.set_version(2, "v2")])
    assert first.done() and second.done() and journal.backlog == 0
    assert journal.batches == [
        [ops.set_status(1, "running", 10)],
        [ops.set_status(2, "running", 11), ops.set_version(2, "v2")],
    ]
    assert journal.ops_of(Stmt.SET_STATUS) == [
        ("running", None, None, 10, 1),
        ("running", None, None, 11, 2),
    ]
    assert journal.ops_of(Stmt.INSERT_RUN) == []


async def test_together_makes_one_batch_of_nested_enqueues() -> None:
    journal = RecordingJournal()
    writer = as_writer(journal)
    with writer.together():
        first = writer.enqueue([ops.mark_routed("e1", 5)])
        with writer.together():
            second = writer.enqueue([ops.add_route("e1", 1, "started")])
        assert not first.done() and journal.pending == [
            ops.mark_routed("e1", 5),
            ops.add_route("e1", 1, "started"),
        ]
    assert first is second and first.done()
    assert journal.batches == [[ops.mark_routed("e1", 5), ops.add_route("e1", 1, "started")]]


async def test_without_auto_commit_writes_wait_for_an_explicit_commit() -> None:
    journal = RecordingJournal(auto_commit=False)
    writer = as_writer(journal)
    write = asyncio.create_task(writer.write([ops.inbox_done(7, "ok", 3)]))
    await asyncio.sleep(0)  # a yield, not a wait: the task runs to its await (no threads here)
    flush = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)  # the same for the flush
    assert not write.done() and not flush.done()
    assert journal.batches == [] and writer.backlog == 1
    journal.commit()
    await asyncio.wait_for(asyncio.gather(write, flush), 1)
    assert journal.ops == [ops.inbox_done(7, "ok", 3)]


async def test_an_injected_failure_fails_that_batch_and_stops_the_writer() -> None:
    journal = RecordingJournal()
    writer = as_writer(journal)
    writer.enqueue([ops.set_version(1, "v1")])
    journal.fail_next(JournalError("disk full"))
    failed = writer.enqueue([ops.set_version(1, "v2")])
    assert isinstance(failed.exception(), JournalError)
    assert str(writer.failure) == "disk full"
    with pytest.raises(JournalError, match="disk full"):
        writer.enqueue([ops.set_version(1, "v3")])
    with pytest.raises(JournalError, match="disk full"):
        await writer.write([])
    assert journal.ops_of(Stmt.SET_VERSION) == [("v1", 1)]


async def test_open_run_mark_ready_and_close_as_the_runtime_uses_them() -> None:
    journal = RecordingJournal(max_run_row=41)
    writer = as_writer(journal)
    assert (await writer.open()).max_run_row == 41 and journal.opened
    running = asyncio.create_task(writer.run())
    await writer.mark_ready()
    held = RecordingJournal(auto_commit=False)
    held.enqueue([ops.set_version(3, "v")])
    await held.close()  # commits what is pending
    assert held.ops == [ops.set_version(3, "v")]
    await writer.close()
    await asyncio.wait_for(running, 1)
    assert journal.closed and len(journal.ops_of(Stmt.MARK_READY)) == 1
    with pytest.raises(JournalError, match="closed"):
        writer.enqueue([])

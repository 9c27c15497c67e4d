"""An executor's replies written together (`segments.replying.Replier`), on the in-memory table.

The journal's side of `reply_all` on PostgreSQL is in tests/test_pg_run_tasks.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.clock import FakeClock
from orchestrator.engine.segments.replying import Replier
from orchestrator.errors import JournalError
from orchestrator.journal import RunTask, RunTaskOffer
from tests.run_tasks_memory import MemoryRunTasks, MemoryTaskTable

DONE = {"end": {"status": "completed"}}


class Writer:
    """What a `Replier` uses of a journal writer: a flush it can hold, and count."""

    def __init__(self) -> None:
        self.flushes = 0
        self.flushing = asyncio.Event()  # a flush began
        self.open = asyncio.Event()  # flushes return
        self.open.set()

    async def flush(self) -> None:
        self.flushes += 1
        self.flushing.set()
        await asyncio.wait_for(self.open.wait(), 10)


class Counting(MemoryRunTasks):
    """The in-memory table, counting `reply_all` transactions; it can fail the next one."""

    def __init__(self, table: MemoryTaskTable) -> None:
        super().__init__(table)
        self.transactions: list[list[int]] = []
        self.fail_next = False

    async def reply_all(
        self, answers: Any, *, token: str, now: int
    ) -> tuple[set[int], dict[int, str]]:
        if self.fail_next:
            self.fail_next = False
            raise JournalError("the server went away")
        self.transactions.append([answer.id for answer in answers])
        return await super().reply_all(answers, token=token, now=now)


async def claimed(count: int) -> tuple[Counting, list[RunTask]]:
    table = MemoryTaskTable()
    table.standbys.add("e1")
    tasks = Counting(table)
    offers = [RunTaskOffer(10 + i, f"r{i}", "d", {}, "{}") for i in range(count)]
    await tasks.offer(offers, daemon_id=1, epoch=1, now=0)
    return tasks, await tasks.claim(token="e1", digests={"d"}, limit=count, now=0)


def replier(tasks: Counting, writer: Writer) -> Replier:
    return Replier(tasks, writer, "e1", FakeClock())  # type: ignore[arg-type]


async def test_replies_queued_while_one_is_written_go_together_after_a_flush() -> None:
    tasks, claims = await claimed(5)
    writer = Writer()
    writer.open.clear()  # the first batch's flush waits: the others queue meanwhile
    replies = replier(tasks, writer)
    sent = [asyncio.create_task(replies.reply(task, DONE)) for task in claims]
    await asyncio.wait_for(writer.flushing.wait(), 10)
    await asyncio.sleep(0)  # the other tasks queue their replies behind the first batch
    writer.open.set()
    assert await asyncio.wait_for(asyncio.gather(*sent), 10) == [True] * 5
    ids = [task.id for task in claims]
    assert tasks.transactions == [ids[:1], ids[1:]]
    assert writer.flushes == 2  # each batch flushes the writer once, before its replies
    assert sorted(r.id for r in await tasks.take_replies(ids)) == ids


async def test_a_failed_batch_leaves_its_replies_to_the_next_one() -> None:
    tasks, (first, second) = await claimed(2)
    replies = replier(tasks, Writer())
    tasks.fail_next = True
    with pytest.raises(JournalError):
        await replies.reply(first, DONE)
    assert await replies.reply(second, DONE)
    assert tasks.transactions == [[first.id, second.id]]  # the failed one went again


async def test_a_reply_the_journal_cannot_keep_is_sent_as_a_crash() -> None:
    tasks, (task,) = await claimed(1)
    replies = replier(tasks, Writer())
    assert await replies.reply(task, {"end": {"error": "bad \udcff text"}})
    ((taken,),) = [await tasks.take_replies([task.id])]
    assert set(taken.reply) == {"crashed"} and "could not be kept" in taken.reply["crashed"]


async def test_a_reply_to_a_claim_no_longer_held_is_not_taken() -> None:
    tasks, (task,) = await claimed(1)
    tasks.table.rows[task.id].attempts += 1  # requeued and claimed again meanwhile
    assert not await replier(tasks, Writer()).reply(task, DONE)
    assert tasks.transactions == [[task.id]]

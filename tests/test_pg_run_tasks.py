"""Segments of runs offered to executors through a PostgreSQL journal (`PostgresRunTasks`).

Real databases (the `pg_url` fixture); daemon and standby rows written as their writers
write them, a stale one with an old ``seen_at``. No sleeps: a notification is awaited with
a bound, a lock wait is seen in ``pg_stat_activity`` with `eventually`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from procs import query
from test_journal_copy import write_journal
from test_pg_step_jobs import (
    BOUND,
    NOW,
    Opener,
    add_daemon,
    add_standby,
    gone_pid,
    opened_tables,
    race_two_claimers,
)
from test_pg_writer import running

from orchestrator.errors import JournalCorrupt, JournalLocked
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.copy import copy_journal
from orchestrator.journal.liveness import HOST
from orchestrator.journal.postgres import schema, writer
from orchestrator.journal.postgres.backend import PostgresJournal
from orchestrator.journal.postgres.connection import connect
from orchestrator.journal.postgres.run_tasks import PostgresRunTasks
from orchestrator.journal.postgres.writer import PostgresWriter
from orchestrator.journal.records import RunTask, RunTaskAnswer, RunTaskOffer, RunTaskReply
from orchestrator.journal.sqlite.backend import SqliteJournal
from orchestrator.testing import eventually
from tests.run_tasks_memory import MemoryRunTasks, MemoryTaskTable

Open = Opener[PostgresRunTasks]


@pytest.fixture
async def run_tasks(pg_url: str) -> AsyncIterator[Open]:
    """Opens `PostgresRunTasks` on the migrated `pg_url`, each closed at the test's end."""
    async with opened_tables(pg_url, PostgresRunTasks) as open_one:
        yield open_one


def tasks_of(n: int, *, digest: str = "d1", state: str = '{"n":1}') -> list[RunTaskOffer]:
    return [
        RunTaskOffer(100 + i, f"run-{i}", digest, {"trigger": "t", "step": i}, state)
        for i in range(n)
    ]


def rows(url: str) -> list[tuple[object, ...]]:
    """Every task: id, claimed_by, attempts, cancelled, reply (by id)."""
    return query(
        url, "SELECT id, claimed_by, attempts, cancelled, reply FROM run_tasks ORDER BY id"
    )


def fenced(url: str) -> dict[str, object]:
    return dict(query(url, "SELECT token, fenced_at FROM standbys"))


async def test_a_task_is_offered_claimed_answered_and_its_reply_taken(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e1")
    ids = await coordinator.offer(tasks_of(2), daemon_id=daemon, epoch=1, now=NOW)
    assert ids == sorted(ids) and len(set(ids)) == 2
    claimed = await executor.claim(token="e1", digests={"d1"}, limit=10, now=NOW + 1)
    assert claimed == [
        RunTask(ids[0], 100, "run-0", "d1", {"trigger": "t", "step": 0}, '{"n":1}', {}, 0),
        RunTask(ids[1], 101, "run-1", "d1", {"trigger": "t", "step": 1}, '{"n":1}', {}, 0),
    ]
    assert await executor.claim(token="e1", digests={"d1"}, limit=10, now=NOW) == []
    assert await coordinator.take_replies(ids) == []  # nothing answered yet
    outcome = {"status": "completed", "state": '{"n":2}', "position": 3}
    assert await executor.reply(ids[0], token="e1", attempts=0, reply=outcome, now=NOW)
    assert not await executor.reply(ids[0], token="e1", attempts=0, reply={}, now=NOW)  # once
    add_standby(pg_url, "e2")
    assert not await executor.reply(ids[1], token="e2", attempts=0, reply={}, now=NOW)  # not its
    assert not await executor.reply(ids[1], token="e1", attempts=1, reply={}, now=NOW)  # attempt
    assert await coordinator.take_replies(ids) == [RunTaskReply(ids[0], outcome)]
    assert [row[0] for row in rows(pg_url)] == [ids[1]]
    assert await coordinator.offer([], daemon_id=daemon, epoch=1, now=NOW) == []


async def claimed_by(
    url: str, run_tasks: Open, claims: dict[str, int]
) -> tuple[PostgresRunTasks, PostgresRunTasks, list[int]]:
    """A coordinator's tasks claimed by executors (token: how many, in order), and their ids."""
    coordinator, executor = await run_tasks(), await run_tasks()
    for token in claims:
        add_standby(url, token)
    count = sum(claims.values())
    ids = await coordinator.offer(tasks_of(count), daemon_id=add_daemon(url), epoch=1, now=NOW)
    for token, limit in claims.items():
        await executor.claim(token=token, digests={"d1"}, limit=limit, now=NOW)
    return coordinator, executor, ids


async def test_replies_written_together_answer_each_claim_once(
    pg_url: str, run_tasks: Open
) -> None:
    """`reply_all`: one transaction; each id answered as `reply` would; bad text left out."""
    coordinator, executor, ids = await claimed_by(pg_url, run_tasks, {"e1": 4, "e2": 1})
    done = {"status": "completed", "state": '{"n":2}'}
    answers = [
        RunTaskAnswer(ids[0], 0, done),
        RunTaskAnswer(ids[1], 1, done),  # another attempt's claim
        RunTaskAnswer(ids[2], 0, {"status": "failed", "error": "bad \udcff text"}),
        RunTaskAnswer(ids[3], 0, {**done, "big": "x" * 3_000_000}),
        RunTaskAnswer(ids[4], 0, done),  # e2's task
    ]
    answered, unkept = await executor.reply_all(answers, token="e1", now=NOW)
    assert answered == {ids[0], ids[3]}
    assert list(unkept) == [ids[2]] and "surrogate" in unkept[ids[2]]
    again, _ = await executor.reply_all(answers[:1], token="e1", now=NOW)
    assert again == set()  # answered once
    replies = await coordinator.take_replies(ids)
    assert sorted(reply.id for reply in replies) == [ids[0], ids[3]]
    assert await executor.reply_all([], token="e1", now=NOW) == (set(), {})
    query(pg_url, "UPDATE standbys SET fenced_at = 1 WHERE token = 'e2'")
    assert await executor.reply_all(answers[4:], token="e2", now=NOW) == (set(), {})


async def test_a_reply_the_server_refuses_leaves_the_others_of_its_batch_answered(
    pg_url: str, run_tasks: Open
) -> None:
    """Refused for its value, one reply is left out; the rest commit (one at a time then)."""
    _, executor, ids = await claimed_by(pg_url, run_tasks, {"e1": 3})
    # Any value refused by the server (SQLSTATE class 23 here; 54, too long, in real life).
    query(pg_url, "ALTER TABLE run_tasks ADD CONSTRAINT small CHECK (length(reply) < 1000)")
    big = {"status": "completed", "state": "x" * 2_000}
    answers = [RunTaskAnswer(i, 0, big if i == ids[1] else {"n": i}) for i in ids]
    answered, unkept = await executor.reply_all(answers, token="e1", now=NOW)
    assert answered == {ids[0], ids[2]}
    assert list(unkept) == [ids[1]] and "cannot be kept" in unkept[ids[1]]
    alone = await executor.reply_all([answers[1]], token="e1", now=NOW)
    assert alone[0] == set() and list(alone[1]) == [ids[1]]


async def test_two_executors_racing_never_claim_one_task_twice(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, first, second = await run_tasks(), await run_tasks(), await run_tasks()
    ids = await coordinator.offer(tasks_of(50), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    add_standby(pg_url, "a")
    add_standby(pg_url, "b")

    await race_two_claimers(pg_url, first, second, ids)


async def test_patches_merge_and_reach_the_executor_once(pg_url: str, run_tasks: Open) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    add_standby(pg_url, "e")
    add_standby(pg_url, "other")
    first, second = await coordinator.offer(
        tasks_of(2), daemon_id=add_daemon(pg_url), epoch=1, now=NOW
    )
    # Before the claim: merged, later keys winning, and handed over with the claim.
    assert await coordinator.patch(first, {"signal": 1, "keep": "é"})
    assert await coordinator.patch(first, {"signal": 2, "nul": "a\x00b"})
    claimed = await executor.claim(token="e", digests=["d1"], limit=1, now=NOW)
    assert [task.patches for task in claimed] == [{"signal": 2, "keep": "é", "nul": "a\x00b"}]
    assert await executor.take_patches([first], token="e") == {}  # handed over once
    # After the claim: taken by its executor only, then cleared.
    assert await coordinator.patch(first, {"a": [1]})
    assert await coordinator.patch(first, {"b": None})
    assert await executor.take_patches([first, second], token="other") == {}
    assert await executor.take_patches([first, second], token="e") == {first: {"a": [1], "b": None}}
    assert await executor.take_patches([first], token="e") == {}
    assert await executor.take_patches([], token="e") == {}
    # A task answered, cancelled or gone takes no patch.
    assert await executor.reply(first, token="e", attempts=0, reply={}, now=NOW)
    assert not await coordinator.patch(first, {"late": 1})
    await coordinator.cancel([second])
    assert not await coordinator.patch(second, {"late": 1})
    await coordinator.forget([first, second])
    assert not await coordinator.patch(first, {"late": 1})


async def test_held_is_what_the_executor_still_claims_at_its_attempt(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    add_standby(pg_url, "e")
    ids = await coordinator.offer(tasks_of(5), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    claimed = await executor.claim(token="e", digests=["d1"], limit=4, now=NOW)
    claims = {task.id: task.attempts for task in claimed}
    assert await executor.held(claims, token="e") == set(ids[:4])
    await coordinator.cancel([ids[0]])
    await coordinator.forget([ids[1]])
    assert await executor.reply(ids[2], token="e", attempts=0, reply={}, now=NOW)
    assert await executor.held({**claims, ids[3]: 1}, token="e") == set()  # another attempt
    assert await executor.held({**claims, ids[4]: 0}, token="e") == {ids[3]}  # ids[4]: open
    assert await executor.held(claims, token="nobody") == set()
    assert await executor.held({}, token="e") == set()


async def test_gone_executors_are_fenced_their_tasks_requeued_then_crashed(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    for token in ("stale", "killed", "fresh", "unregistered"):
        add_standby(pg_url, token)
    ids = await coordinator.offer(tasks_of(4), daemon_id=daemon, epoch=1, now=NOW)
    for token in ("stale", "killed", "fresh", "unregistered"):
        await executor.claim(token=token, digests=["d1"], limit=1, now=NOW)
    query(pg_url, "UPDATE standbys SET seen_at = 1 WHERE token = 'stale'")
    query(pg_url, "UPDATE standbys SET pid = %s WHERE token = 'killed'", (gone_pid(),))
    query(pg_url, "DELETE FROM standbys WHERE token = 'unregistered'")
    assert await coordinator.requeue_abandoned(daemon_id=daemon, now=NOW + 9, max_attempts=2) == 3
    assert fenced(pg_url) == {"stale": NOW + 9, "killed": NOW + 9, "fresh": None}
    assert [row[1:3] for row in rows(pg_url)] == [(None, 1), (None, 1), ("fresh", 0), (None, 1)]
    # A fenced executor may not answer (nor claim, nor hold); the next claim may.
    assert not await executor.reply(ids[0], token="stale", attempts=0, reply={}, now=NOW)
    again = await executor.claim(token="fresh", digests=["d1"], limit=3, now=NOW)
    assert [(task.id, task.attempts) for task in again] == [(ids[0], 1), (ids[1], 1), (ids[3], 1)]
    assert await coordinator.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=2) == 0
    query(pg_url, "UPDATE standbys SET seen_at = 1 WHERE token = 'fresh'")
    assert await coordinator.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=2) == 4
    crashed = {"crashed": "the daemons serving it stopped 2 times"}
    replies = await coordinator.take_replies(ids)
    assert replies == [RunTaskReply(i, crashed) for i in (ids[0], ids[1], ids[3])]
    assert [row[1:3] for row in rows(pg_url)] == [(None, 1)]  # ids[2]: attempt 1 of 2
    # Another daemon's tasks are not this one's to requeue.
    other = add_daemon(pg_url, "other")
    assert await coordinator.requeue_abandoned(daemon_id=other, now=NOW, max_attempts=2) == 0


async def test_a_fenced_executor_claims_replies_and_holds_nothing(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e")
    ids = await coordinator.offer(tasks_of(3), daemon_id=daemon, epoch=1, now=NOW)
    claimed = await executor.claim(token="e", digests=["d1"], limit=1, now=NOW)
    assert await coordinator.patch(claimed[0].id, {"s": 1})
    # Fenced as another coordinator's requeue would leave it, its row fresh again.
    query(pg_url, "UPDATE standbys SET fenced_at = 5 WHERE token = 'e'")
    with pytest.raises(JournalLocked, match="standby e was fenced"):
        await executor.claim(token="e", digests=["d1"], limit=9, now=NOW)
    with pytest.raises(JournalLocked, match="not registered"):
        await executor.claim(token="nobody", digests=["d1"], limit=9, now=NOW)
    assert not await executor.reply(ids[0], token="e", attempts=0, reply={}, now=NOW)
    assert await executor.held({ids[0]: 0}, token="e") == set()
    assert await executor.take_patches([ids[0]], token="e") == {}  # left for the next claim
    # Its task goes back (a fenced row counts as gone), with its patch, to another executor.
    assert await coordinator.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=3) == 1
    assert fenced(pg_url) == {"e": 5}  # fenced once: the first fence's time stays
    add_standby(pg_url, "e2")
    again = await executor.claim(token="e2", digests=["d1"], limit=1, now=NOW)
    assert [(task.id, task.patches, task.attempts) for task in again] == [(ids[0], {"s": 1}, 1)]


async def test_a_batch_holding_its_tasks_commits_before_the_fence(
    pg_url: str, run_tasks: Open
) -> None:
    """`held_in` takes the executor's row FOR SHARE: the fence waits for its batch."""
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e")
    ids = await coordinator.offer(tasks_of(2), daemon_id=daemon, epoch=1, now=NOW)
    claims = {
        t.id: t.attempts for t in await executor.claim(token="e", digests=["d1"], limit=2, now=NOW)
    }
    conn = await connect(pg_url)  # the executor's writer's connection
    try:
        with pytest.raises(RuntimeError, match="inside an open transaction"):
            await executor.held_in(conn, claims, token="e")
        await conn.rollback()
        async with conn.transaction():
            assert await executor.held_in(conn, claims, token="e") == set(ids)
            # Its row goes stale (an UPDATE, as its heartbeat: it does not wait for the batch).
            query(pg_url, "UPDATE standbys SET seen_at = 1 WHERE token = 'e'")
            requeue = asyncio.create_task(
                coordinator.requeue_abandoned(daemon_id=daemon, now=NOW + 1, max_attempts=3)
            )
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            await eventually(lambda: query(pg_url, waiting) == [(1,)], what="the fence waits")
            assert not requeue.done()
            # A cancel waits too (its coordinator then ends the run after this batch).
            other = await run_tasks()
            cancel = asyncio.create_task(other.cancel([ids[1]]))
            await eventually(lambda: query(pg_url, waiting) == [(2,)], what="the cancel waits")
            # The batch's last checkpoint answers one task; the other is still running.
            text = executor.reply_text({"status": "completed"})
            assert await executor.reply_in(conn, ids[0], token="e", attempts=0, reply=text, now=NOW)
        await asyncio.wait_for(cancel, BOUND)
        assert await asyncio.wait_for(requeue, BOUND) == 1  # the unanswered one
        async with conn.transaction():  # the next batch sees the fence
            assert await executor.held_in(conn, claims, token="e") == set()
            assert not await executor.reply_in(
                conn, ids[1], token="e", attempts=0, reply=text, now=NOW
            )
            assert await executor.take_patches_in(conn, ids, token="e") == {}
    finally:
        await conn.close()
    assert fenced(pg_url) == {"e": NOW + 1}
    assert await coordinator.take_replies(ids) == [RunTaskReply(ids[0], {"status": "completed"})]


async def test_cancel_forget_and_clear(pg_url: str, run_tasks: Open) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    old, new = add_daemon(pg_url, "old"), add_daemon(pg_url, "new")
    add_standby(pg_url, "e")
    theirs = await coordinator.offer(tasks_of(3), daemon_id=old, epoch=1, now=NOW)
    mine = await coordinator.offer(tasks_of(3), daemon_id=new, epoch=1, now=NOW)
    await coordinator.cancel([theirs[0], mine[0]])
    await coordinator.cancel([])
    claimed = await executor.claim(token="e", digests=["d1"], limit=9, now=NOW)
    assert [task.id for task in claimed] == theirs[1:] + mine[1:]  # none cancelled
    await coordinator.forget([mine[1]])
    await coordinator.forget([])
    assert await coordinator.clear(daemon_id=new) == 3
    assert [row[0] for row in rows(pg_url)] == [mine[0], mine[2]]
    assert await coordinator.clear(daemon_id=new) == 0


async def test_a_fenced_or_stopped_daemon_offers_nothing_and_its_tasks_wait(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e")
    await coordinator.offer(tasks_of(1), daemon_id=daemon, epoch=1, now=NOW)
    with pytest.raises(JournalLocked, match="offers no run tasks"):
        await coordinator.offer(tasks_of(1), daemon_id=daemon, epoch=2, now=NOW)
    with pytest.raises(JournalLocked):
        await coordinator.offer(tasks_of(1), daemon_id=daemon + 99, epoch=1, now=NOW)
    query(pg_url, "UPDATE daemons SET fenced_at = 5, epoch = 2")
    with pytest.raises(JournalLocked):
        await coordinator.offer(tasks_of(1), daemon_id=daemon, epoch=2, now=NOW)
    assert await executor.claim(token="e", digests=["d1"], limit=9, now=NOW) == []
    assert len(rows(pg_url)) == 1


async def test_text_the_journal_cannot_keep_is_refused_before_anything_is_sent(
    pg_url: str, run_tasks: Open
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e")
    with pytest.raises(ValueError, match="run task's state holds a NUL character"):
        await coordinator.offer(
            tasks_of(1, state='{"a":"\x00"}'), daemon_id=daemon, epoch=1, now=NOW
        )
    with pytest.raises(ValueError, match=r"run task's request is not valid Unicode.*surrogate"):
        bad = RunTaskOffer(1, "r", "d1", {"k": "\udc80"}, "{}")
        await coordinator.offer([bad], daemon_id=daemon, epoch=1, now=NOW)
    with pytest.raises(ValueError, match="run id holds a NUL"):
        await coordinator.offer(
            [RunTaskOffer(1, "r\x00", "d1", {}, "{}")], daemon_id=daemon, epoch=1, now=NOW
        )
    assert rows(pg_url) == []
    request = {"nul": "a\x00b", "text": "naïve 日本 🎉"}
    (task_id,) = await coordinator.offer(
        [RunTaskOffer(1, "r", "d1", request, "{}")], daemon_id=daemon, epoch=1, now=NOW
    )
    with pytest.raises(ValueError, match="run task's patch is not valid Unicode"):
        await coordinator.patch(task_id, {"\ud800": 1})
    with pytest.raises(ValueError, match="patch cannot be written as JSON"):
        await coordinator.patch(task_id, {"k": {1, 2}})
    with pytest.raises(ValueError, match="token holds a NUL"):
        await executor.claim(token="e\x00", digests=["d1"], limit=1, now=NOW)
    assert await executor.claim(token="e", digests=["d\x00", "d\ud800"], limit=1, now=NOW) == []
    (task,) = await executor.claim(token="e", digests=["d1"], limit=1, now=NOW)
    assert task.request == request and task.patches == {}
    with pytest.raises(ValueError, match="run task's reply is not valid Unicode"):
        await executor.reply(task_id, token="e", attempts=0, reply={"x": "\ud800"}, now=NOW)
    with pytest.raises(ValueError, match="token is not valid Unicode"):
        await executor.held({task_id: 0}, token="\ud800")
    assert rows(pg_url) == [(task_id, "e", 0, 0, None)]


async def test_rows_something_else_wrote_are_reported_not_a_crash(
    pg_url: str, run_tasks: Open, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    add_standby(pg_url, "e")
    ids = await coordinator.offer(tasks_of(3), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    query(pg_url, "UPDATE run_tasks SET request = '[1', patches = 'x' WHERE id = ?", (ids[0],))
    query(pg_url, "UPDATE run_tasks SET patches = '\"text\"' WHERE id = ?", (ids[1],))
    with caplog.at_level(logging.WARNING):
        claimed = await executor.claim(token="e", digests={"d1"}, limit=3, now=NOW)
    assert [(task.request == {}, task.patches) for task in claimed] == [
        (True, {}),
        (False, {}),
        (False, {}),
    ]
    assert f"run task {ids[0]} has a request that is not a JSON object" in caplog.text
    assert f"run task {ids[1]} has a patch that is not a JSON object" in caplog.text
    # Patches written by hand: taken, they are left out; patched, they are replaced.
    query(pg_url, "UPDATE run_tasks SET patches = '[' WHERE id = ?", (ids[0],))
    query(pg_url, "UPDATE run_tasks SET patches = '{\"ok\":1}' WHERE id = ?", (ids[1],))
    assert await executor.take_patches(ids, token="e") == {ids[1]: {"ok": 1}}
    query(pg_url, "UPDATE run_tasks SET patches = '[' WHERE id = ?", (ids[2],))
    assert await coordinator.patch(ids[2], {"s": 1})
    assert await executor.take_patches(ids, token="e") == {ids[2]: {"s": 1}}
    for task in claimed:
        assert await executor.reply(task.id, token="e", attempts=0, reply={"ok": 1}, now=NOW)
    query(pg_url, "UPDATE run_tasks SET reply = 'null' WHERE id = ?", (ids[0],))
    taken = await coordinator.take_replies(ids)
    assert [reply.id for reply in taken] == ids
    assert "has a reply that is not a JSON object" in taken[0].reply["crashed"]
    assert [reply.reply for reply in taken[1:]] == [{"ok": 1}, {"ok": 1}]


async def test_wait_returns_on_an_offer_a_patch_or_a_reply(pg_url: str, run_tasks: Open) -> None:
    coordinator, executor = await run_tasks(), await run_tasks()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e")
    await asyncio.wait_for(executor.wait(0.01), BOUND)  # nothing notified: its timeout
    waiting = asyncio.create_task(executor.wait(3600))
    (task_id,) = await coordinator.offer(tasks_of(1), daemon_id=daemon, epoch=1, now=NOW)
    await asyncio.wait_for(waiting, BOUND)
    await executor.claim(token="e", digests=["d1"], limit=1, now=NOW)
    waiting = asyncio.create_task(executor.wait(3600))
    await coordinator.patch(task_id, {"signal": 1})
    await asyncio.wait_for(waiting, BOUND)
    await coordinator.wait(0)
    waiting = asyncio.create_task(coordinator.wait(3600))
    await executor.reply(task_id, token="e", attempts=0, reply={}, now=NOW)
    await asyncio.wait_for(waiting, BOUND)


def test_only_a_postgresql_journal_has_run_tasks(tmp_path: Path) -> None:
    assert SqliteJournal(tmp_path / "journal.db").run_tasks() is None
    made = PostgresJournal("postgresql://u:secret@h/d").run_tasks()
    assert isinstance(made, PostgresRunTasks)
    assert "secret" not in made.location


async def test_migrations_5_and_6_upgrade_a_schema_4_journal_with_rows(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal copied by main's migrations 1-4, with runs, daemons, standbys and step jobs."""
    db = tmp_path / "journal.db"
    await write_journal(db)
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
        await copy_journal(db, pg_url)
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "e")
    query(
        pg_url,
        "INSERT INTO step_jobs (offered_by, offered_at, run_id, digest, request, state)"
        " VALUES (?, 1, 'r', 'd1', '{}', '{}')",
        (daemon,),
    )
    before = {
        t: query(pg_url, f"SELECT count(*) FROM {t}") for t in ("runs", "events", "step_jobs")
    }
    tasks = PostgresRunTasks(pg_url)
    with pytest.raises(JournalCorrupt, match="journal migrate"):
        await tasks.open()
    await tasks.close()
    migrated = await migrate_journal(pg_url)
    assert (migrated.before, migrated.after) == (4, 6)
    standing = "SELECT token, executes_for, wrote_at FROM standbys"
    assert query(pg_url, standing) == [("e", None, None)]  # a standby, not an executor
    after = {t: query(pg_url, f"SELECT count(*) FROM {t}") for t in ("runs", "events", "step_jobs")}
    assert after == before and before["runs"] != [(0,)]
    assert fenced(pg_url) == {"e": None}
    await tasks.open()
    try:
        (task_id,) = await tasks.offer(tasks_of(1), daemon_id=daemon, epoch=1, now=NOW)
        claimed = await tasks.claim(token="e", digests=["d1"], limit=1, now=NOW)
        assert [task.id for task in claimed] == [task_id]
    finally:
        await tasks.close()


# The in-memory double against the table: the same calls, the same answers.

TOKENS = st.sampled_from(["a", "b"])
CALLS = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(1, 3), st.sampled_from(["d1", "d2"])),
        st.tuples(
            st.just("claim"),
            TOKENS,
            st.sampled_from([(), ("d1",), ("d1", "d2")]),
            st.integers(0, 3),
        ),
        st.tuples(
            st.just("patch"),
            st.integers(0, 2),
            st.dictionaries(
                st.sampled_from(["x", "日"]),
                st.one_of(st.none(), st.integers(0, 9), st.text(max_size=3)),
                min_size=1,
                max_size=2,
            ),
        ),
        st.tuples(st.just("take_patches"), TOKENS),
        st.tuples(st.just("reply"), st.integers(0, 6), TOKENS, st.integers(0, 2)),
        st.tuples(st.just("held"), TOKENS),
        st.tuples(st.just("cancel"), st.integers(0, 6)),
        st.tuples(st.just("forget"), st.integers(0, 6)),
        st.tuples(st.just("gone"), TOKENS),
        st.tuples(st.just("requeue")),
        st.tuples(st.just("take_replies")),
    ),
    max_size=30,
)


async def call(
    tasks: PostgresRunTasks | MemoryRunTasks, step: tuple[Any, ...], daemon: int, ids: list[int]
) -> object:
    """One call of `step` on `tasks`: what it returned, or the type of what it raised."""
    name, *args = step
    pick = ids[args[0] % len(ids)] if ids and args and isinstance(args[0], int) else 0
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "offer": lambda: tasks.offer(
            tasks_of(args[0], digest=args[1]), daemon_id=daemon, epoch=1, now=NOW
        ),
        "claim": lambda: tasks.claim(token=args[0], digests=args[1], limit=args[2], now=NOW),
        "patch": lambda: tasks.patch(pick, args[1]),
        "take_patches": lambda: tasks.take_patches(ids, token=args[0]),
        "reply": lambda: tasks.reply(
            pick, token=args[1], attempts=args[2], reply={"n": pick}, now=NOW
        ),
        # Some at attempt 0, some at 1: a requeued task is held at its new attempt only.
        "held": lambda: tasks.held({i: n % 2 for n, i in enumerate(ids)}, token=args[0]),
        "cancel": lambda: tasks.cancel([pick]),
        "forget": lambda: tasks.forget([pick]),
        "requeue": lambda: tasks.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=2),
        "take_replies": lambda: tasks.take_replies(ids),
    }
    try:
        return await calls[name]()
    except JournalLocked:
        return JournalLocked


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=CALLS)
@example(
    calls=[
        ("offer", 2, "d1"),
        ("patch", 0, {"x": 1}),
        ("patch", 0, {"x": 2, "日": None}),
        ("claim", "a", ("d1",), 1),
        ("patch", 0, {"x": 3}),
        ("held", "a"),
        ("gone", "a"),
        ("take_patches", "a"),
        ("requeue",),
        ("claim", "b", ("d1", "d2"), 3),
        ("take_patches", "b"),
        ("reply", 0, "b", 1),
        ("take_replies",),
    ]
)
def test_the_in_memory_double_answers_as_the_table(
    pg_url: str, calls: list[tuple[Any, ...]]
) -> None:
    async def both() -> None:
        await migrate_journal(pg_url)
        query(pg_url, "TRUNCATE run_tasks, standbys RESTART IDENTITY")
        query(pg_url, "DELETE FROM daemons")
        daemon = add_daemon(pg_url)
        memory = MemoryTaskTable()
        for token in ("a", "b"):
            add_standby(pg_url, token)
            memory.standbys.add(token)
        table, double = PostgresRunTasks(pg_url), MemoryRunTasks(memory)
        await table.open()
        try:
            ids: list[int] = []
            for step in calls:
                if step[0] == "gone":
                    query(pg_url, "DELETE FROM standbys WHERE token = %s", (step[1],))
                    memory.standbys.discard(step[1])
                    continue
                got = await call(table, step, daemon, ids)
                assert await call(double, step, daemon, ids) == got, step
                if step[0] == "offer":
                    assert isinstance(got, list)
                    ids += got
        finally:
            await table.close()

    asyncio.run(both())


async def test_a_daemon_registering_keeps_the_fenced_rows_of_stale_standbys(
    pg_url: str, run_tasks: Open
) -> None:
    """Else a fenced executor woken again would write its row anew, unfenced, and claim."""
    executor = await run_tasks()
    add_standby(pg_url, "fenced", stale=True)
    add_standby(pg_url, "stale", stale=True)
    query(pg_url, "UPDATE standbys SET fenced_at = 5 WHERE token = 'fenced'")
    async with running(PostgresWriter(pg_url)):
        assert fenced(pg_url) == {"fenced": 5}
    # Its renewal (the writer's upsert of `seen_at`) leaves it fenced.
    query(pg_url, writer._STANDING_BY, ("fenced", os.getpid(), HOST, 7, 9))
    with pytest.raises(JournalLocked, match="fenced"):
        await executor.claim(token="fenced", digests=["d1"], limit=1, now=NOW)

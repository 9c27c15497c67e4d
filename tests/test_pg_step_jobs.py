"""Isolated steps offered to the standbys through a PostgreSQL journal (`PostgresStepJobs`).

Real databases (the `pg_url` fixture); daemon and standby rows written as their writers
write them, a stale one with an old ``seen_at``. No sleeps: a notification is awaited with
a bound, a reconnection with `eventually`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from procs import query

from orchestrator.errors import JournalCorrupt, JournalLocked, JournalUnreachable
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.liveness import HOST
from orchestrator.journal.postgres import schema
from orchestrator.journal.postgres.backend import PostgresJournal
from orchestrator.journal.postgres.offered import OfferedTable
from orchestrator.journal.postgres.run_tasks import PostgresRunTasks
from orchestrator.journal.postgres.step_jobs import PostgresStepJobs
from orchestrator.journal.records import StepJob, StepOffer, StepReply
from orchestrator.journal.sqlite.backend import SqliteJournal
from orchestrator.testing import eventually

SERVER_NOW = "(extract(epoch FROM clock_timestamp()) * 1e6)::bigint"
NOW = 1_700_000_000_000_000
BOUND = 30.0  # seconds: a notification that never comes fails the test, never hangs it

Table = TypeVar("Table", bound=OfferedTable)
Opener = Callable[[], Awaitable[Table]]


@contextlib.asynccontextmanager
async def opened_tables(url: str, make: Callable[[str], Table]) -> AsyncIterator[Opener[Table]]:
    """Opens tables made by `make` on the migrated `url`, each closed at the end."""
    await migrate_journal(url)
    opened: list[Table] = []

    async def open_one() -> Table:
        table = make(url)
        await table.open()
        opened.append(table)
        return table

    yield open_one
    for table in opened:
        await table.close()


@pytest.fixture
async def step_jobs(pg_url: str) -> AsyncIterator[Opener[PostgresStepJobs]]:
    """Opens `PostgresStepJobs` on the migrated `pg_url`, each closed at the test's end."""
    async with opened_tables(pg_url, PostgresStepJobs) as open_one:
        yield open_one


def add_daemon(url: str, token: str = "active") -> int:
    """A live daemon row (epoch 1, heartbeat the server's now); its id."""
    rows = query(
        url,
        "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at, ready)"
        f" VALUES (%s, %s, %s, 7, {SERVER_NOW}, 1) RETURNING id",
        (token, os.getpid(), HOST),
    )
    return int(rows[0][0])


def add_standby(url: str, token: str, *, stale: bool = False, pid: int | None = None) -> None:
    """A standby row of this host: renewed now, or long ago (`stale`)."""
    seen = "1" if stale else SERVER_NOW
    query(
        url,
        "INSERT INTO standbys (token, pid, host, started_at, seen_at)"
        f" VALUES (%s, %s, %s, 7, {seen})",
        (token, os.getpid() if pid is None else pid, HOST),
    )


def offers(n: int, *, digest: str = "d1", state: str = '{"n":1}') -> list[StepOffer]:
    return [StepOffer(f"run-{i}", digest, {"step": "s", "i": i}, state) for i in range(n)]


def rows(url: str) -> list[tuple[object, ...]]:
    """Every job: id, claimed_by, attempts, cancelled, reply (by id)."""
    return query(
        url, "SELECT id, claimed_by, attempts, cancelled, reply FROM step_jobs ORDER BY id"
    )


def gone_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_an_offer_is_claimed_answered_and_its_reply_taken(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "s1")
    ids = await active.offer(offers(2), daemon_id=daemon, epoch=1, now=NOW)
    assert ids == sorted(ids) and len(set(ids)) == 2
    claimed = await standby.claim(token="s1", digests={"d1"}, limit=10, now=NOW + 1)
    assert claimed == [
        StepJob(ids[0], "run-0", "d1", {"step": "s", "i": 0}, '{"n":1}', 0),
        StepJob(ids[1], "run-1", "d1", {"step": "s", "i": 1}, '{"n":1}', 0),
    ]
    assert await standby.claim(token="s1", digests={"d1"}, limit=10, now=NOW) == []
    assert await active.take_replies(ids) == []  # nothing answered yet
    answer = {"outcome": "ok", "logs": ["é", "日本"], "state": '{"n":2}'}
    assert await standby.reply(ids[0], token="s1", attempts=0, reply=answer, now=NOW + 2)
    assert not await standby.reply(ids[0], token="s1", attempts=0, reply={}, now=NOW)  # once
    assert not await standby.reply(ids[1], token="s2", attempts=0, reply={}, now=NOW)  # not its
    assert await active.take_replies(ids) == [StepReply(ids[0], answer)]
    assert [row[0] for row in rows(pg_url)] == [ids[1]]  # the reply's row is gone
    assert await active.take_replies(ids) == []
    assert await active.offer([], daemon_id=daemon, epoch=1, now=NOW) == []


async def test_two_standbys_racing_never_claim_one_job_twice(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, first, second = await step_jobs(), await step_jobs(), await step_jobs()
    ids = await active.offer(offers(50), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)

    await race_two_claimers(pg_url, first, second, ids)


Claimer = PostgresStepJobs | PostgresRunTasks


async def race_two_claimers(url: str, first: Claimer, second: Claimer, ids: list[int]) -> None:
    """`first` (as "a") and `second` (as "b") claim `ids` (of d1) at once: each once, all."""

    async def claim_all(table: Claimer, token: str) -> list[int]:
        got: list[int] = []
        while batch := await table.claim(token=token, digests=["d1"], limit=3, now=NOW):
            got += [row.id for row in batch]
        return got

    a, b = await asyncio.gather(claim_all(first, "a"), claim_all(second, "b"))
    assert not set(a) & set(b)
    assert sorted(a + b) == ids
    by_row = dict(query(url, f"SELECT id, claimed_by FROM {first.TABLE}"))
    assert by_row == {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b")}


async def test_a_standby_claims_only_the_files_it_has(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    daemon = add_daemon(pg_url)
    one = await active.offer(offers(2, digest="d1"), daemon_id=daemon, epoch=1, now=NOW)
    two = await active.offer(offers(2, digest="d2"), daemon_id=daemon, epoch=1, now=NOW)
    assert await standby.claim(token="s", digests=[], limit=10, now=NOW) == []
    assert await standby.claim(token="s", digests=["d\x00", "d\ud800"], limit=10, now=NOW) == []
    assert await standby.claim(token="s", digests=["d1"], limit=0, now=NOW) == []
    got = await standby.claim(token="s", digests=["d2", "d3"], limit=10, now=NOW)
    assert [job.id for job in got] == two
    got = await standby.claim(token="s", digests=["d1"], limit=1, now=NOW)
    assert [job.id for job in got] == one[:1]


async def test_a_cancelled_or_forgotten_job_is_withdrawn_from_its_standby(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    ids = await active.offer(offers(4), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    claimed = [job.id for job in await standby.claim(token="s", digests=["d1"], limit=3, now=NOW)]
    assert claimed == ids[:3]
    assert await standby.withdrawn(claimed, token="s") == set()
    await active.cancel([ids[0], ids[3]])  # one claimed, one open
    await active.forget([ids[1]])
    assert await standby.withdrawn(claimed, token="s") == {ids[0], ids[1]}
    assert await standby.withdrawn(claimed, token="other") == set(claimed)
    assert await standby.withdrawn([], token="s") == set()
    assert await standby.claim(token="s", digests=["d1"], limit=9, now=NOW) == []  # ids[3] too
    assert [(row[0], row[3]) for row in rows(pg_url)] == [(ids[0], 1), (ids[2], 0), (ids[3], 1)]


async def test_a_stopped_standbys_jobs_are_offered_again_then_crash(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    daemon = add_daemon(pg_url)
    add_standby(pg_url, "stale", stale=True)
    add_standby(pg_url, "killed", pid=gone_pid())  # fresh row, but its process is gone
    add_standby(pg_url, "fresh")
    ids = await active.offer(offers(4), daemon_id=daemon, epoch=1, now=NOW)
    for token in ("stale", "killed", "fresh", "no row"):
        await standby.claim(token=token, digests=["d1"], limit=1, now=NOW)
    assert await active.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=2) == 3
    assert [row[1:3] for row in rows(pg_url)] == [(None, 1), (None, 1), ("fresh", 0), (None, 1)]
    # A standby that comes back may not answer the job any more; the next claim may.
    assert not await standby.reply(ids[0], token="stale", attempts=0, reply={}, now=NOW)
    again = await standby.claim(token="fresh", digests=["d1"], limit=3, now=NOW)
    assert [(job.id, job.attempts) for job in again] == [(ids[0], 1), (ids[1], 1), (ids[3], 1)]
    assert not await standby.reply(ids[0], token="fresh", attempts=0, reply={}, now=NOW)
    assert await active.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=2) == 0
    query(pg_url, "UPDATE standbys SET seen_at = 1 WHERE token = 'fresh'")
    assert await active.requeue_abandoned(daemon_id=daemon, now=NOW, max_attempts=2) == 4
    crashed = {"crashed": "the daemons serving it stopped 2 times"}
    replies = await active.take_replies(ids)
    assert replies == [StepReply(i, crashed) for i in (ids[0], ids[1], ids[3])]
    assert [row[1:3] for row in rows(pg_url)] == [(None, 1)]  # ids[2]: attempt 1 of 2
    assert await active.claim(token="s", digests=["d1"], limit=9, now=NOW) != []


async def test_requeue_leaves_other_daemons_jobs(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active = await step_jobs()
    mine, other = add_daemon(pg_url, "mine"), add_daemon(pg_url, "other")
    await active.offer(offers(1), daemon_id=other, epoch=1, now=NOW)
    await active.claim(token="gone", digests=["d1"], limit=1, now=NOW)
    assert await active.requeue_abandoned(daemon_id=mine, now=NOW, max_attempts=1) == 0
    assert await active.requeue_abandoned(daemon_id=other, now=NOW, max_attempts=1) == 1


async def test_a_fenced_or_stopped_daemon_offers_nothing(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    daemon = add_daemon(pg_url)
    await active.offer(offers(1), daemon_id=daemon, epoch=1, now=NOW)
    with pytest.raises(JournalLocked, match="fenced or stopped"):
        await active.offer(offers(1), daemon_id=daemon, epoch=2, now=NOW)  # an old epoch
    with pytest.raises(JournalLocked):
        await active.offer(offers(1), daemon_id=daemon + 99, epoch=1, now=NOW)  # no row
    query(pg_url, "UPDATE daemons SET fenced_at = 5, epoch = 2")
    with pytest.raises(JournalLocked):
        await active.offer(offers(1), daemon_id=daemon, epoch=2, now=NOW)
    # Its offered job is claimed by no one: its reply would go nowhere.
    assert await standby.claim(token="s", digests=["d1"], limit=9, now=NOW) == []
    stopped = add_daemon(pg_url, "stopped")
    query(pg_url, "UPDATE daemons SET stopped_at = 5 WHERE id = %s", (stopped,))
    with pytest.raises(JournalLocked):
        await active.offer(offers(1), daemon_id=stopped, epoch=1, now=NOW)
    assert len(rows(pg_url)) == 1


async def test_clear_removes_other_daemons_jobs_only(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    jobs = await step_jobs()
    old, new = add_daemon(pg_url, "old"), add_daemon(pg_url, "new")
    await jobs.offer(offers(3), daemon_id=old, epoch=1, now=NOW)
    kept = await jobs.offer(offers(2), daemon_id=new, epoch=1, now=NOW)
    assert await jobs.clear(daemon_id=new) == 3
    assert [row[0] for row in rows(pg_url)] == kept
    assert await jobs.clear(daemon_id=new) == 0


async def test_what_went_unheard_is_found_after_a_lost_connection(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    """`missing`, `forget_strays` and `unclaim_strays`: a daemon's and a standby's catch-up."""
    active, standby = await step_jobs(), await step_jobs()
    mine, other = add_daemon(pg_url, "mine"), add_daemon(pg_url, "other")
    kept, old, young = await active.offer(offers(3), daemon_id=mine, epoch=1, now=NOW)
    (theirs,) = await active.offer(offers(1), daemon_id=other, epoch=1, now=NOW)
    await active.forget([kept])
    assert await active.missing([kept, old, 999]) == {kept, 999}
    query(pg_url, "UPDATE step_jobs SET offered_at = %s WHERE id = %s", (NOW + 10, young))
    # Offered before NOW + 5 and not waited for: `old` only (`young` may be in flight).
    assert await active.forget_strays(daemon_id=mine, keep=[], before=NOW + 5) == 1
    assert {row[0] for row in query(pg_url, "SELECT id FROM step_jobs")} == {young, theirs}
    claimed = await standby.claim(token="s", digests=["d1"], limit=9, now=NOW)
    assert {job.id for job in claimed} == {young, theirs}
    await standby.reply(theirs, token="s", attempts=0, reply={"ok": "{}"}, now=NOW)
    # The claim of `young` went unheard: released; `theirs`, answered, stays.
    assert await standby.unclaim_strays(token="s", keep=[]) == 1
    assert await active.take_back([young], 1) == [young]


async def test_servers_counts_the_fresh_standbys_of_live_processes(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    jobs = await step_jobs()
    assert await jobs.servers(now=NOW) == 0
    add_standby(pg_url, "fresh")
    add_standby(pg_url, "stale", stale=True)
    add_standby(pg_url, "killed", pid=gone_pid())
    assert await jobs.servers(now=NOW) == 1


async def test_wait_returns_on_a_notification_or_after_its_timeout(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    daemon = add_daemon(pg_url)
    await asyncio.wait_for(standby.wait(0.01), BOUND)  # nothing notified: its timeout
    waiting = asyncio.create_task(standby.wait(3600))
    await active.offer(offers(1), daemon_id=daemon, epoch=1, now=NOW)
    await asyncio.wait_for(waiting, BOUND)
    (job,) = await standby.claim(token="s", digests=["d1"], limit=1, now=NOW)
    # A reply wakes the other side, a cancel too: each watcher listens from after the offer.
    watcher = await step_jobs()
    assert await standby.reply(job.id, token="s", attempts=0, reply={"ok": 1}, now=NOW)
    await asyncio.wait_for(watcher.wait(3600), BOUND)
    watcher = await step_jobs()
    await active.cancel([job.id])
    await asyncio.wait_for(watcher.wait(3600), BOUND)


async def test_wait_returns_when_its_listening_connection_drops_and_listens_again(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    listening = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query = 'LISTEN orchestrator_steps' AND pid <> pg_backend_pid()"
    )
    assert len(query(pg_url, listening)) == 2
    query(pg_url, f"SELECT pg_terminate_backend(pid, 10000) FROM ({listening}) l")
    await asyncio.wait_for(standby.wait(3600), BOUND)
    await eventually(lambda: len(query(pg_url, listening)) == 2, what="both listen again")
    await standby.wait(0)
    waiting = asyncio.create_task(standby.wait(3600))
    await active.offer(offers(1), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    await asyncio.wait_for(waiting, BOUND)


async def test_a_lost_query_connection_is_unreachable_then_made_again(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    jobs = await step_jobs()
    daemon = add_daemon(pg_url)
    query(
        pg_url,
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
        " WHERE datname = current_database()"
        " AND query <> 'LISTEN orchestrator_steps' AND pid <> pg_backend_pid()",
    )
    with pytest.raises(JournalUnreachable, match="offering steps failed") as caught:
        await jobs.offer(offers(1), daemon_id=daemon, epoch=1, now=NOW)
    assert "password" not in str(caught.value)
    assert len(await jobs.offer(offers(1), daemon_id=daemon, epoch=1, now=NOW)) == 1
    await jobs.close()
    await jobs.close()  # idempotent


async def test_text_the_journal_cannot_keep_is_refused_and_the_rest_kept_exactly(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    active, standby = await step_jobs(), await step_jobs()
    daemon = add_daemon(pg_url)
    with pytest.raises(ValueError, match="state holds a NUL character"):
        await active.offer(offers(1, state='{"a":"\x00"}'), daemon_id=daemon, epoch=1, now=NOW)
    with pytest.raises(ValueError, match=r"request is not valid Unicode.*surrogate"):
        bad = StepOffer("r", "d1", {"k": "\udc80"}, "{}")
        await active.offer([bad], daemon_id=daemon, epoch=1, now=NOW)
    with pytest.raises(ValueError, match="request cannot be written as JSON"):
        await active.offer(
            [StepOffer("r", "d1", {"k": {1, 2}}, "{}")], daemon_id=daemon, epoch=1, now=NOW
        )
    assert rows(pg_url) == []  # nothing of a refused offer
    big = '{"blob":"' + "é日" * (5 * 1024 * 1024 // 2) + '"}'  # 10 MB of text
    request = {"nul": "a\x00b", "text": "naïve 日本 🎉", "escaped": "\\u0000"}
    (job_id,) = await active.offer(
        [StepOffer("r", "d1", request, big)], daemon_id=daemon, epoch=1, now=NOW
    )
    (job,) = await standby.claim(token="s", digests=["d1"], limit=1, now=NOW)
    assert (job.request, job.state) == (request, big)
    with pytest.raises(ValueError, match="reply is not valid Unicode"):
        await standby.reply(job_id, token="s", attempts=0, reply={"log": "\ud800"}, now=NOW)
    reply = {"logs": ["a\x00b"], "state": big}
    assert await standby.reply(job_id, token="s", attempts=0, reply=reply, now=NOW)
    assert await active.take_replies([job_id]) == [StepReply(job_id, reply)]


async def test_a_row_written_by_someone_else_fails_its_step_not_the_others(
    pg_url: str, step_jobs: Opener[PostgresStepJobs]
) -> None:
    """A reply taken (deleted) with others is a crash of its step; a request is empty."""
    jobs = await step_jobs()
    ids = await jobs.offer(offers(3), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    query(pg_url, "UPDATE step_jobs SET request = '[1' WHERE id = ?", (ids[0],))
    claimed = await jobs.claim(token="s", digests={"d1"}, limit=3, now=NOW)
    assert [job.request == {} for job in claimed] == [True, False, False]
    for job in claimed:
        assert await jobs.reply(job.id, token="s", attempts=0, reply={"ok": "{}"}, now=NOW)
    query(pg_url, "UPDATE step_jobs SET reply = '[1' WHERE id = ?", (ids[0],))
    query(pg_url, "UPDATE step_jobs SET reply = 'x' WHERE id = ?", (ids[1],))
    taken = await jobs.take_replies(ids)
    assert [reply.id for reply in taken] == ids
    assert taken[2].reply == {"ok": "{}"}
    for reply in taken[:2]:
        assert f"step job {reply.id} has a reply that is not" in reply.reply["crashed"]
    assert query(pg_url, "SELECT count(*) FROM step_jobs") == [(0,)]


async def test_a_journal_without_the_table_is_refused_with_the_fix(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        await migrate_journal(pg_url)
    jobs = PostgresStepJobs(pg_url)
    with pytest.raises(JournalCorrupt, match="journal migrate"):
        await jobs.open()
    await jobs.close()


def test_only_a_postgresql_journal_has_step_jobs(tmp_path: Path) -> None:
    assert SqliteJournal(tmp_path / "journal.db").step_jobs() is None
    made = PostgresJournal("postgresql://u:secret@h/d").step_jobs()
    assert isinstance(made, PostgresStepJobs)
    assert "secret" not in made.location


async def test_migration_4_made_the_table(pg_url: str) -> None:
    assert len(schema.MIGRATIONS) >= 4
    await migrate_journal(pg_url)
    indexes = query(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'step_jobs'")
    assert {"step_jobs_open", "step_jobs_replied"} <= {row[0] for row in indexes}


def connections(url: str) -> int:
    """Connections to `url`'s database other than this query's own."""
    found = query(
        url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return int(found[0][0])


async def test_closed_at_once_after_opening_it_leaves_no_connection(pg_url: str) -> None:
    """The listening connection is closed even if its task never got to run."""
    await migrate_journal(pg_url)
    jobs = PostgresStepJobs(pg_url)
    await jobs.open()
    await jobs.close()  # before the listener's first turn
    await eventually(lambda: connections(pg_url) == 0, what="no connection left", timeout=BOUND)


async def test_a_close_cancelled_midway_is_cancelled_and_leaves_no_connection(pg_url: str) -> None:
    """Cancellation propagates out of `close` (a daemon stopping), and both connections close."""
    await migrate_journal(pg_url)
    jobs = PostgresStepJobs(pg_url)
    await jobs.open()
    closing = asyncio.create_task(jobs.close())
    await asyncio.sleep(0)  # one turn of the loop: it waits for its listener to end
    closing.cancel()
    await asyncio.wait([closing])
    assert closing.cancelled()
    await eventually(lambda: connections(pg_url) == 0, what="no connection left", timeout=BOUND)


async def test_a_reply_the_server_refuses_for_its_value_is_a_value_error(
    pg_url: str, step_jobs: Opener
) -> None:
    """Refused for what it holds (too long, say: SQLSTATE classes 22 and 54), a reply was a
    JournalError, which the standby writes again for good: its step never ended."""
    jobs = await step_jobs()
    (job_id,) = await jobs.offer(offers(1), daemon_id=add_daemon(pg_url), epoch=1, now=NOW)
    await jobs.claim(token="s", digests={"d1"}, limit=1, now=NOW)
    query(
        pg_url,
        "CREATE FUNCTION too_long() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF strpos(NEW.reply, 'crashed') = 0 THEN"
        " RAISE EXCEPTION 'string too long' USING ERRCODE = '54000'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER too_long BEFORE UPDATE OF reply ON step_jobs"
        " FOR EACH ROW EXECUTE FUNCTION too_long()",
    )
    with pytest.raises(ValueError, match=r"reply cannot be kept.*string too long"):
        await jobs.reply(job_id, token="s", attempts=0, reply={"ok": "{}"}, now=NOW)
    crashed = {"crashed": "its reply could not be written"}
    assert await jobs.reply(job_id, token="s", attempts=0, reply=crashed, now=NOW)

"""The PostgreSQL reader answers exactly what the SQLite reader answers, and its change feed.

The differential test writes a rich journal with a real `Runtime` on SQLite
(`pg_reader_seed.py`), copies it into PostgreSQL with `copy_journal` (ids kept), and asks
both readers every `JournalQueries` question with every argument that matters. The change
feed is tested on the test cluster: a commit from another connection moves `data_version`
through a notification, and through the poll when the listener is killed.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_reader_seed import seed
from postgres import Cluster

from orchestrator.errors import JournalCorrupt, JournalError, JournalUnreachable
from orchestrator.journal.backends import migrate_journal, open_journal
from orchestrator.journal.copy import copy_journal
from orchestrator.journal.liveness import STALE_AFTER_US
from orchestrator.journal.postgres import prefixes
from orchestrator.journal.postgres.backend import PostgresJournal
from orchestrator.journal.postgres.reader import PostgresReader
from orchestrator.journal.postgres.states import UNREADABLE, merge, state_text
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.testing import eventually

STATUSES = ["queued", "running", "paused", "completed", "failed", "aborted", "nope", None]


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement in its own transaction, on the journal's schema (no orchestrator code)."""
    with psycopg.connect(url, autocommit=True, options="-c search_path=orchestrator") as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


@pytest.fixture(params=["default", "icu"])
async def readers(
    db: Path, pg_url: str, icu_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[JournalReader, PostgresReader]]:
    """The seeded journal on SQLite and its copy on PostgreSQL, a reader on each.

    The copy is in a database of the cluster's collation (byte order here), then in one
    that sorts otherwise (ICU en-US).
    """
    url = pg_url if request.param == "default" else icu_url
    await seed(db)
    await copy_journal(db, url)
    old = await JournalReader.open(db)
    new = await PostgresReader.open(url)
    try:
        yield old, new
    finally:
        await old.close()
        await new.close()


class Compare:
    """Asks both readers the same question and counts the questions asked."""

    def __init__(self, old: JournalReader, new: PostgresReader) -> None:
        self.old, self.new, self.asked = old, new, 0

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        expected = await getattr(self.old, name)(*args, **kwargs)
        got = await getattr(self.new, name)(*args, **kwargs)
        assert got == expected, (name, args, kwargs)
        self.asked += 1
        return expected


async def test_every_query_answers_what_sqlite_answers(
    readers: tuple[JournalReader, PostgresReader], db: Path
) -> None:
    old, new = readers
    url = new.url
    same = Compare(old, new)
    runs = await same("list_runs", limit=-1)
    run_ids = [run.run_id for run in runs]
    assert len(run_ids) == 18 and {run.status for run in runs} >= {"queued", "paused", "failed"}
    # The copy holds merge patches, whose states the PostgreSQL reader puts together.
    (patches,) = query(url, "SELECT count(*) FROM checkpoints WHERE base < position")[0]
    assert patches > 10
    await _per_run(same, [*run_ids, "nope", "a\x00b"])
    await _lists(same, runs)
    await _global(same)
    # A delta whose snapshot is gone reads as unreadable on both.
    sid, state = query(url, "SELECT id, state FROM snapshots ORDER BY id LIMIT 1")[0]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM snapshots WHERE id = ?", [sid])
    query(url, "DELETE FROM snapshots WHERE id = %s", (sid,))
    assert state  # a whole state was there
    damaged = [(await same("stored_checkpoints", run_id)) for run_id in run_ids]
    assert any(c.state == UNREADABLE for cs in damaged for c in cs)
    await _per_run(same, run_ids)
    assert same.asked > 1000


async def _per_run(same: Compare, run_ids: list[str]) -> None:
    for run_id in run_ids:
        for name in (
            "get_run",
            "timeline",
            "run_status",
            "children",
            "stored_run",
            "stored_checkpoints",
            "checkpoints",
            "command_outcome",
        ):
            await same(name, run_id)
        for limit in (1, 3, -1):
            for after in (0, 5):
                await same("log_entries", run_id=run_id, after=after, limit=limit)
        for end in range(0, 4):
            await same("match_runs", run_id[:end])
        await same("match_runs", run_id, limit=1)
    await same("outcomes", [*run_ids, *run_ids[:3]])
    await same("outcomes", [])


async def _lists(same: Compare, runs: list[Any]) -> None:
    workflows = [*sorted({run.workflow_id for run in runs}), "nope", None]
    times = sorted(int(run.created_at.timestamp() * 1_000_000) for run in runs)
    for status in STATUSES:
        for workflow in workflows:
            for limit in (1, 4, 100, -1):
                await same("list_runs", status=status, workflow=workflow, limit=limit)
            await same("list_runs", status=status, workflow=workflow, created_since=times[9])
    for after in (0, 3, 10_000):
        for limit in (1, 7, 100, -1):
            await same("log_entries", after=after, limit=limit)
    for workflow in workflows[:-1]:
        await same("unclosed_service_scopes", workflow)
    for prefix in ("", "0", "0f", "é", "\U0010ffff", "zz", "\x00"):
        for limit in (1, 5, 100):
            await same("match_runs", prefix, limit=limit)


async def _global(same: Compare) -> None:
    for dormant in (True, False):
        assert await same("unfinished_runs", dormant=dormant)
        waits = await same("live_waits", dormant=dormant)
        assert [len(w.buffer) for w in waits if w.status == "armed"] == [2]
    dormant_old = await same.old.dormant_waits()
    assert dormant_old and sorted(dormant_old) == sorted(await same.new.dormant_waits())
    assert await same("workflows_with_unclosed_service_scopes")
    for name in (
        "pending_invokes",
        "max_ids",
        "schedule_ticks",
        "workflows",
        "switches",
        "disabled",
        "pending_switches",
        "load_errors",
        "daemon",
    ):
        await same(name)
    # Sorted by bytes, as SQLite sorts: upper case first, in any database's collation.
    assert (await same("workflows"))[0].workflow_id == "Zeta"
    assert (await same("switches"))[0].workflow_id == "Zeta"
    assert (await same("load_errors"))[0].file.endswith("Zed.py")
    for folder, glob in (("/in", "*.csv"), ("/in", "*.txt"), ("/out", "*.csv")):
        await same("files_seen", folder, glob)
    for after in (0, 2, 10_000):
        for limit in (1, 1000):
            await same("unrouted_events", after, limit)
            await same("pending_commands", after, limit)
            await same("inbox", after, after, limit)
        await same("has_pending", after, after)
    events, commands = await same("inbox", 0, 0)
    assert any(e.problem for e in events) and any(c.problem for c in commands)
    for kind, key in (("emit", "once"), ("emit", "late"), ("invoke", "k1"), ("invoke", "no")):
        await same("keyed", kind, key)


async def test_the_backend_opens_this_reader(pg_url: str) -> None:
    await migrate_journal(pg_url)
    reader = await PostgresJournal(pg_url).open_reader()
    try:
        assert isinstance(reader, PostgresReader)
        assert await reader.list_runs() == [] and await reader.daemon() is None
    finally:
        await reader.close()


async def test_a_database_that_holds_no_journal_is_refused_saying_how_to_make_one(
    pg_url: str,
) -> None:
    with pytest.raises(JournalCorrupt, match=r"holds no journal.*journal migrate"):
        await PostgresReader.open(pg_url)
    await migrate_journal(pg_url)
    query(pg_url, "UPDATE schema_version SET version = 999")
    with pytest.raises(JournalError, match=r"newer orchestrator.*upgrade"):
        await PostgresReader.open(pg_url)


async def test_the_live_daemon_is_the_newest_one_not_fenced_stopped_or_stale(
    pg_url: str,
) -> None:
    await migrate_journal(pg_url)
    reader = await PostgresReader.open(pg_url)
    try:
        assert await reader.daemon() is None
        now = int(query(pg_url, "SELECT (extract(epoch FROM now()) * 1e6)::bigint")[0][0])
        rows = [
            ("live", 10, now - 1_000_000, None, None, 1, None),
            ("stale", 11, now - 2 * STALE_AFTER_US, None, None, 1, None),
            ("fenced", 12, now, now, None, 1, None),
            ("stopped", 13, now, None, now, 1, None),
        ]
        for token, pid, beat, fenced, stopped, ready, degraded in rows:
            query(
                pg_url,
                "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at, fenced_at,"
                " stopped_at, ready, degraded) VALUES (%s, %s, 'h', 7, %s, %s, %s, %s, %s)",
                (token, pid, beat, fenced, stopped, ready, degraded),
            )
        live = await reader.daemon()
        assert live is not None and (live.pid, live.host, live.ready) == (10, "h", True)
    finally:
        await reader.close()


def test_states_are_put_together_as_sqlite_json_patch_does() -> None:
    whole = '{"a":1,"b":{"c":2,"d":3},"e":[1,{"f":null}]}'
    assert state_text(whole, None) == whole
    assert state_text(None, None) == UNREADABLE
    assert state_text(None, "{}") == UNREADABLE
    assert state_text(whole, "not json") == UNREADABLE
    assert state_text(whole, '{"a":NaN}') == UNREADABLE
    patch = '{"a":null,"b":{"c":"é"},"g":{"h":null,"i":1}}'
    expected = '{"b":{"c":"é","d":3},"e":[1,{"f":null}],"g":{"i":1}}'
    assert state_text(whole, patch) == expected
    with sqlite3.connect(":memory:") as conn:  # SQLite itself agrees
        assert conn.execute("SELECT json_patch(?, ?)", [whole, patch]).fetchone()[0] == expected
    assert merge([1], {"a": 1}) == {"a": 1} and merge({"a": 1}, [2]) == [2]


@pytest.fixture
def icu_url(pg_cluster: Cluster) -> Iterator[str]:
    """A migrated, empty journal in a database that does not sort text by bytes (ICU en-US).

    ``B`` sorts after ``a`` there, and ``a-b`` next to ``ab``: a range of run ids compared
    under the database's collation would not be a prefix.
    """
    name = f"icu_{uuid.uuid4().hex}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"
            " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    url = pg_cluster.url(name)
    assert query(url, "SELECT 'B' > 'a', 'B' COLLATE \"C\" > 'a'") == [(True, False)]
    asyncio.run(migrate_journal(url))
    yield url
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


# Run ids from an alphabet where byte order and a locale's order differ.
RUN_IDS = st.text(st.sampled_from("aAbB-_.0é日\U0010ffff"), min_size=1, max_size=5)
WORKFLOWS = ["Wa", "wb", "w-c"]
RUNS = st.dictionaries(
    RUN_IDS,
    st.tuples(
        st.sampled_from(["Wa", "wb", "w-c"]), st.sampled_from(STATUSES[:6]), st.integers(0, 9)
    ),
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=RUNS, wanted=st.lists(RUN_IDS, max_size=4))
def test_prefixes_and_filters_answer_what_sqlite_answers(
    icu_url: str, tmp_path: Path, runs: dict[str, tuple[str, str, int]], wanted: list[str]
) -> None:
    db = tmp_path / "prefixes.db"
    open_journal(db).commands.match_runs("x")  # creates the journal
    rows = [(run_id, w, "t", "v", status, at, at) for run_id, (w, status, at) in runs.items()]
    insert = "INSERT INTO runs (run_id, workflow_id, trigger_id, version, status, created_at,"
    insert += " updated_at) VALUES "
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM runs")
        conn.executemany(insert + "(?, ?, ?, ?, ?, ?, ?)", rows)
    with psycopg.connect(icu_url, autocommit=True) as conn:
        conn.execute("DELETE FROM orchestrator.runs")
        with conn.cursor() as cursor:
            values = "(%s, %s, %s, %s, %s, %s, %s)"
            cursor.executemany(insert.replace("runs", "orchestrator.runs") + values, rows)
    probes = {"", *wanted, *(run_id[:n] for run_id in runs for n in (1, 2))}
    asyncio.run(_compare_runs(db, icu_url, sorted(probes)))


async def _compare_runs(db: Path, url: str, probes: list[str]) -> None:
    old = await JournalReader.open(db)
    new = await PostgresReader.open(url)
    try:
        same = Compare(old, new)
        for prefix in probes:
            for limit in (1, 3, 100):
                await same("match_runs", prefix, limit=limit)
        for status in STATUSES:
            for workflow in (*WORKFLOWS, None):
                for since in (None, 5):
                    await same("list_runs", status=status, workflow=workflow, created_since=since)
                await same("list_runs", status=status, workflow=workflow, limit=2)
    finally:
        await old.close()
        await new.close()


async def test_a_prefix_is_a_range_of_the_byte_ordered_index(pg_url: str) -> None:
    await migrate_journal(pg_url)
    sql = prefixes.sql("ab")
    assert sql is not None
    with psycopg.connect(pg_url, autocommit=True, options="-c search_path=orchestrator") as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute("EXPLAIN " + sql, prefixes.params("ab", 5)).fetchall()
    assert "runs_run_id_key" in " ".join(str(row[0]) for row in plan)  # the unique key's
    assert prefixes.sql("a\x00") is None


# The change feed.


async def commit(url: str, sql: str, *, notify: bool) -> None:
    """One write transaction from a connection of its own, notifying as a writer does."""
    async with await psycopg.AsyncConnection.connect(
        url, options="-c search_path=orchestrator"
    ) as conn:
        await conn.execute(sql)
        if notify:
            await conn.execute("SELECT pg_notify('orchestrator', '')")
        await conn.commit()


async def moved(reader: PostgresReader, before: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await reader.data_version() != before

    return check


EVENT = (
    "INSERT INTO events (event_id, type, data, source, created_at)"
    " VALUES (gen_random_uuid()::text, 't', '{}', 'cli', 1)"
)


async def test_a_commit_elsewhere_moves_the_version_through_its_notification(
    pg_url: str,
) -> None:
    await migrate_journal(pg_url)
    # Polled once an hour: only a notification can move the version.
    reader = await PostgresReader.open(pg_url, poll_seconds=3600)
    try:
        await reader.data_version()
        await eventually(lambda: reader.feed.listening, what="the listener to listen")
        before = await reader.data_version()
        assert await reader.data_version() == before  # nothing committed: no change
        await commit(pg_url, EVENT, notify=True)
        await eventually(await moved(reader, before), what="the notification")
    finally:
        await reader.close()


async def test_with_the_listener_killed_the_poll_still_sees_commits(pg_url: str) -> None:
    await migrate_journal(pg_url)
    query(
        pg_url,
        "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at)"
        " VALUES ('d', 1, 'h', 0, 0)",
    )
    query(
        pg_url,
        "INSERT INTO runs (run_id, workflow_id, trigger_id, version, status,"
        " created_at, updated_at) VALUES ('r', 'w', 't', 'v', 'queued', 0, 0)",
    )
    # The listener never comes back (an hour's pause); the poll runs at every call.
    reader = await PostgresReader.open(pg_url, poll_seconds=0, retry_seconds=(3600, 3600))
    try:
        await reader.data_version()
        pid = await eventually(lambda: reader.feed.listener_pid, what="the listener")
        query(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
        await eventually(lambda: not reader.feed.listening, what="the listener to die")
        for write in (EVENT, "UPDATE runs SET status = 'running'", "DELETE FROM daemons"):
            # (No "unchanged" check here: the horizon also moves with the cluster's other
            # write transactions, autovacuum's analyze among them.)
            before = await reader.data_version()
            await commit(pg_url, write, notify=True)  # notified, but no one listens
            await eventually(await moved(reader, before), what=f"the poll to see {write}")
    finally:
        await reader.close()


async def test_the_listener_reconnects_and_closes_with_the_reader(pg_url: str) -> None:
    await migrate_journal(pg_url)
    reader = await PostgresReader.open(pg_url, poll_seconds=3600, retry_seconds=(0.01, 0.05))
    try:
        await reader.data_version()
        first = await eventually(lambda: reader.feed.listener_pid, what="the listener")
        query(pg_url, "SELECT pg_terminate_backend(%s)", (first,))
        second = await eventually(
            lambda: (reader.feed.listener_pid or first) != first and reader.feed.listener_pid,
            what="a new listener",
        )
        before = await reader.data_version()
        await commit(pg_url, EVENT, notify=True)
        await eventually(await moved(reader, before), what="the new listener's notification")
    finally:
        await reader.close()
    assert not reader.feed.listening
    gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
    await eventually(lambda: query(pg_url, gone, (second,))[0][0] == 0, what="its backend gone")


async def test_a_reader_whose_connection_was_lost_opens_another(pg_url: str) -> None:
    await migrate_journal(pg_url)
    reader = await PostgresReader.open(pg_url)
    try:
        lost = reader.backend_pid
        query(pg_url, "SELECT pg_terminate_backend(%s)", (lost,))
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        await eventually(lambda: query(pg_url, gone, (lost,))[0][0] == 0, what="it to be gone")
        # Queries that lose it together open one connection in its place.
        assert await asyncio.gather(*(reader.list_runs() for _ in range(3))) == [[], [], []]
        assert reader.backend_pid != lost
        others = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        assert query(pg_url, others) == [(1,)]
    finally:
        await reader.close()
    with pytest.raises(JournalError, match="read failed"):
        await reader.list_runs()  # closed by its owner: not opened again


async def test_a_lost_connection_that_cannot_be_made_again_is_unreachable(pg_url: str) -> None:
    await migrate_journal(pg_url)
    reader = await PostgresReader.open(pg_url)
    try:
        with socket.socket() as sock:  # a port nothing listens on once it is closed
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        lost = reader.backend_pid
        reader.url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/gone?connect_timeout=2"
        query(pg_url, "SELECT pg_terminate_backend(%s)", (lost,))
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        await eventually(lambda: query(pg_url, gone, (lost,))[0][0] == 0, what="it to be gone")
        with pytest.raises(JournalUnreachable, match="cannot connect") as caught:
            await reader.get_run("r")
        assert "s3cret" not in str(caught.value)
    finally:
        await reader.close()


async def test_a_poll_that_failed_fails_again_until_one_answers(pg_url: str) -> None:
    """A journal that is down never looks fine between two polls (the inbox logged
    "works again" every other second while the server was stopped)."""
    await migrate_journal(pg_url)
    reader = await PostgresReader.open(pg_url, poll_seconds=3600, retry_seconds=(3600, 3600))
    try:
        url, lost = reader.url, reader.backend_pid
        with socket.socket() as sock:  # a port nothing listens on once it is closed
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        reader.url = f"postgresql://postgres@127.0.0.1:{port}/gone?connect_timeout=2"
        query(pg_url, "SELECT pg_terminate_backend(%s)", (lost,))
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        await eventually(lambda: query(pg_url, gone, (lost,))[0][0] == 0, what="it to be gone")
        for _ in range(2):  # the second call is within the hour's poll interval
            with pytest.raises(JournalUnreachable):
                await reader.data_version()
        reader.url = url
        await reader.data_version()  # the server answers: the feed works again
    finally:
        await reader.close()

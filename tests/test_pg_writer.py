"""The PostgreSQL writer, on a real server: the same rows as SQLite's, batches, the fence.

Differential: the same ops (recorded from a real `Runtime` on SQLite, and built with the
`ops` builders to reach every statement) go through the SQLite writer and through
`PostgresWriter`; every table then holds the same rows, text and flags exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dashboard_seed import seed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import JournalError, JournalLocked, JournalUnreachable
from orchestrator.journal import deltas, liveness, ops
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.copy import copy_journal
from orchestrator.journal.faults import FaultPoints
from orchestrator.journal.ops import Op, Stmt
from orchestrator.journal.postgres.backend import PostgresJournal
from orchestrator.journal.postgres.connection import NOTIFY_CHANNEL, refused
from orchestrator.journal.postgres.statements import SQL
from orchestrator.journal.postgres.writer import PostgresWriter
from orchestrator.journal.sqlite.writer import GroupCommitWriter
from orchestrator.records import RunCode, RunStatus
from orchestrator.testing import eventually

# Tables only one backend has, or whose rows name the writer that wrote them.
_NOT_COMPARED = {"lease", "daemons", "coordinator"}


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on the journal at `url` in its own transaction (no orchestrator code)."""
    with psycopg.connect(url, autocommit=True, options="-c search_path=orchestrator") as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def sqlite_tables(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            )
        ]
        return {n: [r[1] for r in conn.execute(f"PRAGMA table_info({n})")] for n in names}
    finally:
        conn.close()


def table_rows(path: Path, url: str) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Every compared table's rows on both journals, sorted, by the SQLite table's columns."""
    on_sqlite: dict[str, list[Any]] = {}
    on_pg: dict[str, list[Any]] = {}
    conn = sqlite3.connect(path)
    try:
        for table, columns in sqlite_tables(path).items():
            if table in _NOT_COMPARED:
                continue
            names = ", ".join(f'"{c}"' for c in columns)
            on_sqlite[table] = sorted(
                conn.execute(f"SELECT {names} FROM {table}").fetchall(), key=repr
            )
            on_pg[table] = sorted(
                (tuple(row) for row in query(url, f"SELECT {names} FROM {table}")), key=repr
            )
    finally:
        conn.close()
    return on_sqlite, on_pg


@contextlib.asynccontextmanager
async def running(writer: Any) -> AsyncIterator[Any]:
    """`writer` opened, its task running, closed at the end."""
    await writer.open()
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        await writer.close()
        await task


async def replay(writer: Any, batches: list[list[Op]], *, together: bool) -> None:
    """Each recorded enqueue as a batch of its own, or all of them coalescing."""
    if together:
        for batch in batches:
            writer.enqueue(batch)
        await writer.flush()
        return
    for batch in batches:
        await writer.write(batch)


async def both(tmp_path: Path, url: str, batches: list[list[Op]], *, together: bool) -> Path:
    path = tmp_path / "differential.db"
    async with running(GroupCommitWriter(path)) as sqlite_writer:
        await replay(sqlite_writer, batches, together=together)
    async with running(PostgresWriter(url)) as pg_writer:
        await replay(pg_writer, batches, together=together)
    return path


def assert_same_rows(path: Path, url: str, *, copied: bool = False) -> dict[str, list[Any]]:
    """Every table the same on both; `copied`: run counts of 0 may be missing on PostgreSQL.

    (`journal copy` recounts `run_counts` from the runs: a count that fell to 0 is no row.)
    """
    on_sqlite, on_pg = table_rows(path, url)
    if copied:
        for rows in (on_sqlite, on_pg):
            rows["run_counts"] = [row for row in rows["run_counts"] if row[-1] != 0]
    for table in on_sqlite:
        assert on_pg[table] == on_sqlite[table], f"table {table} differs"
    return on_sqlite


async def connect(url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=autocommit, options="-c search_path=orchestrator"
    )


def writer_backend(writer: PostgresWriter) -> int:
    """The server process of the writer's connection."""
    assert writer._conn is not None
    return int(writer._conn.info.backend_pid)


def waiting_on_lock(url: str, backend: int) -> bool | None:
    rows = query(url, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (backend,))
    return rows == [("Lock",)] or None


# -- the statements ----------------------------------------------------------------------


def test_every_statement_key_has_postgres_sql() -> None:
    assert set(SQL) == set(Stmt)
    assert all(isinstance(SQL[stmt], str) and "?" not in SQL[stmt] for stmt in Stmt)


@pytest.mark.parametrize("stmt", list(Stmt), ids=lambda stmt: stmt.name)
async def test_each_statement_plans_against_the_schema(pg_url: str, stmt: Stmt) -> None:
    await migrate_journal(pg_url)
    sql = SQL[stmt]
    query(pg_url, f"EXPLAIN {sql}", (None,) * sql.count("%s"))  # plans; runs nothing


# -- the same rows as SQLite ---------------------------------------------------------------


def _state(n: int, *, big: bool) -> str:
    """A state in the compact encoding; `big` ones are long enough to be written as deltas."""
    value: dict[str, Any] = {"n": n, "name": "naïve ☃ 😀", "nested": {"k": [1, 2.5, None]}}
    if big:
        value["blob"] = "x" * 1500
        value["items"] = [{"i": i, "s": "é" * (i % 3)} for i in range(40)]
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def every_statement(base: int = 0) -> list[list[Op]]:
    """Batches that reach every `Stmt`, with big states (patches, spilled snapshots).

    Run rows and wait ids start after `base` (a journal that holds rows already).
    """
    at = 1_700_000_000_000_000
    r1, r2, r3, w1 = base + 1, base + 2, base + 3, base + 1
    first: list[Op] = [
        *ops.reset_workflows(),
        ops.add_version("wf", "v1", "flows/wf.py", '{"steps":["a","b"]}', at),
        ops.workflow_loaded("wf", "v1", "flows/wf.py", '[{"id":"go"}]', "transient", at),
        ops.workflow_loaded("gone", "v0", None, "[]", "serialized", at),
        ops.load_error("flows/bad.py", 3, "SyntaxError: ünexpected", at),
        ops.load_error("flows/fixed.py", None, None, at),
        ops.file_seen("/in", "*.csv", "a.csv", 42, at),
        ops.arm_schedule("wf", "nightly", at),
        ops.set_switch("wf", None, False, at),
        ops.set_switch("wf", "go", True, at),
    ]
    for row in (r1, r2, r3):
        first += ops.create_run(
            row,
            f"run-{row}",
            "wf",
            "go",
            "v1",
            status=RunStatus.RUNNING,
            first_step="a",
            state=_state(0, big=row != r3),
            at=at + row,
        )
    second: list[Op] = [
        ops.workflow_removed("gone", at + 10),
        ops.file_seen("/in", "*.csv", "a.csv", None, at + 10),
        ops.schedule_fired("wf", "nightly", at + 10),
        ops.schedule_next("wf", "nightly", at + 99),
        ops.set_forked(r2, "run-1", "b"),
        ops.set_version(r2, "v2"),
        ops.set_recoveries(r2, "a", 1),
        ops.set_recoveries(r2, "a", 2),
        ops.set_recoveries(r3, "a", 1),
        ops.clear_recoveries(r3),
        ops.add_event("ev-1", "order.created", '{"total":1}', "api", at + 11),
        ops.add_route("ev-1", r1, "started"),
        ops.add_route("ev-1", r1, "started"),  # again: ignored
        ops.add_wait(
            w1,
            r1,
            "payment",
            "[]",
            persistent=True,
            status="armed",
            into="paid",
            timeout_at=at + 500,
            on_timeout="fail",
            at=at + 12,
            joins=None,
        ),
        ops.buffer_event(w1, 1, "ev-1"),
        ops.buffer_event(w1, 2, "ev-1"),
        ops.add_timeline(r1, at + 13, "run", "log", step="a", message="héllo\nworld"),
        ops.add_timeline(None, at + 13, "system", "note", data={"k": [1, "é"], "o": object()}),
        *ops.outbox_invoke("child-1", "wf", "go", '{"x":1}', at + 14, key="k1"),
        *ops.outbox_invoke("child-1", "wf", "go", '{"x":1}', at + 14, key="k1"),
        *ops.outbox_invoke("child-2", "wf", "go", "{}", at + 14),
        ops.add_child("child-1", "run-1", at + 14, 1, key="k1"),
        ops.add_child("child-x", "run-1", at + 14, 2, key="k1"),  # not the key's target
        *ops.outbox_event("emit-1", "note", '{"a":1}', at + 15, key="e1"),
        *ops.outbox_event("emit-2", "note", '{"a":2}', at + 15, key="e1"),  # key taken
        ops.inbox_done(999, "ok", at + 16),
        (Stmt.MARK_READY, ("nobody",)),
    ]
    for row in (r1, r2, r3):
        second += ops.checkpoint(
            row,
            1,
            "a",
            started_at=at + 20,
            ended_at=at + 21,
            state=_state(1, big=row != r3),
            next_step="b",
        )
        second.append(ops.step_started(row, 1, "b", at + 22))
    third: list[Op] = [
        ops.mark_routed("ev-1", at + 30),
        ops.set_wait(w1, "parked", None, "paid", "resume"),
        ops.drain_event(w1, 1),
        *ops.state_change(r1, 2, "signal", _state(2, big=True), at + 31),
        ops.set_paused_in(r1, "b"),
        ops.set_paused_in(r2, "b"),
        ops.set_paused_in(r2, None),
        ops.set_status(r2, RunStatus.FAILED, at + 32, error="bööm", code=RunCode.STEP_FAILED),
        ops.set_status(r3, RunStatus.COMPLETED, at + 33),
        ops.load_error("flows/bad.py", None, None, at + 34),
    ]
    third += ops.checkpoint(
        r1, 3, "b", started_at=at + 35, ended_at=at + 36, state=_state(3, big=True), next_step=None
    )
    return [first, second, third]


@pytest.mark.parametrize("together", [False, True], ids=["batch-each", "coalesced"])
async def test_every_statement_writes_the_rows_sqlite_writes(
    tmp_path: Path, pg_url: str, together: bool
) -> None:
    path = await both(tmp_path, pg_url, every_statement(), together=together)
    rows = assert_same_rows(path, pg_url)
    # The batches reached what they were built to reach (the comparison compared something).
    assert len(rows["runs"]) == 3 and len(rows["inbox"]) == 3 and len(rows["children"]) == 1
    assert any(r[-1] is not None and r[-1] < r[1] for r in rows["checkpoints"]), "no patch"
    assert rows["snapshots"], "no spilled snapshot"
    assert len(rows["event_routes"]) == 1 and len(rows["timeline"]) == 2


@pytest.mark.parametrize("together", [False, True], ids=["batch-each", "coalesced"])
async def test_a_runtimes_writes_give_the_same_rows_on_both_backends(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    recorded: list[list[Op]] = []
    join = GroupCommitWriter._join

    def recording(
        self: GroupCommitWriter, batch: Iterable[Op], urgent: bool, *, wanted: bool
    ) -> asyncio.Future[None] | None:
        batch = list(batch)
        recorded.append(batch)
        return join(self, batch, urgent, wanted=wanted)

    monkeypatch.setattr(GroupCommitWriter, "_join", recording)
    await seed(tmp_path / "seeded.db")
    monkeypatch.setattr(GroupCommitWriter, "_join", join)
    kinds = {stmt for batch in recorded for stmt, _ in batch}
    assert {Stmt.INSERT_RUN, Stmt.INSERT_WAIT, Stmt.ADD_ROUTE, Stmt.SET_LOAD_ERROR} <= kinds
    path = await both(tmp_path, pg_url, recorded, together=together)
    rows = assert_same_rows(path, pg_url)
    assert len(rows["runs"]) >= 6 and rows["events"] and rows["waits"]


async def test_a_copied_journal_takes_the_same_writes_on_both_backends(
    tmp_path: Path, pg_url: str
) -> None:
    """A journal copied to PostgreSQL (`journal copy`) and written on: the same as on SQLite."""
    seeded = tmp_path / "seeded.db"
    await seed(seeded)
    copy = tmp_path / "copy.db"
    shutil.copyfile(seeded, copy)
    copy.chmod(0o600)  # a journal is private to its user
    await copy_journal(seeded, pg_url)
    on_sqlite, on_pg = GroupCommitWriter(copy), PostgresWriter(pg_url)
    opened = await on_sqlite.open(), await on_pg.open()
    await on_sqlite.close()
    await on_pg.close()
    assert opened[0] == opened[1] and opened[0].max_run_row >= 6
    base = 1_000
    batches = every_statement(base)
    for writer in (GroupCommitWriter(copy), PostgresWriter(pg_url)):
        async with running(writer):
            await replay(writer, batches, together=False)
    rows = assert_same_rows(copy, pg_url, copied=True)
    assert len(rows["runs"]) == opened[0].max_run_row + 3


async def test_a_step_started_late_never_pairs_an_earlier_step_with_a_later_checkpoint(
    tmp_path: Path, pg_url: str
) -> None:
    """A coordinator's stale "step a starts at 0" lands after an executor's checkpoint 1.

    The run keeps checkpoint 1 and its next step (none): read as (1, "a"), the next
    recovery would run step a again, at checkpoint 2 (the chaos test saw a step twice).
    Each write is a batch of its own: they come from two writers (one writer's ops for a
    run are in causal order, and a batch keeps the last of each run's updates).
    """
    at = 1_700_000_000_000_000
    created = ops.create_run(
        1, "r1", "wf", "t", "v1", status=RunStatus.RUNNING, first_step="a", state="{}", at=at
    )
    done = ops.checkpoint(1, 1, "a", started_at=at, ended_at=at + 1, state="{}", next_step=None)
    late, again = ops.step_started(1, 0, "a", at + 2), ops.step_started(1, 1, "a", at + 3)
    await migrate_journal(pg_url)
    for last, expected in ((late, (1, None)), (again, (1, "a"))):  # the same position moves it
        _empty(pg_url)
        folder = tmp_path / str(expected[1])
        folder.mkdir()
        path = await both(folder, pg_url, [created, done, [last]], together=False)
        assert_same_rows(path, pg_url)
        assert query(pg_url, "SELECT position, step FROM runs") == [expected]


async def test_a_nul_in_plain_text_is_kept_escaped(pg_url: str) -> None:
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([ops.add_timeline(None, 1, "run", "log", message="a\x00b")])
        assert writer.failure is None
    assert query(pg_url, "SELECT message FROM timeline") == [("a\\x00b",)]


# -- batches -------------------------------------------------------------------------------


async def test_each_batch_is_one_transaction_with_one_notification(pg_url: str) -> None:
    await migrate_journal(pg_url)
    listener = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        async with running(PostgresWriter(pg_url)) as writer:
            before = writer.commits
            with writer.together():
                futures = [
                    writer.enqueue(
                        ops.create_run(
                            row,
                            f"r{row}",
                            "wf",
                            "t",
                            "v",
                            status=RunStatus.QUEUED,
                            first_step="a",
                            state="{}",
                            at=row,
                        )
                    )
                    for row in range(1, 51)
                ]
            assert len({id(f) for f in futures}) == 1  # one batch
            await writer.flush()
            assert writer.commits == before + 1
            await writer.write([])
            commits = writer.commits
        seen = 0
        async for _ in listener.notifies(timeout=1.0, stop_after=commits):
            seen += 1
        assert seen == commits
    finally:
        await listener.close()
    assert query(pg_url, "SELECT count(*) FROM runs") == [(50,)]


def _writer_and_events(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Any, Callable[[], list[Any]]]:
    """A writer on `backend`, and what reads its journal's event ids back in order."""
    if backend == "sqlite":
        path = tmp_path / "journal.db"

        def sqlite_events() -> list[Any]:
            with sqlite3.connect(path) as conn:
                return conn.execute("SELECT event_id FROM events ORDER BY id").fetchall()

        return GroupCommitWriter(path), sqlite_events
    url = request.getfixturevalue("pg_url")
    return PostgresWriter(url), partial(query, url, "SELECT event_id FROM events ORDER BY id")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_batch_refused_for_one_callers_ops_commits_every_other_caller(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A batch holds several callers' ops: one caller's refused ops fail that caller alone.

    The batch is committed again caller by caller (a `together` block is one caller), in
    order; the writer goes on.
    """
    writer, events = _writer_and_events(backend, tmp_path, request)
    create = ops.create_run(
        1, "r1", "wf", "t", "v", status=RunStatus.QUEUED, first_step="a", state="{}", at=1
    )
    async with running(writer):
        await writer.write(create)
        before = writer.enqueue([ops.add_event("e1", "t", "{}", "api", 2)])
        with writer.together():  # one caller: its ops commit or fail as one
            guilty = writer.enqueue([ops.add_event("e2", "t", "{}", "api", 3)])
            again = writer.enqueue(create)  # the same run row again: a unique violation
        after = writer.enqueue([ops.add_event("e3", "t", "{}", "api", 4)])
        assert guilty is again and len({id(before), id(guilty), id(after)}) == 3
        await writer.flush()
        with pytest.raises(JournalError, match="write failed"):
            await guilty
        await before
        await after
        assert writer.failure is None
        await writer.write([ops.add_event("e4", "t", "{}", "api", 5)])
    assert events() == [("e1",), ("e3",), ("e4",)]


@pytest.mark.parametrize(
    ("sqlstate", "is_refused"),
    [
        ("22001", True),  # string data right truncation: too long
        ("22P05", True),  # untranslatable character
        ("23505", True),  # unique violation: a row written twice
        ("23514", True),  # check violation
        ("54000", True),  # program limit exceeded: an index entry too large
        ("40001", False),  # serialization failure: may pass
        ("53100", False),  # disk full: may pass
        ("57014", False),  # statement cancelled
        ("55P03", False),  # lock not available
        ("42501", False),  # insufficient privilege: the role, not the value
        ("42P01", False),  # undefined table: the journal, not the value
    ],
)
def test_one_rule_says_which_server_errors_refuse_a_callers_value(
    pg_url: str, sqlstate: str, is_refused: bool
) -> None:
    """The writer and the step jobs' replies each listed the refused SQLSTATE classes (the
    replies' list lacked 23); `connection.refused` is now the one rule both follow."""
    with psycopg.connect(pg_url, autocommit=True) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$")
    assert caught.value.sqlstate == sqlstate
    assert refused(caught.value) is is_refused
    assert not refused(ValueError("not the server's"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_refused_caller_with_no_future_is_left_out_alone(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`submit` makes no future: its refused ops are left out, the others commit."""
    writer, events = _writer_and_events(backend, tmp_path, request)
    create = ops.create_run(
        1, "r1", "wf", "t", "v", status=RunStatus.QUEUED, first_step="a", state="{}", at=1
    )
    async with running(writer):
        await writer.write(create)
        writer.submit([ops.add_event("e1", "t", "{}", "api", 2)])
        writer.submit([ops.add_event("e2", "t", "{}", "api", 3), *create])  # refused
        after = writer.enqueue([ops.add_event("e3", "t", "{}", "api", 4)])
        await writer.flush()
        await after
        assert writer.failure is None
    assert events() == [("e1",), ("e3",)]


async def test_a_failed_pipelined_batch_leaves_psycopg_nothing_to_log(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg logged "error ignored terminating <AsyncPipeline ...>: pipeline aborted" (on
    stderr, with no logging set up) when a statement of a pipelined batch failed."""
    caplog.set_level(logging.WARNING, logger="psycopg")
    create = ops.create_run(
        1, "r1", "wf", "t", "v", status=RunStatus.QUEUED, first_step="a", state="{}", at=1
    )
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write(create)
        # The run row fails first; its error comes back while the log lines are still sent.
        lines = [ops.add_timeline(None, n, "run", "log", message="x" * 100) for n in range(5000)]
        for _ in range(3):
            with pytest.raises(JournalError, match="runs_pkey"):
                await writer.write([ops.add_event("e1", "t", "{}", "api", 2), *create, *lines])
        await writer.write([ops.add_event("e2", "t", "{}", "api", 3)])
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
    assert query(pg_url, "SELECT event_id FROM events") == [("e2",)]


async def test_failing_commits_are_retried_and_the_writer_says_it_is_degraded(
    pg_url: str,
) -> None:
    faults = FaultPoints()
    async with running(PostgresWriter(pg_url, faults=faults)) as writer:
        faults.fail(3)
        write = asyncio.ensure_future(writer.write([ops.add_event("e1", "t", "{}", "api", 1)]))
        await eventually(lambda: writer.degraded, what="the writer degraded")
        assert not write.done()
        assert query(pg_url, "SELECT degraded FROM daemons")[0][0] is not None
        await write
        assert writer.degraded is None and faults.failures_left == 0
    assert query(pg_url, "SELECT count(*) FROM events") == [(1,)]


async def test_synchronous_maps_to_synchronous_commit(pg_url: str) -> None:
    for synchronous, expected in (("FULL", "on"), ("NORMAL", "off")):
        writer = PostgresJournal(pg_url).writer(synchronous=synchronous)  # type: ignore[arg-type]
        assert isinstance(writer, PostgresWriter)
        async with running(writer):
            assert writer._conn is not None
            cursor = await writer._conn.execute("SHOW synchronous_commit")
            assert await cursor.fetchone() == (expected,)


# -- the daemon row and the fence ----------------------------------------------------------


async def test_the_daemon_row_says_who_writes_and_when_it_stopped(pg_url: str) -> None:
    writer = PostgresWriter(pg_url)
    async with running(writer):
        await writer.mark_ready()
        (row,) = query(pg_url, "SELECT id, pid, ready, epoch, stopped_at FROM daemons")
        assert row[0] == writer.daemon_id and row[2:] == (1, 1, None)
        beat = query(pg_url, "SELECT heartbeat_at FROM daemons")[0][0]
        await writer.write([])
        assert query(pg_url, "SELECT heartbeat_at FROM daemons")[0][0] > beat
        assert writer.lease_fresh()
    assert query(pg_url, "SELECT stopped_at IS NOT NULL FROM daemons") == [(True,)]


async def test_a_live_daemon_refuses_a_second_and_a_stale_one_is_fenced(pg_url: str) -> None:
    first = PostgresWriter(pg_url)
    async with running(first):
        with pytest.raises(JournalLocked, match=r"is in use by pid \d+ on .*heartbeat"):
            await PostgresWriter(pg_url).open()
        # A daemon that died (its heartbeat old): the next one fences it and takes over.
        query(pg_url, "UPDATE daemons SET heartbeat_at = heartbeat_at - 60000000")
        second = PostgresWriter(pg_url)
        async with running(second):
            rows = query(pg_url, "SELECT id, epoch, fenced_at IS NOT NULL FROM daemons ORDER BY id")
            assert rows == [(first.daemon_id, 2, True), (second.daemon_id, 1, False)]
            await second.write([ops.add_event("e2", "t", "{}", "api", 1)])
        # The fenced one writes nothing more.
        with pytest.raises(JournalLocked, match="fenced"):
            await first.write([ops.add_event("e1", "t", "{}", "api", 1)])
        assert isinstance(first.failure, JournalLocked) and not first.lease_fresh()
    assert query(pg_url, "SELECT event_id FROM events") == [("e2",)]


async def test_a_fenced_daemon_writes_nothing_of_its_next_batch(pg_url: str) -> None:
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([ops.add_event("before", "t", "{}", "api", 1)])
        query(
            pg_url,
            "UPDATE daemons SET epoch = epoch + 1, fenced_at = 1 WHERE id = %s",
            (writer.daemon_id,),
        )
        batch = [ops.add_event("after", "t", "{}", "api", 2), ops.add_timeline(None, 2, "s", "k")]
        with pytest.raises(JournalLocked, match="fenced"):
            await writer.write(batch)
        assert isinstance(writer.failure, JournalLocked)
    assert query(pg_url, "SELECT event_id FROM events") == [("before",)]
    assert query(pg_url, "SELECT count(*) FROM timeline") == [(0,)]


async def test_a_fence_waits_for_the_batch_in_flight(pg_url: str) -> None:
    """The fencer's UPDATE waits for the batch's share lock: the batch lands whole, then none."""
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([ops.workflow_loaded("wf", "v1", None, "[]", "", 1)])
        locker = await connect(pg_url)
        fencer = await connect(pg_url, autocommit=True)
        try:
            # Another transaction holds a row the batch writes: the batch waits, its share
            # lock on the daemon row held.
            await locker.execute("SELECT 1 FROM workflows FOR UPDATE")
            batch = [
                ops.workflow_loaded("wf", "v2", None, "[]", "", 2),
                ops.add_event("e", "t", "{}", "api", 2),
            ]
            write = asyncio.ensure_future(writer.write(batch))
            backend = writer_backend(writer)
            await eventually(lambda: waiting_on_lock(pg_url, backend), what="the batch waits")
            fence = asyncio.ensure_future(
                fencer.execute(
                    "UPDATE daemons SET epoch = epoch + 1, fenced_at = 1 WHERE id = %s",
                    (writer.daemon_id,),
                )
            )
            fencer_pid = fencer.info.backend_pid
            await eventually(lambda: waiting_on_lock(pg_url, fencer_pid), what="the fence waits")
            await locker.rollback()
            await write  # committed before the fence
            await fence
            with pytest.raises(JournalLocked):
                await writer.write([ops.add_event("late", "t", "{}", "api", 3)])
        finally:
            await locker.close()
            await fencer.close()
    assert query(pg_url, "SELECT version FROM workflows") == [("v2",)]
    assert query(pg_url, "SELECT event_id FROM events") == [("e",)]


# -- a lost connection ---------------------------------------------------------------------


async def test_a_killed_connection_between_batches_is_made_again(pg_url: str) -> None:
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([ops.add_event("e1", "t", "{}", "api", 1)])
        query(pg_url, "SELECT pg_terminate_backend(%s)", (writer_backend(writer),))
        await writer.write([ops.add_event("e2", "t", "{}", "api", 2)])
        assert writer.failure is None and writer.degraded is None
    assert query(pg_url, "SELECT event_id FROM events ORDER BY id") == [("e1",), ("e2",)]


async def test_a_connection_killed_mid_batch_loses_nothing_and_doubles_nothing(
    pg_url: str,
) -> None:
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([])
        backend = writer_backend(writer)
        locker = await connect(pg_url)
        try:
            # Hold the daemon row: the next batch waits on it, mid-transaction.
            await locker.execute("SELECT 1 FROM daemons FOR UPDATE")
            write = asyncio.ensure_future(writer.write([ops.add_event("e1", "t", "{}", "api", 1)]))
            await eventually(lambda: waiting_on_lock(pg_url, backend), what="the batch waits")
            query(pg_url, "SELECT pg_terminate_backend(%s)", (backend,))
            await locker.rollback()
            await write
        finally:
            await locker.close()
        assert writer.failure is None
        await writer.write([ops.add_event("e2", "t", "{}", "api", 2)])
    assert query(pg_url, "SELECT event_id FROM events ORDER BY id") == [("e1",), ("e2",)]


async def test_a_batch_cut_off_after_its_commit_is_acknowledged_not_sent_again(
    pg_url: str,
) -> None:
    """A COMMIT that landed but whose answer was lost: the writer finds its heartbeat.

    A synchronous standby that does not exist makes COMMIT wait after the commit is durable
    locally; killing the connection there is a commit whose client never heard of it. Sent
    again, the batch's event would be a duplicate key, and the writer would fail.
    """
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([])
        backend = writer_backend(writer)
        query(admin, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        try:
            query(admin, "SELECT pg_reload_conf()")
            write = asyncio.ensure_future(writer.write([ops.add_event("e1", "t", "{}", "api", 1)]))

            def in_commit() -> bool | None:
                rows = query(
                    pg_url, "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (backend,)
                )
                return rows == [("SyncRep",)] or None

            await eventually(in_commit, what="the COMMIT waits for the standby")
            query(pg_url, "SELECT pg_terminate_backend(%s)", (backend,))
            await write
        finally:
            query(admin, "ALTER SYSTEM RESET synchronous_standby_names")
            query(admin, "SELECT pg_reload_conf()")
        assert writer.failure is None and writer_backend(writer) != backend
        await writer.write([ops.add_event("e2", "t", "{}", "api", 2)])
    assert query(pg_url, "SELECT event_id FROM events ORDER BY id") == [("e1",), ("e2",)]


async def test_after_reconnecting_the_heartbeat_says_whether_the_last_batch_landed(
    pg_url: str,
) -> None:
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([ops.add_event("e1", "t", "{}", "api", 1)])
        assert await writer._reconnect() is True  # the last batch's heartbeat is there
        writer._attempt_beat += 1
        assert await writer._reconnect() is False


async def test_a_connection_that_does_not_come_back_fails_the_writer(pg_url: str) -> None:
    writer = PostgresWriter(pg_url)
    writer.reconnect_patience = 0.5
    database = query(pg_url, "SELECT current_database()")[0][0]
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    async with running(writer):
        await writer.write([])
        query(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            query(admin, "SELECT pg_terminate_backend(%s)", (writer_backend(writer),))
            with pytest.raises(JournalUnreachable, match="could not be made again"):
                await writer.write([ops.add_event("e1", "t", "{}", "api", 1)])
        finally:
            query(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        assert isinstance(writer.failure, JournalUnreachable)
    assert query(pg_url, "SELECT count(*) FROM events") == [(0,)]


def test_snapshot_ids_are_shared_by_both_backends() -> None:
    assert deltas.snapshot_id(2, 3) == 2 * (1 << 24) + 3


# -- any sequence of ops -------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_STATE = st.dictionaries(
    st.sampled_from(["a", "b", "é", "big"]),
    st.one_of(st.integers(-5, 5), _TEXT, st.just("x" * 700), st.lists(st.integers(), max_size=3)),
    max_size=4,
).map(lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False))


_KEYS = st.none() | st.sampled_from(["k1", "k2"])


def _some_ops(draw: st.DrawFn, row: int, at: int, positions: dict[int, int]) -> list[Op]:
    """The ops of one thing a run does at `at`, drawn."""
    kind = draw(
        st.sampled_from(
            ["checkpoint", "status", "log", "switch", "error", "event", "emit", "start"]
        )
    )
    if kind == "checkpoint":
        positions[row] += 1
        return ops.checkpoint(
            row,
            positions[row],
            draw(_TEXT),
            started_at=at,
            ended_at=at,
            state=draw(_STATE),
            next_step=draw(st.none() | _TEXT),
        )
    if kind == "status":
        status = draw(st.sampled_from(list(RunStatus)))
        return [ops.set_status(row, status, at, error=draw(st.none() | _TEXT))]
    if kind == "log":
        return [ops.add_timeline(row, at, "run", "log", message=draw(_TEXT))]
    if kind == "switch":
        return [ops.set_switch("wf", draw(st.none() | _TEXT), draw(st.booleans()), at)]
    if kind == "event":
        event = f"ev-{at}"
        return [
            ops.add_event(event, draw(_TEXT), draw(_STATE), "api", at),
            ops.add_route(event, row, draw(st.sampled_from(["started", "resumed"]))),
        ]
    if kind == "emit":
        target = draw(st.sampled_from(["emit-1", "emit-2", f"emit-{at}"]))
        return ops.outbox_event(target, draw(_TEXT), draw(_STATE), at, key=draw(_KEYS))
    if kind == "start":
        child, key = draw(st.sampled_from(["child-1", "child-2"])), draw(_KEYS)
        return [
            *ops.outbox_invoke(child, "wf", "go", draw(_STATE), at, key=key),
            ops.add_child(child, f"r{row}", at, positions[row], key=key),
        ]
    line, message = draw(st.none() | st.integers(0, 9)), draw(st.none() | _TEXT)
    return [ops.load_error(draw(_TEXT), line, message, at)]


@st.composite
def op_batches(draw: st.DrawFn) -> list[list[Op]]:
    """Batches over three runs: progress, states of any size, statuses, logs, switches."""
    at = 1_000
    batches: list[list[Op]] = [
        [
            op
            for row in (1, 2, 3)
            for op in ops.create_run(
                row,
                f"r{row}",
                "wf",
                "t",
                "v",
                status=RunStatus.RUNNING,
                first_step="a",
                state=draw(_STATE),
                at=at,
            )
        ]
    ]
    positions = {1: 0, 2: 0, 3: 0}
    for _ in range(draw(st.integers(1, 5))):
        batch: list[Op] = []
        for _ in range(draw(st.integers(0, 6))):
            at += 1
            row = draw(st.sampled_from([1, 2, 3]))
            batch += _some_ops(draw, row, at, positions)
        batches.append(batch)
    return batches


def _empty(url: str) -> None:
    names = [
        n
        for (n,) in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'orchestrator'")
        if n != "schema_version"
    ]
    query(url, f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=op_batches(), together=st.booleans())
async def test_any_op_sequence_writes_the_rows_sqlite_writes(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str, batches: list[list[Op]], together: bool
) -> None:
    await migrate_journal(pg_url)
    _empty(pg_url)
    path = await both(tmp_path_factory.mktemp("any"), pg_url, batches, together=together)
    assert_same_rows(path, pg_url)


async def test_backlog_and_committed_follow_a_lazy_batch_and_close_commits_it(
    pg_url: str,
) -> None:
    writer = PostgresWriter(pg_url)
    await writer.open()
    task = asyncio.create_task(writer.run())
    assert (writer.committed, writer.backlog) == (True, 0)
    lazy = writer.enqueue([ops.add_event("e1", "t", "{}", "api", 1)])
    assert (writer.committed, writer.backlog, lazy.done()) == (False, 1, False)
    await writer.close()
    await task
    assert lazy.done() and lazy.exception() is None and writer.committed
    with pytest.raises(JournalError, match="is closed"):
        writer.enqueue([])
    assert query(pg_url, "SELECT event_id FROM events") == [("e1",)]
    assert query(pg_url, "SELECT stopped_at IS NOT NULL FROM daemons") == [(True,)]


async def test_a_cancelled_writer_task_commits_what_is_pending_first(pg_url: str) -> None:
    writer = PostgresWriter(pg_url)
    await writer.open()
    task = asyncio.create_task(writer.run())
    await writer.write([])
    lazy = writer.enqueue([ops.add_event("e1", "t", "{}", "api", 1)])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lazy.done() and lazy.exception() is None
    assert query(pg_url, "SELECT event_id FROM events") == [("e1",)]


async def test_liveness_is_judged_as_the_sqlite_lease_judges_it(pg_url: str) -> None:
    """A fresh row of a dead process on this host is taken over; of another host, refused."""
    await migrate_journal(pg_url)
    exited = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await exited.wait()  # its pid names no process now
    now = time.time_ns() // 1000
    insert = (
        "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at)"
        " VALUES (%s, %s, %s, %s, %s)"
    )
    query(pg_url, insert, ("dead", exited.pid, liveness.HOST, now, now))
    async with running(PostgresWriter(pg_url)) as writer:
        rows = query(pg_url, "SELECT token, epoch, fenced_at IS NOT NULL FROM daemons ORDER BY id")
        assert rows == [("dead", 2, True), (writer._token, 1, False)]
    query(pg_url, insert, ("elsewhere", 1, "another-host", now, now))
    with pytest.raises(JournalLocked, match="in use by pid 1 on another-host"):
        await PostgresWriter(pg_url).open()


async def test_a_statement_cancelled_by_the_server_is_retried_until_it_passes(
    pg_url: str,
) -> None:
    """A real transient SQLSTATE (57014, the statement timeout) keeps the batch: no loss."""
    async with running(PostgresWriter(pg_url)) as writer:
        await writer.write([ops.workflow_loaded("wf", "v1", None, "[]", "", 1)])
        assert writer._conn is not None
        await writer._conn.execute("SET statement_timeout = 100")
        locker = await connect(pg_url)
        try:
            await locker.execute("SELECT 1 FROM workflows FOR UPDATE")
            batch = [ops.workflow_loaded("wf", "v2", None, "[]", "", 2)]
            write = asyncio.ensure_future(writer.write(batch))
            reason = await eventually(lambda: writer.degraded, what="the writer degraded")
            assert "statement timeout" in reason and not write.done()
            degraded = await eventually(
                lambda: query(pg_url, "SELECT degraded FROM daemons")[0][0],
                what="the daemon row says why",
            )
            assert "statement timeout" in degraded
        finally:
            await locker.rollback()
            await locker.close()
        await write
        assert writer.failure is None and writer.degraded is None
    assert query(pg_url, "SELECT version FROM workflows") == [("v2",)]

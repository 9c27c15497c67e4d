"""The PostgreSQL journal's foundation, on a real server: connecting, the schema, migrations.

The server is the session's throwaway cluster (tests/postgres.py); each test gets a database
of its own (`pg_url`). Until the backend implements the whole protocol, a runtime or a
command on a ``postgresql://`` URL is refused, and `journal migrate` is the one way in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from postgres import Cluster, find_bindir
from procs import ROOT

from orchestrator import JournalUnreachable, Runtime, Workflow
from orchestrator.errors import (
    JournalBackendUnavailable,
    JournalCorrupt,
    JournalError,
    JournalPathInvalid,
    ValidationError,
)
from orchestrator.journal.backends import migrate_journal, open_journal
from orchestrator.journal.postgres import connection, schema
from orchestrator.journal.sqlite import schema as sqlite_schema
from orchestrator.testing import eventually_blocking


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """One statement on the database at `url`, in its own transaction (no orchestrator code)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def tables(url: str) -> set[str]:
    rows = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'orchestrator'")
    return {str(name) for (name,) in rows}


def sqlite_tables() -> set[str]:
    import sqlite3

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        sqlite_schema.migrate(conn, Path(":memory:"))
        rows = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return {name for (name,) in rows}


def closed_port() -> int:
    """A port of 127.0.0.1 on which nothing listens (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


# -- the throwaway server ------------------------------------------------------------------


def test_the_server_binaries_are_found_without_a_hard_coded_version(pg_cluster: Cluster) -> None:
    bindir = find_bindir()
    assert bindir == pg_cluster.bindir
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def test_each_test_database_is_new_and_apart(pg_cluster: Cluster, pg_url: str) -> None:
    assert pg_cluster.start_seconds > 0
    query(pg_url, "CREATE TABLE mine (n INTEGER)")
    other = pg_cluster.create_database("other")
    assert other != pg_url
    assert query(other, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'") == [(0,)]
    assert query(other, "SHOW server_encoding") == [("UTF8",)]
    assert query(pg_url, "SELECT inet_server_addr()::text") == [("127.0.0.1/32",)]


# -- migrations ----------------------------------------------------------------------------


async def test_migrate_makes_the_schema_then_has_nothing_to_do(pg_url: str) -> None:
    first = await migrate_journal(pg_url)
    assert (first.before, first.after) == (0, len(schema.MIGRATIONS))
    assert await schema.schema_version(pg_url) == len(schema.MIGRATIONS)
    again = await migrate_journal(pg_url)
    assert (again.before, again.after) == (len(schema.MIGRATIONS), len(schema.MIGRATIONS))
    assert "password" not in first.where and first.where.startswith("database ")


async def test_the_schema_holds_every_table_of_the_sqlite_journal(pg_url: str) -> None:
    await migrate_journal(pg_url)
    made = tables(pg_url)
    assert sqlite_tables() - {"lease"} <= made  # the lease becomes daemons + coordinator
    assert {"daemons", "coordinator", "gates", "schedule_ticks", "schema_version"} <= made


async def test_run_counts_follow_the_runs_as_sqlites_triggers_do(pg_url: str) -> None:
    await migrate_journal(pg_url)
    insert = (
        "INSERT INTO orchestrator.runs (run_id, workflow_id, trigger_id, version, status, "
        "created_at, updated_at) VALUES (%s, 'w', 't', 'v', 'queued', 1, 1)"
    )
    query(pg_url, insert, ("a",))
    query(pg_url, insert, ("b",))
    query(pg_url, "UPDATE orchestrator.runs SET status = 'running' WHERE run_id = 'a'")
    query(pg_url, "INSERT INTO orchestrator.snapshots VALUES (1 * 16777216 + 3, '{}')")
    counts = "SELECT status, n FROM orchestrator.run_counts WHERE n > 0 ORDER BY status"
    assert query(pg_url, counts) == [("queued", 1), ("running", 1)]
    query(pg_url, "DELETE FROM orchestrator.runs WHERE run_id = 'a'")
    assert query(pg_url, counts) == [("queued", 1)]
    assert query(pg_url, "SELECT count(*) FROM orchestrator.snapshots") == [(0,)]


def test_two_processes_migrating_at_once_one_waits_both_end_on_the_same_version(
    pg_url: str,
) -> None:
    """The lock is held here while both start, so both must wait; let go, one migrates."""
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    lock = connection.MIGRATION_LOCK
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        procs = [cli("journal", "migrate", "--db", pg_url, "--json") for _ in range(2)]
        try:
            eventually_blocking(
                lambda: query(pg_url, waiting) == [(2,)] or None,
                what="both processes wait for the migration lock",
                timeout=60,
            )
            assert all(proc.poll() is None for proc in procs)
            holder.rollback()  # lets the lock go
            outs = [proc.communicate(timeout=60) for proc in procs]
        finally:
            for proc in procs:
                proc.kill() if proc.poll() is None else None
    assert [proc.returncode for proc in procs] == [0, 0], outs
    last = len(schema.MIGRATIONS)
    reports = sorted(out for out, _ in outs)
    assert reports == sorted(
        [
            f'{{"journal": "{connection.describe(pg_url)}", "before": 0, "after": {last}}}\n',
            f'{{"journal": "{connection.describe(pg_url)}", "before": {last}, "after": {last}}}\n',
        ]
    )
    assert query(pg_url, "SELECT version FROM orchestrator.schema_version") == [(last,)]


async def test_a_schema_of_another_application_is_refused(pg_url: str) -> None:
    query(pg_url, "CREATE SCHEMA orchestrator; CREATE TABLE orchestrator.things (n INTEGER)")
    with pytest.raises(JournalCorrupt, match="not a journal's"):
        await migrate_journal(pg_url)
    assert tables(pg_url) == {"things"}


async def test_a_journal_of_a_newer_orchestrator_is_refused(pg_url: str) -> None:
    await migrate_journal(pg_url)
    query(pg_url, "UPDATE orchestrator.schema_version SET version = version + 1")
    with pytest.raises(JournalError, match="newer orchestrator") as caught:
        await migrate_journal(pg_url)
    assert caught.value.code == "JOURNAL_ERROR"


def test_the_cli_migrates_and_says_so(pg_url: str) -> None:
    proc = cli("journal", "migrate", "--db", pg_url)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")
    assert out == (
        f"migrated the journal ({connection.describe(pg_url)}) "
        f"from schema 0 to {len(schema.MIGRATIONS)}\n"
    )
    proc = cli("journal", "migrate", "--db", pg_url)
    assert f"is up to date: schema {len(schema.MIGRATIONS)}" in proc.communicate(timeout=60)[0]


# -- what fails, and how it says so --------------------------------------------------------


async def test_a_server_that_cannot_be_reached_is_named_without_the_password() -> None:
    port = closed_port()
    url = f"postgresql://me:s3cret@127.0.0.1:{port}/orch"
    began = time.monotonic()
    with pytest.raises(JournalUnreachable) as caught:
        await migrate_journal(url)
    assert time.monotonic() - began < connection.CONNECT_TIMEOUT + 30  # never a hang
    message = str(caught.value)
    assert caught.value.code == "JOURNAL_UNREACHABLE"
    assert f"database orch on 127.0.0.1:{port} as me" in message
    assert "s3cret" not in message and "s3cret" not in repr(caught.value.__cause__)


async def test_a_database_that_does_not_exist_is_unreachable(pg_cluster: Cluster) -> None:
    url = pg_cluster.url("no_such_db", password="s3cret")
    with pytest.raises(JournalUnreachable, match='"no_such_db" does not exist') as caught:
        await migrate_journal(url)
    assert "s3cret" not in str(caught.value)


def test_the_cli_reports_an_unreachable_server_in_one_line() -> None:
    url = f"postgresql://me:s3cret@127.0.0.1:{closed_port()}/orch"
    proc = cli("journal", "migrate", "--db", url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert err.startswith("error: cannot connect to the PostgreSQL journal (database orch on")
    assert err.rstrip().endswith("[JOURNAL_UNREACHABLE]") and "s3cret" not in err
    assert "Traceback" not in err


async def test_a_url_that_is_not_valid_is_refused() -> None:
    with pytest.raises(JournalPathInvalid, match="not valid"):
        await migrate_journal("postgresql://h/d?no_such_option=1")


async def test_migrate_takes_only_a_postgresql_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="migrates itself"):
        await migrate_journal(tmp_path / "journal.db")
    assert list(tmp_path.iterdir()) == []


def test_without_psycopg_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg: ImportError
    for attempt in (
        connection.load_psycopg,
        lambda: open_journal("postgresql://me:s3cret@db.example/orch"),
    ):
        with pytest.raises(JournalBackendUnavailable) as caught:
            attempt()
        assert "pip install 'durable-orchestrator[postgres]'" in str(caught.value)
        assert caught.value.code == "JOURNAL_BACKEND_UNAVAILABLE"
        assert "s3cret" not in str(caught.value)


def test_a_runtime_on_a_url_that_is_not_valid_says_so() -> None:
    with pytest.raises(JournalPathInvalid, match="URL is not valid"):
        Runtime("postgresql://h/d?no_such_option=1")


async def test_a_runtime_on_a_new_database_creates_its_journal_and_runs(pg_url: str) -> None:
    async def inc(state: dict[str, int]) -> dict[str, int]:
        return {"n": state.get("n", 0) + 1}

    flow = Workflow(id="w", pipelines={"go": [inc, inc]})
    async with Runtime(pg_url, workflows=[flow]) as rt:
        assert (await rt.invoke("w", "go", {})).state == {"n": 2}
    assert open_journal(pg_url).exists()
    async with Runtime(pg_url, workflows=[flow]) as rt:  # the same journal, reopened
        [run] = await rt.list_runs()
        assert run.state == {"n": 2}


async def test_a_reader_reads_rows_by_position_and_by_column_name(pg_url: str) -> None:
    from orchestrator.journal.postgres.reader import PostgresReader

    await migrate_journal(pg_url)
    reader = await PostgresReader.open(pg_url)
    try:
        (row,) = await reader.fetch(
            "SELECT %s::text AS a, 2 AS b, version FROM schema_version", ["x"]
        )
        assert (row[0], row["a"], row[1], row["b"]) == ("x", "x", 2, 2)
        assert row.keys() == ["a", "b", "version"]
        with pytest.raises(JournalError, match="read failed"):
            await reader.fetch("SELECT no_such_column FROM runs")
    finally:
        await reader.close()
    assert "s3cret" not in reader.location

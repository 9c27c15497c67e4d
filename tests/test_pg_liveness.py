"""Every reader of a PostgreSQL journal judges its daemon as the writer does (`is_live`).

A daemon row with a fresh heartbeat whose process is gone from this host is dead at once,
for the reader, the dashboard's views, the CLI's commands and routing reads alike, as for a
daemon starting after it: not only once its heartbeat is 5 s old.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.liveness import HOST
from orchestrator.journal.postgres.backend import PostgresJournal
from orchestrator.journal.postgres.routing import PostgresRoutingReads
from orchestrator.journal.records import DaemonRecord, StandbyRecord


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement in its own transaction, on the journal's schema (no orchestrator code)."""
    with psycopg.connect(url, autocommit=True, options="-c search_path=orchestrator") as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def add_daemon(url: str, token: str, pid: int) -> None:
    """A ready daemon row of this host with a heartbeat of the server's now."""
    query(
        url,
        "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at, ready)"
        " VALUES (%s, %s, %s, 7, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, 1)",
        (token, pid, HOST),
    )


@pytest.fixture
def running_pid() -> Iterator[int]:
    """The pid of a process of this host that runs until the test ends."""
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1) as proc:
        try:
            yield proc.pid
        finally:
            proc.kill()


def gone_pid() -> int:
    """The pid of a process of this host that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def daemons_seen(url: str) -> list[DaemonRecord | bool | None]:
    """What the reader, the views, the commands and routing reads say of the live daemon."""
    journal = PostgresJournal(url)
    reader = await journal.open_reader()
    views = await journal.open_views()
    try:
        seen: list[DaemonRecord | bool | None] = [await reader.daemon(), await views.daemon()]
    finally:
        await reader.close()
        await views.close()
    seen.append(journal.commands.daemon())
    with PostgresRoutingReads(url) as routing:
        seen.append(routing.daemon_live())
    return seen


async def test_a_daemon_whose_process_is_gone_is_dead_at_once_for_every_reader(
    pg_url: str, running_pid: int
) -> None:
    await migrate_journal(pg_url)
    add_daemon(pg_url, "older", running_pid)
    add_daemon(pg_url, "killed", gone_pid())  # newer: started later, heartbeat fresh
    live = DaemonRecord(running_pid, HOST, 7, True, None)
    assert await daemons_seen(pg_url) == [live, live, live, True]
    query(pg_url, "UPDATE daemons SET pid = %s WHERE token = 'older'", (gone_pid(),))
    assert await daemons_seen(pg_url) == [None, None, None, False]


async def test_a_standby_whose_process_is_gone_is_not_listed(pg_url: str, running_pid: int) -> None:
    await migrate_journal(pg_url)
    for token, pid in (("waiting", running_pid), ("killed", gone_pid())):
        query(
            pg_url,
            "INSERT INTO standbys (token, pid, host, started_at, seen_at)"
            " VALUES (%s, %s, %s, 7, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint)",
            (token, pid, HOST),
        )
    journal = PostgresJournal(pg_url)
    views = await journal.open_views()
    try:
        assert await views.standbys() == [StandbyRecord(running_pid, HOST, 7)]
    finally:
        await views.close()

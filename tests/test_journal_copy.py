"""`copy_journal`: a SQLite journal moved into an empty PostgreSQL one, every row and id kept.

The source is a real journal written by a `Runtime` (runs completed, failed and paused on an
event, events routed and buffered, a large state stored as checkpoint deltas); the copy is
compared with it table by table, value for value.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator import JournalLocked, Runtime, Trigger, Workflow
from orchestrator.errors import JournalError, ValidationError
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.copy import COPIED, LEFT_BEHIND, copy_journal
from orchestrator.journal.postgres.connection import DAEMONS_LOCK
from orchestrator.testing import eventually

BIG = "é" * 3000  # a state this large is stored as merge patches against a snapshot


def grow(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "big": BIG, "n": state.get("n", 0) + 1}


def touch(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state["n"] + 1, "日本": "語"}


def fail(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("card declined: \u2603")


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="paid", where={"order": ("==", state["order"])}, into="payment")


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created")},
    pipelines={"new": [grow, wait_for_payment, touch], "bad": [grow, fail]},
)


async def write_journal(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        for order in range(3):
            await rt.emit("order.created", {"order": order})
        await rt.emit("paid", {"order": 0, "amount": 12})
        await rt.emit("nobody.listens", {"x": [1, 2, {"y": None}]}, key="once")
        await rt.invoke("orders", "bad", {})
        await rt.idle()


def sqlite_rows(db: Path, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        names = ", ".join(columns)
        return sorted(conn.execute(f"SELECT {names} FROM {table}").fetchall(), key=repr)


def pg_rows(url: str, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, options="-c search_path=orchestrator") as conn:
        names = ", ".join(columns)
        return sorted(conn.execute(f"SELECT {names} FROM {table}").fetchall(), key=repr)


def sqlite_columns(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


async def test_every_row_and_id_arrives_and_the_source_is_untouched(db: Path, pg_url: str) -> None:
    await write_journal(db)
    before = digest(db)
    report = await copy_journal(db, pg_url)
    assert digest(db) == before
    assert report.rows["runs"] == 4 and report.rows["events"] == 5
    assert "password" not in report.destination and str(db) == report.source
    for table in COPIED:
        columns = sqlite_columns(db, table)
        assert pg_rows(pg_url, table, columns) == sqlite_rows(db, table, columns), table
        assert report.rows[table] == len(sqlite_rows(db, table, columns))
    # The counts the dashboard reads are rebuilt by the destination's own trigger.
    counts = ["workflow_id", "trigger_id", "status", "n"]
    assert [r for r in pg_rows(pg_url, "run_counts", counts) if r[3]] == [
        r for r in sqlite_rows(db, "run_counts", counts) if r[3]
    ]
    # New rows get ids after the copied ones.
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        (copied,) = conn.execute("SELECT max(id) FROM events").fetchone() or (0,)
        conn.execute(
            "INSERT INTO events (event_id, type, data, source, created_at)"
            " VALUES ('e', 't', '{}', 'api', 0)"
        )
        (new,) = conn.execute("SELECT id FROM events WHERE event_id = 'e'").fetchone() or (0,)
    assert new == copied + 1


async def test_every_sqlite_table_is_copied_or_left_behind_for_a_reason(db: Path) -> None:
    await write_journal(db)
    with sqlite3.connect(db) as conn:
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert tables == set(COPIED) | set(LEFT_BEHIND)


async def test_a_destination_that_holds_a_journal_is_refused_and_left_as_it_was(
    db: Path, pg_url: str
) -> None:
    await write_journal(db)
    await copy_journal(db, pg_url)
    with pytest.raises(JournalError, match=r"holds a journal already \(4 runs, 5 events"):
        await copy_journal(db, pg_url)
    assert len(pg_rows(pg_url, "runs", ["id"])) == 4


async def test_a_journal_a_daemon_runs_is_refused(db: Path, pg_url: str) -> None:
    async with Runtime(db, workflows=[ORDERS]):
        with pytest.raises(JournalLocked, match="copied while no daemon runs; stop it first"):
            await copy_journal(db, pg_url)
    assert pg_rows(pg_url, "runs", ["id"]) == []


async def test_a_nul_character_stops_the_copy_naming_its_row_and_writes_nothing(
    db: Path, pg_url: str
) -> None:
    await write_journal(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET error = ? WHERE id = 4", ["a\x00b"])
    with pytest.raises(JournalError, match=r"table runs, column error, row id=4 holds a NUL"):
        await copy_journal(db, pg_url)
    await migrate_journal(pg_url)
    assert pg_rows(pg_url, "workflow_versions", ["version"]) == []


@pytest.mark.parametrize(
    ("source", "destination", "error", "match"),
    [
        ("postgresql://h/d", "postgresql://h/e", ValidationError, "SRC is a file path"),
        ("j.db", "k.db", ValidationError, "DST is a postgresql:// URL"),
    ],
)
async def test_the_directions_are_checked(
    source: str, destination: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await copy_journal(source, destination)


async def test_a_missing_source_is_named(tmp_path: Path, pg_url: str) -> None:
    with pytest.raises(JournalError, match="there is no journal at"):
        await copy_journal(tmp_path / "none.db", pg_url)
    assert not (tmp_path / "none.db").exists()


def test_the_copy_runs_in_its_own_event_loop(db: Path, pg_url: str) -> None:
    asyncio.run(write_journal(db))
    assert asyncio.run(copy_journal(db, pg_url)).rows["runs"] == 4


async def test_text_that_is_not_utf8_stops_the_copy_with_what_to_do(db: Path, pg_url: str) -> None:
    await write_journal(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET error = CAST(x'ff00fe' AS TEXT) WHERE id = 4")
    with pytest.raises(
        JournalError, match=r"table runs of .* cannot be read .*decode to UTF-8"
    ) as caught:
        await copy_journal(db, pg_url)
    assert ".recover" in str(caught.value)
    assert pg_rows(pg_url, "runs", ["id"]) == []


async def test_a_daemon_registering_during_the_copy_is_waited_for_and_refuses_it(
    db: Path, pg_url: str
) -> None:
    """The copy counted no daemon while one was registering (not committed yet): that
    daemon read no runs, so its run ids would clash with the ones the copy brings."""
    await write_journal(db)
    await migrate_journal(pg_url)
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as daemon:
        # A daemon registering as `PostgresWriter` does: the daemons lock, then its row.
        daemon.execute("SELECT pg_advisory_xact_lock(%s)", (DAEMONS_LOCK,))
        daemon.execute(
            "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at)"
            " VALUES ('t', 1, 'h', 0, 0)"
        )
        copying = asyncio.create_task(copy_journal(db, pg_url))

        def waiting() -> bool | None:
            # Its own connection: a transaction sees one snapshot of pg_stat_activity.
            with psycopg.connect(pg_url, autocommit=True) as look:
                rows = look.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                    " AND datname = current_database()"
                ).fetchone()
            return copying.done() or bool(rows and rows[0]) or None

        await eventually(waiting, what="the copy to end or wait for the daemons lock")
        assert not copying.done(), "the copy went on while a daemon registered"
        daemon.commit()
    with pytest.raises(JournalError, match=r"holds a journal already \(0 runs.*1 daemons"):
        await copying
    assert pg_rows(pg_url, "runs", ["id"]) == []

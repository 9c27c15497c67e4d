"""The CLI's writes on a PostgreSQL journal (`PostgresCommands`), against the SQLite ones.

A real `Runtime` writes a SQLite journal (runs completed, failed, retried, forked, paused on
an event and on a timer, aborted, a disabled trigger, keys, a load error, a large state
kept as deltas, non-ASCII text); `copy_journal` copies it into a PostgreSQL database. Each
command is then applied to both with the same clock reading and the same new ids, and
both journals must hold the same rows, table by table: the **differential** tests. The
rest are PostgreSQL's own: keys raced by threads and processes, the daemon record, a
database without a journal, a server that is not there.

`open_postgres` still refuses a URL until the four PostgreSQL parts are merged, so the
CLI on a ``postgresql://`` journal is tested in this process with that refusal lifted by
the test (`cli_on_postgres`), and by real subprocesses once the merge lifted it for good
(`after_the_merge`: skipped while it refuses, and said so).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
from procs import ROOT

from orchestrator import Runtime, Trigger, Workflow
from orchestrator.clock import Clock
from orchestrator.errors import (
    JournalError,
    JournalUnreachable,
    OrchestratorError,
    ValidationError,
)
from orchestrator.journal.backends import migrate_journal
from orchestrator.journal.copy import COPIED, copy_journal
from orchestrator.journal.postgres.backend import PostgresJournal
from orchestrator.journal.protocol import JournalCommands
from orchestrator.journal.sqlite.backend import SqliteJournal

NOW = 1_900_000_000_000_000  # every command's clock reading, on both journals
FAR = 2**62  # a cutoff past every row
BIG = "é" * 3000  # stored as merge patches against a snapshot


def grow(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "big": BIG, "n": state.get("n", 0) + 1}


def touch(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1, "日本": "語"}


def fail(state: dict[str, Any]) -> dict[str, Any]:
    if not state.get("fixed"):
        raise RuntimeError("card declined: \u2603")
    return state


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="paid", where={"order": ("==", state["order"])}, into="payment")


def wait_a_day(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="never", timeout=86_400)


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created"), "later": Trigger(event="order.later")},
    pipelines={
        "new": [grow, wait_for_payment, touch],
        "bad": [grow, fail, touch],
        "later": [touch, wait_a_day],
    },
)


async def write_journal(db: Path) -> dict[str, str]:
    """A journal with something of everything the commands check; run ids by role."""
    async with Runtime(db, workflows=[ORDERS]) as rt:
        for order in range(3):
            await rt.emit("order.created", {"order": order, "名前": "ü"})
        await rt.emit("paid", {"order": 0, "amount": 12})
        await rt.emit("order.later", {})
        await rt.emit("nobody.listens", {"x": [1, 2, {"y": None}]}, key="once")
        failed = await rt.invoke("orders", "bad", {}, key="bad-once")
        retried = await rt.invoke("orders", "bad", {})
        aborted = await rt.invoke("orders", "bad", {})
        await rt.idle()
        await rt.retry(retried.run_id, {"fixed": True})
        forked = await rt.fork(failed.run_id, "fail", {"forked": "✓", "fixed": True})
        await rt.idle()
        await rt.disable("orders", "later")
        runs = {info.run_id: info for info in await rt.list_all_runs()}
        paused = sorted(
            r for r, i in runs.items() if i.status == "paused" and i.trigger_id == "new"
        )
        completed = sorted(r for r, i in runs.items() if i.status == "completed")
        rt.report_load(db.parent / "broken.py", 3, "SyntaxError: ½ a line")
    with sqlite3.connect(db) as conn:  # an aborted run, as the daemon would leave it
        conn.execute(
            "UPDATE runs SET status = 'aborted', error = 'aborted by request' WHERE run_id = ?",
            (aborted.run_id,),
        )
    return {
        "paused": paused[0],
        "completed": completed[0],
        "failed": failed.run_id,
        "retried": retried.run_id,
        "aborted": aborted.run_id,
        "forked": forked,
    }


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry of live daemons of this test's own: other suites' daemons change no note."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))


@pytest.fixture
def pair(db: Path, pg_url: str) -> Iterator[tuple[SqliteJournal, PostgresJournal, dict[str, str]]]:
    """The same journal on SQLite and on PostgreSQL (copied), and its run ids by role."""
    import asyncio

    roles = asyncio.run(write_journal(db))
    asyncio.run(copy_journal(db, pg_url))
    yield SqliteJournal(db), PostgresJournal(pg_url), roles


@contextlib.contextmanager
def same_clock_and_ids(ids: Iterator[int]) -> Iterator[None]:
    """Every command reads `NOW` and makes ids ``id-0001``, ``id-0002``, ... from `ids`."""

    def new_id() -> str:
        return f"id-{next(ids):04d}"

    with (
        mock.patch.object(Clock, "now_us", lambda self: NOW),
        mock.patch("orchestrator.journal.sqlite.commands.new_id", new_id),
        mock.patch("orchestrator.journal.postgres.commands.new_id", new_id),
    ):
        yield


def columns(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def contents(
    journal: SqliteJournal | PostgresJournal, sqlite_db: Path
) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table's rows, sorted (the columns the SQLite journal has, by name)."""
    found = {}
    for table in COPIED:
        names = ", ".join(columns(sqlite_db, table))
        if isinstance(journal, SqliteJournal):
            with sqlite3.connect(journal.path) as conn:
                rows = conn.execute(f"SELECT {names} FROM {table}").fetchall()
        else:
            with psycopg.connect(journal.url, options="-c search_path=orchestrator") as pg:
                rows = pg.execute(f"SELECT {names} FROM {table}").fetchall()
        # PostgreSQL's foreign keys leave no rows of missing runs: no walk for them, no mark.
        kept = (tuple(row) for row in rows if table != "prune_marks" or row[0] != "orphans")
        found[table] = sorted(kept, key=repr)
    return found


def outcome(work: Callable[[], Any], location: str) -> Any:
    """What `work` returned, or its error's type, code and message (the journal's name out)."""
    try:
        return work()
    except OrchestratorError as exc:
        return type(exc).__name__, exc.code, str(exc).replace(location, "JOURNAL")


class Both:
    """The same journal on SQLite and on PostgreSQL, each with its own new ids (the same)."""

    def __init__(self, sqlite: SqliteJournal, pg: PostgresJournal) -> None:
        self.sqlite, self.pg = sqlite, pg
        self._ids = (itertools.count(1), itertools.count(1))

    def apply(self, step: Callable[[JournalCommands], Any]) -> tuple[Any, Any]:
        """`step` on each journal, with the same clock reading and the same new ids."""
        with same_clock_and_ids(self._ids[0]):
            on_sqlite = outcome(lambda: step(self.sqlite.commands), self.sqlite.location)
        with same_clock_and_ids(self._ids[1]):
            on_pg = outcome(lambda: step(self.pg.commands), self.pg.location)
        return on_sqlite, on_pg

    def differences(self) -> dict[str, tuple[list[Any], list[Any]]]:
        """The tables whose rows differ: the rows only SQLite has, and only PostgreSQL has."""
        db = self.sqlite.path
        on_sqlite, on_pg = contents(self.sqlite, db), contents(self.pg, db)
        return {
            table: (
                [row for row in on_sqlite[table] if row not in on_pg[table]],
                [row for row in on_pg[table] if row not in on_sqlite[table]],
            )
            for table in on_sqlite
            if on_sqlite[table] != on_pg[table]
        }


def steps(roles: dict[str, str]) -> list[tuple[str, Callable[[JournalCommands], Any]]]:
    """Every command, with arguments that succeed and arguments that are refused."""
    paused, completed, failed = roles["paused"], roles["completed"], roles["failed"]
    return [
        ("emit", lambda c: c.emit_event("order.created", {"order": 9, "名": "ß"})),
        ("emit with a key", lambda c: c.emit_event("paid", {"order": 1}, key="pay-1")),
        ("emit the key again", lambda c: c.emit_event("paid", {"order": 2}, key="pay-1")),
        ("emit a key the runtime used", lambda c: c.emit_event("x", {}, key="once")),
        ("emit a bad type", lambda c: c.emit_event("", {})),
        ("emit with an id", lambda c: c.emit_event("ping", {"\u2603": 1}, event_id="mine")),
        ("resume", lambda c: c.queue_command("resume", paused, {"p": "ü"})),
        ("resume a completed run", lambda c: c.queue_command("resume", completed, None)),
        ("signal", lambda c: c.queue_command("signal", paused, {"s": 1})),
        ("abort", lambda c: c.queue_command("abort", paused)),
        ("retry", lambda c: c.queue_command("retry", failed, {"fixed": True})),
        ("retry a completed run", lambda c: c.queue_command("retry", completed)),
        ("a run that is not there", lambda c: c.queue_command("abort", "nope")),
        ("fork", lambda c: c.queue_fork(completed, "touch", {"f": 1}, new_run_id="fork-1")),
        ("fork from the start", lambda c: c.queue_fork(failed, None, {})),
        ("fork from no such step", lambda c: c.queue_fork(completed, "nope", {})),
        ("fork from an empty step", lambda c: c.queue_fork(completed, "", {})),
        ("fork of no run", lambda c: c.queue_fork("nope", None, {})),
        ("invoke", lambda c: c.queue_invoke("orders", "new", {"order": 5})),
        ("invoke with a key", lambda c: c.queue_invoke("orders", "new", {}, key="k-1")),
        ("invoke the key again", lambda c: c.queue_invoke("orders", "new", {}, key="k-1")),
        ("invoke a key the runtime used", lambda c: c.queue_invoke("o", "t", {}, key="bad-once")),
        ("claim", lambda c: c.claim_invoke("claimed", "orders", "bad", {"n": 1}, key=None)),
        ("invoke an unknown workflow", lambda c: c.queue_invoke("ghost", "t", {"x": "ÿ"})),
        ("abort a queued run", lambda c: c.abort_unapplied("claimed")),
        ("abort it again", lambda c: c.abort_unapplied("claimed")),
        ("abort a paused run at once", lambda c: c.abort_unapplied(paused)),
        ("disable", lambda c: c.queue_switch("disable", "orders")),
        ("disable a trigger", lambda c: c.queue_switch("disable", "orders", "new")),
        ("enable", lambda c: c.queue_switch("enable", "orders", "later")),
        ("no such trigger", lambda c: c.queue_switch("disable", "orders", "nope")),
        ("an unloaded workflow", lambda c: c.queue_switch("disable", "ghost", "any")),
        ("not a switch", lambda c: c.queue_switch("toggle", "orders")),
        ("match all", lambda c: c.match_runs("", limit=3)),
        ("match a prefix", lambda c: c.match_runs(paused[:2], limit=50)),
        ("match one", lambda c: c.match_runs(paused)),
        ("match none", lambda c: c.match_runs("zz")),
        ("match past the last character", lambda c: c.match_runs("\U0010ffff")),
        ("no daemon", lambda c: c.daemon()),
        ("make vacuumable", lambda c: c.make_vacuumable() and None),
    ]


def test_each_command_writes_the_same_rows_on_both_backends(
    pair: tuple[SqliteJournal, PostgresJournal, dict[str, str]],
) -> None:
    sqlite, pg, roles = pair
    both = Both(sqlite, pg)
    assert both.differences() == {}  # the copy is the same journal
    for name, step in steps(roles):
        on_sqlite, on_pg = both.apply(step)
        assert on_pg == on_sqlite, name
        assert both.differences() == {}, name


def test_routing_reads_report_the_same(
    pair: tuple[SqliteJournal, PostgresJournal, dict[str, str]],
) -> None:
    sqlite, pg, _ = pair
    with sqlite3.connect(sqlite.path) as conn:
        events = [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY id")]
    with sqlite.commands.routing_reads() as on_sqlite, pg.commands.routing_reads() as on_pg:
        assert on_pg.daemon_live() is on_sqlite.daemon_live() is False
        assert on_pg.event_listeners() == on_sqlite.event_listeners()
        assert on_pg.event_listeners().waits  # the paused runs wait for "paid"
        assert on_pg.event_listeners().disabled  # and a trigger is off
        for event_id in [*events, "no-such-event"]:
            assert on_pg.event_routing(event_id) == on_sqlite.event_routing(event_id)
        assert any(on_pg.event_routing(e).routes for e in events)  # type: ignore[union-attr]
        before = on_pg.data_version()
        assert on_pg.data_version() == before
        pg.commands.emit_event("moved", {})
        assert on_pg.data_version() != before


@pytest.mark.parametrize("dry_run", [True, False])
def test_prune_deletes_the_same_runs_and_events(
    pair: tuple[SqliteJournal, PostgresJournal, dict[str, str]], dry_run: bool
) -> None:
    sqlite, pg, roles = pair
    both = Both(sqlite, pg)
    for _, step in steps(roles):  # commands, done and pending, as prune finds them
        both.apply(step)
    # Half the commands applied, a third of the events and the newest routed, a timeline
    # row of no run.
    applied = (
        "UPDATE inbox SET done_at = 5, outcome = 'ok' WHERE id % 2 = 0",
        "UPDATE events SET routed_at = 5 WHERE routed_at IS NULL"
        " AND (id % 3 = 0 OR id = (SELECT max(id) FROM events))",  # the newest stays anyway
        "INSERT INTO timeline (run, at, source, kind) VALUES (NULL, 1, 'x', 'y')",
        # The newest event routed to a run that goes: the event stays (ids never go back).
        "INSERT INTO event_routes (event_id, run, action) VALUES ((SELECT event_id FROM events"
        " ORDER BY id DESC LIMIT 1), (SELECT min(id) FROM runs WHERE status = 'completed'), 'x')",
    )
    with sqlite3.connect(sqlite.path) as lite:
        for sql in applied:
            lite.execute(sql)
    with psycopg.connect(pg.url, options="-c search_path=orchestrator") as conn:
        for sql in applied:
            conn.execute(sql)
    cutoffs = {"completed": FAR, "failed": FAR, "aborted": FAR}
    between: list[int] = []

    def prune(commands: JournalCommands) -> dict[str, int]:
        return commands.prune(
            cutoffs, events_before=FAR, dry_run=dry_run, between=lambda: between.append(1)
        )

    on_sqlite, on_pg = both.apply(prune)
    assert on_pg == on_sqlite
    assert on_pg["runs"] >= 4 and on_pg["events"] >= 1 and on_pg["keys"] >= 1
    assert on_pg["commands"] >= 1 and on_pg["timeline"] >= 1
    assert both.differences() == {}
    # A second prune finds nothing more on either.
    again = both.apply(prune)
    assert again[0] == again[1]


def test_prune_takes_batches_and_vacuum_gives_pages_back(pg_url: str) -> None:
    import asyncio

    from orchestrator.journal.postgres import prune

    asyncio.run(migrate_journal(pg_url))
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        conn.execute(
            "INSERT INTO runs (run_id, workflow_id, trigger_id, version, status, created_at,"
            " updated_at) SELECT 'r' || n, 'w', 't', '', 'completed', n, n"
            " FROM generate_series(1, 250) n"
        )
        conn.execute(
            "INSERT INTO checkpoints (run, position, started_at, ended_at, state)"
            " SELECT id, 0, 0, 0, repeat('x', 2000) FROM runs"
        )
    calls: list[int] = []
    counts = prune.prune(pg_url, {"completed": 200}, between=lambda: calls.append(1))
    assert counts["runs"] == 199 and counts["checkpoints"] == 199  # updated_at < 200
    assert len(calls) == 2  # 100 + 99: two transactions, then the one that found none
    journal = PostgresJournal(pg_url)
    assert journal.commands.prune({"completed": FAR})["runs"] == 51
    assert journal.commands.vacuum() >= 0
    assert journal.commands.make_vacuumable() is False


def test_concurrent_emits_with_one_key_insert_one_event(pg_url: str) -> None:
    import asyncio

    asyncio.run(migrate_journal(pg_url))
    commands = PostgresJournal(pg_url).commands
    start = threading.Barrier(8)
    ids: list[str] = []

    def emit(n: int) -> None:
        start.wait()
        ids.append(commands.emit_event("once", {"n": n}, key="the-key"))

    threads = [threading.Thread(target=emit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    code = (
        "import sys\n"
        "from orchestrator.journal.postgres.backend import PostgresJournal\n"
        "print(PostgresJournal(sys.argv[1]).commands.emit_event('once', {}, key='the-key'))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_url],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(3)
    ]
    ids += [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert len(ids) == 11 and len(set(ids)) == 1
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        assert conn.execute("SELECT event_id FROM events").fetchall() == [(ids[0],)]
        keys = conn.execute("SELECT kind, key, target FROM idempotency_keys").fetchall()
    assert keys == [("emit", "the-key", ids[0])]


def test_concurrent_invokes_with_one_key_queue_one_run(pg_url: str) -> None:
    import asyncio

    asyncio.run(migrate_journal(pg_url))
    commands = PostgresJournal(pg_url).commands
    start = threading.Barrier(6)
    ids: list[str] = []

    def invoke() -> None:
        start.wait()
        ids.append(commands.queue_invoke("w", "t", {}, key="k"))

    threads = [threading.Thread(target=invoke) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        assert conn.execute("SELECT run_id, status FROM runs").fetchall() == [(ids[0], "queued")]
        assert conn.execute("SELECT count(*) FROM inbox").fetchone() == (1,)


def add_daemon(url: str, *, heartbeat_at: int, fenced: bool = False) -> None:
    with psycopg.connect(url, options="-c search_path=orchestrator") as conn:
        conn.execute(
            "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at, ready, fenced_at)"
            " VALUES (%s, 4242, 'elsewhere', 7, %s, 1, %s)",
            (f"t{heartbeat_at}{fenced}", heartbeat_at, 1 if fenced else None),
        )


def test_with_a_live_daemon_an_invoke_writes_its_command_alone(pg_url: str) -> None:
    import asyncio

    asyncio.run(migrate_journal(pg_url))
    commands = PostgresJournal(pg_url).commands
    now = Clock().now_us()
    add_daemon(pg_url, heartbeat_at=now - 60_000_000)  # stale
    add_daemon(pg_url, heartbeat_at=now + 60_000_000, fenced=True)  # fenced
    assert commands.daemon() is None
    queued = commands.queue_invoke("w", "t", {})
    add_daemon(pg_url, heartbeat_at=now + 60_000_000)  # live (for a minute)
    daemon = commands.daemon()
    assert daemon is not None and (daemon.pid, daemon.host, daemon.ready) == (
        4242,
        "elsewhere",
        True,
    )
    run_id = commands.queue_invoke("w", "t", {})
    assert commands.match_runs("").runs[0].run_id == queued and commands.match_runs("").total == 1
    assert not commands.abort_unapplied(queued)  # a daemon applies its invoke now
    with commands.routing_reads() as reads:
        assert reads.daemon_live()
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        pending = conn.execute("SELECT run_id FROM inbox ORDER BY id").fetchall()
    assert pending == [(queued,), (run_id,)]


def test_a_database_without_a_journal_is_refused_and_not_created(pg_url: str) -> None:
    journal = PostgresJournal(pg_url)
    assert journal.exists() is False
    for work in (
        lambda: journal.commands.emit_event("x", {}),
        lambda: journal.commands.match_runs("a"),
        lambda: journal.commands.daemon(),
    ):
        with pytest.raises(JournalError, match=r"no journal in the PostgreSQL database .*migrate"):
            work()
    with pytest.raises(JournalError, match="no journal"), journal.commands.routing_reads():
        pass
    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'orchestrator'")
        assert found.fetchone() == (0,)


def test_a_server_that_is_not_there_is_unreachable_and_the_password_never_shown() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    journal = PostgresJournal(f"postgresql://me:s3cret@127.0.0.1:{port}/j?connect_timeout=3")
    for work in (journal.exists, lambda: journal.commands.emit_event("x", {})):
        with pytest.raises(JournalUnreachable) as caught:
            work()
        assert "s3cret" not in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)


def test_a_nul_in_an_event_type_is_refused_before_the_server(pg_url: str) -> None:
    import asyncio

    asyncio.run(migrate_journal(pg_url))
    commands = PostgresJournal(pg_url).commands
    with pytest.raises(OrchestratorError):
        commands.emit_event("a\x00b", {})
    event_id = commands.emit_event("a", {"text": "a\x00b"})  # JSON escapes it: kept
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        (data,) = conn.execute(
            "SELECT data FROM events WHERE event_id = %s", (event_id,)
        ).fetchone() or ("",)
    assert json.loads(data) == {"text": "a\x00b"}


def test_a_command_loads_no_aiosqlite_and_starts_no_event_loop(pg_url: str) -> None:
    """psycopg imports asyncio itself (when it is imported); nothing runs a loop."""
    import asyncio

    asyncio.run(migrate_journal(pg_url))
    code = (
        "import asyncio.events, sys\n"
        "from orchestrator.journal.postgres.backend import PostgresJournal\n"
        "PostgresJournal(sys.argv[1]).commands.emit_event('x', {})\n"
        "print('aiosqlite' in sys.modules, 'sqlite3' in sys.modules,"
        " asyncio.events._get_running_loop())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, pg_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.split() == ["False", "False", "None"]


# -- the CLI on a postgresql:// journal ----------------------------------------------------


def with_password(url: str) -> str:
    """`url` with a password in it (the test server trusts its users: it is never checked)."""
    return url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)


@pytest.fixture
def cli_on_postgres() -> Callable[..., tuple[int, str, str]]:
    """The CLI's `main` in this process (its exit code, stdout and stderr)."""
    import io

    from orchestrator.cli.main import _main

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _main(list(args))
        return code, out.getvalue(), err.getvalue()

    return run


def test_the_writing_commands_on_a_postgresql_journal(
    pair: tuple[SqliteJournal, PostgresJournal, dict[str, str]],
    cli_on_postgres: Callable[..., tuple[int, str, str]],
) -> None:
    _, pg, roles = pair
    db = ("--db", with_password(pg.url))
    code, out, err = cli_on_postgres("emit", "paid", '{"order": 1}', "--key", "k", "--json", *db)
    assert code == 0, err
    emitted = json.loads(out)
    assert emitted["routed"] is False and emitted["event_id"]
    note = f"note: no daemon is running on {pg.location}"
    assert note in err and "s3cret" not in out + err
    assert f"--db {pg.identity}" in err  # a --db to pass, without user or password
    code, out, _ = cli_on_postgres("emit", "paid", '{"order": 1}', "--key", "k", "--json", *db)
    again = json.loads(out)
    assert again["event_id"] == emitted["event_id"] and again["reused"] is True
    paused, completed, failed = roles["paused"], roles["completed"], roles["failed"]
    for args in (
        ("resume", paused[:8], '{"ok": true}'),
        ("signal", paused, '{"n": 1}'),
        ("retry", failed, "{}"),
        ("fork", completed, "--from", "touch"),
        ("disable", "orders", "new"),
        ("enable", "orders"),
        ("abort", paused),
    ):
        code, out, err = cli_on_postgres(*args, *db)
        assert code == 0, (args, err)
        assert note in err and "s3cret" not in out + err, args
    code, _, err = cli_on_postgres("resume", completed, *db)
    assert code == 1 and "only a paused run can be resumed" in err
    code, _, err = cli_on_postgres("abort", "ffff", *db)
    assert code == 2 and f"no run 'ffff' in journal {pg.location}" in err
    code, _, err = cli_on_postgres("disable", "orders", "nope", *db)
    assert code == 2 and "has no trigger 'nope'" in err
    with psycopg.connect(pg.url, options="-c search_path=orchestrator") as conn:
        inbox = conn.execute("SELECT command FROM inbox ORDER BY id").fetchall()
    commands = ["resume", "signal", "retry", "fork", "disable", "enable", "abort"]
    assert [row[0] for row in inbox][-7:] == commands
    code, out, err = cli_on_postgres("prune", "--older-than", "0s", "--dry-run", "--json", *db)
    assert code == 0 and json.loads(out)["dry_run"] is True and json.loads(out)["runs"] >= 3
    code, out, err = cli_on_postgres("prune", "--older-than", "0s", "--vacuum", *db)
    assert code == 0 and out.startswith("pruned ") and "converted" not in err, err
    assert "pages_freed" in out


def test_prune_on_a_database_without_a_journal_says_so(
    pg_url: str, cli_on_postgres: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = cli_on_postgres("prune", "--db", with_password(pg_url))
    journal = PostgresJournal(pg_url)
    assert code == 2 and f"no journal at {journal.location}; nothing to prune" in err
    assert "s3cret" not in err
    code, _, err = cli_on_postgres("emit", "x", "--db", with_password(pg_url))
    assert code == 2 and "no journal in the PostgreSQL" in err and "journal migrate" in err


def test_journal_copy_copies_and_reports_rows_per_table(db: Path, pg_url: str) -> None:
    import asyncio

    from procs import cli

    asyncio.run(write_journal(db))
    done = cli("journal", "copy", str(db), with_password(pg_url), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"source", "destination", "rows", "seconds"}
    assert report["source"] == str(db) and report["destination"] == PostgresJournal(pg_url).location
    assert report["rows"]["runs"] == 8 and set(report["rows"]) <= set(COPIED)
    assert "s3cret" not in done.stdout + done.stderr
    again = cli("journal", "copy", str(db), with_password(pg_url))
    assert again.returncode == 2 and "holds a journal already" in again.stderr
    assert "s3cret" not in again.stdout + again.stderr and "Traceback" not in again.stderr
    wrong = cli("journal", "copy", str(db), str(db))
    assert wrong.returncode == 2 and "DST is a postgresql:// URL" in wrong.stderr
    with_db = cli("journal", "copy", str(db), pg_url, "--db", str(db))
    assert with_db.returncode == 2 and "leave --db out" in with_db.stderr


def test_journal_copy_prints_a_line_per_table(db: Path, pg_url: str) -> None:
    import asyncio

    from procs import cli

    asyncio.run(write_journal(db))
    done = cli("journal", "copy", str(db), pg_url)
    assert done.returncode == 0, done.stderr
    head, *tables = done.stdout.splitlines()
    assert head.startswith(f"copied {sum(int(t.split()[1]) for t in tables)} rows from {db} to ")
    assert [t.split()[0] for t in tables] == [
        t for t in COPIED if t in {x.split()[0] for x in tables}
    ]
    assert any(t.split() == ["runs", "8"] for t in tables)


async def test_journal_copy_refuses_a_journal_a_daemon_runs(db: Path, pg_url: str) -> None:
    from procs import acli

    async with Runtime(db, workflows=[ORDERS]):
        refused = await acli("journal", "copy", str(db), pg_url)
    assert refused.returncode == 2, refused.stderr
    assert "stop it first" in refused.stderr and "[JOURNAL_LOCKED]" in refused.stderr
    with psycopg.connect(pg_url) as conn:  # migrated or not, no run copied
        runs = conn.execute("SELECT to_regclass('orchestrator.runs') IS NOT NULL").fetchone()
        if runs == (True,):
            runs = conn.execute("SELECT count(*) > 0 FROM orchestrator.runs").fetchone()
    assert runs == (False,)


def test_every_command_through_the_real_cli_on_a_postgresql_journal(
    pair: tuple[SqliteJournal, PostgresJournal, dict[str, str]],
) -> None:
    from procs import cli

    _, pg, roles = pair
    db = ("--db", with_password(pg.url))
    paused, completed = roles["paused"], roles["completed"]
    for args in (
        ("emit", "paid", '{"order": 1}', "--no-wait"),
        ("invoke", "orders", "new", '{"order": 7}'),
        ("resume", paused, "{}"),
        ("signal", paused, "{}"),
        ("fork", completed),
        ("disable", "orders", "later"),
        ("enable", "orders", "later"),
        ("abort", paused),
        ("runs", "--json"),
        ("show", completed, "--json"),
        ("logs", "--limit", "5"),
        ("workflows", "--json"),
        ("prune", "--dry-run", "--json"),
    ):
        done = cli(*args, *db)
        assert done.returncode == 0, (args, done.stderr)
        assert "s3cret" not in done.stdout + done.stderr, args
        assert "Traceback" not in done.stderr, args


def test_a_daemon_on_a_postgresql_journal_logs_where_it_runs_never_its_password(
    tmp_path: Path, pg_url: str
) -> None:
    import signal

    from procs import cli, reap

    from orchestrator.testing import eventually_blocking

    folder = tmp_path / "flows"
    folder.mkdir()
    log = tmp_path / "daemon.log"
    up = ["up", str(folder), "--headless", "--db", with_password(pg_url)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *up],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        eventually_blocking(lambda: "ready" in log.read_text(), what="the daemon to be ready")
        assert f"journal {PostgresJournal(pg_url).location}" in log.read_text()
        emitted = cli("emit", "x", "--no-wait", "--db", with_password(pg_url))
        assert emitted.returncode == 0 and "no daemon" not in emitted.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        reap(proc)
    assert "s3cret" not in log.read_text()


def test_text_postgresql_cannot_hold_is_refused_in_one_line_and_nothing_is_written(
    pg_url: str,
) -> None:
    """A NUL in a plain text column (an event's or an invoke's key): SQLite keeps it.

    A workflow id holding one is refused before any SQL, as one no workflow could have.
    """
    import asyncio

    asyncio.run(migrate_journal(pg_url))
    commands = PostgresJournal(with_password(pg_url)).commands
    for work in (
        lambda: commands.emit_event("x", {}, key="a\x00b"),
        lambda: commands.queue_invoke("w", "t", {}, key="a\x00b"),
    ):
        with pytest.raises(JournalError, match="NUL") as caught:
            work()
        assert "\n" not in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(ValidationError, match=r"workflow id .* is invalid"):
        commands.queue_invoke("w\x00", "t", {})
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM inbox),"
            " (SELECT count(*) FROM runs), (SELECT count(*) FROM idempotency_keys)"
        ).fetchone()
    assert counts == (0, 0, 0, 0)


def test_daemons_on_one_folder_and_one_postgresql_journal_agree_on_its_identity(
    tmp_path: Path, pg_url: str
) -> None:
    """Two URLs of one database (another user, a password) are one journal to the registry.

    A second daemon there is the journal's to refuse (the daemon record), not the
    registry's; a daemon of the folder on a SQLite journal is refused, no password shown.
    """
    from orchestrator.cli.arguments import UsageError
    from orchestrator.cli.daemons import register

    folder = tmp_path / "flows"
    folder.mkdir()
    one = PostgresJournal(pg_url)
    other = PostgresJournal(with_password(pg_url).replace("postgres:s3cret@", "someone:s3cret@"))
    assert one.identity == other.identity and "s3cret" not in other.identity
    with register(folder, one.identity) as first, register(folder, other.identity) as second:
        assert not first.warning and not second.warning
        with pytest.raises(UsageError) as caught:
            register(folder, SqliteJournal(tmp_path / "j.db").identity)
    assert one.identity in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_conflict_is_retried_a_bounded_number_of_times(pg_url: str) -> None:
    """Another transaction won a race (a serialization failure, a deadlock): try again."""
    import asyncio

    import psycopg.errors

    from orchestrator.journal.postgres.blocking import ATTEMPTS, Tx, transaction

    asyncio.run(migrate_journal(pg_url))
    tries: list[int] = []
    names = itertools.count(1)

    def conflicting(times: int) -> Callable[[Tx], str]:
        lost = psycopg.errors.DeadlockDetected if times % 2 else psycopg.errors.SerializationFailure

        def work(tx: Tx) -> str:
            tries.append(1)
            tx.run("INSERT INTO prune_marks (name, value) VALUES (%s, 1)", (f"try{next(names)}",))
            if len(tries) <= times:
                raise lost("another transaction won")
            return "done"

        return work

    assert transaction(pg_url, conflicting(ATTEMPTS - 1)) == "done"
    assert len(tries) == ATTEMPTS
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        marks = conn.execute("SELECT name FROM prune_marks").fetchall()
    assert marks == [(f"try{ATTEMPTS}",)]  # the failed tries were rolled back
    tries.clear()
    with pytest.raises(JournalError, match=f"after {ATTEMPTS} attempts") as caught:
        transaction(pg_url, conflicting(ATTEMPTS))
    assert len(tries) == ATTEMPTS and "\n" not in str(caught.value)


def test_invokes_after_a_daemon_wrote_runs_take_ids_past_its_runs(pg_url: str) -> None:
    """A daemon writes its runs' ids itself; the runs sequence stays behind them.

    `orchestrator invoke` with the daemon stopped failed on that: "duplicate key value
    violates unique constraint runs_pkey".
    """
    import asyncio

    async def daemon_runs() -> None:
        flow = Workflow(id="w", pipelines={"t": [touch]})
        async with Runtime(pg_url, workflows=[flow]) as rt:
            for _ in range(3):
                assert (await rt.invoke("w", "t", {})).status == "completed"

    asyncio.run(daemon_runs())
    commands = PostgresJournal(pg_url).commands
    start = threading.Barrier(4)
    queued: list[str] = []

    def invoke() -> None:
        start.wait()
        queued.append(commands.queue_invoke("w", "t", {}))

    threads = [threading.Thread(target=invoke) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(pg_url, options="-c search_path=orchestrator") as conn:
        rows = conn.execute("SELECT id, run_id, status FROM runs ORDER BY id").fetchall()
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert sorted(row[1] for row in rows[3:]) == sorted(queued)
    assert {row[2] for row in rows[3:]} == {"queued"}

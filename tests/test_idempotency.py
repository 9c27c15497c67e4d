"""Idempotency keys on `emit` and `invoke`: in process, across restarts and across processes.

A key seen before returns what it made first (an event id, a run's result or id) and starts
nothing new. Counts come from the journal file itself (`procs.query`), so "exactly one"
is what SQLite holds, not what the runtime believes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Daemon, acli, cli, query

from orchestrator import (
    JournalError,
    Runtime,
    Trigger,
    ValidationError,
    Workflow,
    WorkflowNotFound,
)
from orchestrator.testing import eventually

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL

TIMEOUT = 30.0


def count(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "counted": True}


COUNTER = Workflow(
    id="counter",
    triggers={"go": Trigger(event="tick")},
    pipelines={"go": [count]},
)


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return query(db, sql, params)


def events_of(db: Path, event_type: str) -> list[str]:
    return [r[0] for r in rows(db, "SELECT event_id FROM events WHERE type = ?", event_type)]


def run_count(db: Path) -> int:
    return int(rows(db, "SELECT count(*) FROM runs")[0][0])


# -- in process ----------------------------------------------------------------------------


async def test_emit_twice_with_a_key_makes_one_event_and_returns_its_id(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        first = await rt.emit("tick", {"n": 1}, key="order-7")
        again = await rt.emit("tick", {"n": 2}, key="order-7")
        other = await rt.emit("tick", {"n": 3}, key="order-8")
        plain = [await rt.emit("tick", {"n": 4}), await rt.emit("tick", {"n": 4})]
        await rt.idle()
        assert again == first and other != first and plain[0] != plain[1]
        assert len(await rt.list_runs()) == 4  # one per event: the repeat started nothing
    assert sorted(events_of(db, "tick")) == sorted([first, other, *plain])


async def test_concurrent_emits_with_one_key_in_process_make_one_event(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        ids = await asyncio.gather(*(rt.emit("tick", {"n": n}, key="k") for n in range(20)))
        await rt.idle()
        assert len(set(ids)) == 1
    assert events_of(db, "tick") == [ids[0]]


async def test_invoke_twice_with_a_key_makes_one_run_and_returns_its_result(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        first, again = await asyncio.gather(
            rt.invoke("counter", "go", {"n": 1}, key="once"),
            rt.invoke("counter", "go", {"n": 2}, key="once"),
        )
        later = await rt.invoke("counter", "go", {"n": 3}, key="once")
        other = await rt.invoke("counter", "go", {"n": 4}, key="twice")
        assert first == again == later and first.status == "completed"
        assert first.state in ({"n": 1, "counted": True}, {"n": 2, "counted": True})  # a race
        assert other.run_id != first.run_id
    assert run_count(db) == 2


async def test_emit_and_invoke_keys_are_separate_namespaces(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        event_id = await rt.emit("other", {}, key="same")
        result = await rt.invoke("counter", "go", {}, key="same")
        assert result.run_id != event_id and result.status == "completed"


async def test_keys_survive_a_restart(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        event_id = await rt.emit("tick", {"n": 1}, key="e")
        result = await rt.invoke("counter", "go", {"n": 2}, key="i")
        await rt.idle()
    async with Runtime(db, workflows=[COUNTER]) as rt:
        assert await rt.emit("tick", {"n": 3}, key="e") == event_id
        assert await rt.invoke("counter", "go", {"n": 4}, key="i") == result
        await rt.idle()
    assert events_of(db, "tick") == [event_id]
    assert run_count(db) == 2  # the emitted event's run and the invoked one
    assert rows(db, "SELECT kind, key, target FROM idempotency_keys ORDER BY kind") == [
        ("emit", "e", event_id),
        ("invoke", "i", result.run_id),
    ]


@pytest.mark.parametrize("key", ["", "x" * 257, "bad\udcff", 7, "a\x00b"])
async def test_a_bad_key_is_a_validation_error(db: Path, key: Any) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        with pytest.raises(ValidationError, match="idempotency key"):
            await rt.emit("tick", {}, key=key)
        with pytest.raises(ValidationError, match="idempotency key"):
            await rt.invoke("counter", "go", {}, key=key)
        assert await rt.list_runs() == []


# -- the CLI -------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # the CLI makes a SQLite file, not a PostgreSQL schema
def test_cli_emit_with_a_key_twice_prints_the_first_id(db: Path) -> None:
    first = cli("emit", "tick", '{"n": 1}', "--key", "k1", "--db", str(db))
    again = cli("emit", "tick", '{"n": 2}', "--key", "k1", "--db", str(db))
    other = cli("emit", "tick", '{"n": 3}', "--key", "k2", "--db", str(db))
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr
    assert first.stdout == again.stdout and other.stdout != first.stdout
    assert sorted(events_of(db, "tick")) == sorted([first.stdout.strip(), other.stdout.strip()])


async def test_a_key_emitted_by_the_api_is_seen_by_the_cli_and_back(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        event_id = await rt.emit("tick", {}, key="shared")
        out = await acli("emit", "tick", "--key", "shared", "--db", str(db))
        assert out.returncode == 0 and out.stdout.strip() == event_id
        from_cli = await acli("emit", "tick", "--key", "cli-first", "--db", str(db))
        assert await rt.emit("tick", {}, key="cli-first") == from_cli.stdout.strip()
        await rt.idle()
    assert len(events_of(db, "tick")) == 2


async def test_the_api_and_cli_processes_racing_on_one_key_make_one_event(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        emits = [rt.emit("tick", {"api": n}, key="race") for n in range(5)]
        clis = [acli("emit", "tick", "--key", "race", "--db", str(db)) for _ in range(5)]
        results = await asyncio.gather(*emits, *clis)
        await rt.idle()
        printed = [r if isinstance(r, str) else r.stdout.strip() for r in results]
        assert len(set(printed)) == 1, printed
        assert len(await rt.list_runs()) == 1  # routed once, by this runtime
    assert events_of(db, "tick") == printed[:1]
    assert rows(db, "SELECT count(*) FROM events WHERE routed_at IS NULL") == [(0,)]


async def test_a_keyed_invoke_marks_its_command_done_so_a_restart_applies_nothing(
    db: Path,
) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        result = await rt.invoke("counter", "go", {"n": 1}, key="k")
    assert rows(db, "SELECT run_id, outcome FROM inbox") == [(result.run_id, "ok")]
    async with Runtime(db, workflows=[COUNTER]) as rt:
        await rt.idle()
        assert [r.run_id for r in await rt.list_runs()] == [result.run_id]


async def test_an_unknown_workflow_with_a_key_claims_nothing(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        with pytest.raises(WorkflowNotFound, match="nope"):
            await rt.invoke("nope", "go", {}, key="k")
        result = await rt.invoke("counter", "go", {}, key="k")
        assert result.status == "completed"


async def test_a_failed_claim_is_the_callers_error_and_the_runtime_goes_on(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        commands = rt._require_control().keys._commands

        def locked(*args: Any, **kwargs: Any) -> str:
            raise JournalError("journal: still locked")

        monkeypatch.setattr(commands, "emit_event", locked)
        with pytest.raises(JournalError, match="still locked"):
            await rt.emit("tick", {}, key="k")
        monkeypatch.undo()
        event_id = await rt.emit("tick", {}, key="k")  # nothing was claimed
        assert (await rt.invoke("counter", "go", {})).status == "completed"
        await rt.idle()
    assert events_of(db, "tick") == [event_id]


@pytest.mark.parametrize("key", ["", "x" * 257])
def test_cli_refuses_a_bad_key_with_exit_2_and_one_line(db: Path, key: str) -> None:
    for args in (["emit", "tick"], ["invoke", "counter", "go"]):
        out = cli(*args, "--key", key, "--db", str(db))
        assert out.returncode == 2 and out.stdout == ""
        assert "idempotency key" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def write_counter(folder: Path) -> None:
    (folder / "counter.py").write_text(
        textwrap.dedent(
            """\
            from orchestrator import Trigger, Workflow


            def count(state):
                return {**state, "counted": True}


            workflow = Workflow(
                id="counter", triggers={"go": Trigger(event="tick")}, pipelines={"go": [count]}
            )
            """
        )
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "workflows").resolve()
    path.mkdir()
    write_counter(path)
    return path


def start_emit(db: Path, data: str, key: str) -> subprocess.Popen[str]:
    """``orchestrator emit tick DATA --key KEY`` as a process of its own, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "emit", "tick", data, "--key", key, "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ten_processes_emitting_one_key_with_a_daemon_make_one_event(
    folder: Path, db: Path
) -> None:
    with Daemon(folder, db) as daemon:
        daemon.start()
        procs = [start_emit(db, f'{{"n": {n}}}', "race") for n in range(10)]
        outs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
        assert all(proc.returncode == 0 for proc in procs), [err for _, err in outs]
        printed = {out.strip() for out, _ in outs}
        assert len(printed) == 1, printed
        assert events_of(db, "tick") == list(printed)
        daemon.wait_until(lambda: run_count(db) == 1 or None, TIMEOUT, "the event's one run")
        again = cli("emit", "tick", "--key", "race", "--db", str(db))
        assert again.stdout.strip() in printed
        assert daemon.stop() == 0
    assert run_count(db) == 1


def test_cli_invoke_with_a_key_against_a_running_daemon_starts_one_run(
    folder: Path, db: Path
) -> None:
    def invoke(key: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return cli("invoke", "counter", "go", '{"n": 1}', "--key", key, *extra, "--db", str(db))

    with Daemon(folder, db) as daemon:
        daemon.start()
        waited = invoke("job-1", "--wait")
        assert waited.returncode == 0 and "completed" in waited.stderr, waited.stderr
        run_id = waited.stdout.strip()
        queued = invoke("job-1")
        assert queued.returncode == 0 and queued.stdout.strip() == run_id
        again = invoke("job-1", "--wait")
        assert again.stdout.strip() == run_id and "completed" in again.stderr
        other = invoke("job-2", "--wait")
        assert other.returncode == 0 and other.stdout.strip() != run_id
        assert daemon.stop() == 0
    assert run_count(db) == 2
    assert rows(db, "SELECT count(*) FROM inbox WHERE command = 'invoke'") == [(2,)]


async def test_an_invoke_key_the_api_used_starts_nothing_from_the_cli(db: Path) -> None:
    async with Runtime(db, workflows=[COUNTER]) as rt:
        result = await rt.invoke("counter", "go", {"n": 1}, key="api")
        out = await acli("invoke", "counter", "go", "--key", "api", "--db", str(db))
        assert out.returncode == 0 and out.stdout.strip() == result.run_id
        from_cli = await acli("invoke", "counter", "go", '{"n": 2}', "--key", "c", "--db", str(db))
        run_id = from_cli.stdout.strip()
        await eventually(lambda: run_count(db) == 2 or None, what="the CLI's run", timeout=TIMEOUT)
        repeated = await rt.invoke("counter", "go", {"n": 3}, key="c")
        assert repeated.run_id == run_id and repeated.state == {"n": 2, "counted": True}
        await rt.idle()
    assert run_count(db) == 2


ROUNDS = 8


def emit_in_pairs(db: Path, rounds: int) -> dict[str, str]:
    """Per round, two CLI processes started together emit one key; key -> the id both print."""
    ids = {}
    for n in range(rounds):
        key = f"pair-{n}"
        pair = [start_emit(db, f'{{"n": {n}, "by": {p}}}', key) for p in range(2)]
        outs = [proc.communicate(timeout=TIMEOUT) for proc in pair]
        assert [proc.returncode for proc in pair] == [0, 0], [err for _, err in outs]
        printed = {out.strip() for out, _ in outs}
        assert len(printed) == 1, f"{key}: the two processes printed {printed}"
        ids[key] = printed.pop()
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("daemon_first", [True, False], ids=["daemon", "no-daemon"])
@pytest.mark.sqlite_only  # the CLI makes a SQLite file, not a PostgreSQL schema
def test_two_processes_emitting_the_same_keys_at_once_make_one_event_and_run_each(
    folder: Path, db: Path, daemon_first: bool
) -> None:
    with Daemon(folder, db) as daemon:
        if daemon_first:
            daemon.start()
        ids = emit_in_pairs(db, ROUNDS)
        assert sorted(events_of(db, "tick")) == sorted(ids.values())  # one event per key
        if not daemon_first:
            assert run_count(db) == 0  # nothing routes them until a daemon runs
            daemon.start()
        daemon.wait_until(lambda: run_count(db) == ROUNDS or None, TIMEOUT, "a run per key")
        assert daemon.stop() == 0
    assert run_count(db) == ROUNDS
    started = rows(db, "SELECT event_id, count(*) FROM event_routes GROUP BY event_id")
    assert sorted(started) == sorted((event_id, 1) for event_id in ids.values())

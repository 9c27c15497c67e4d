"""`orchestrator invoke` while no daemon runs: a real ``queued`` run that `runs`, `show` and
`abort` know at once, adopted (never made twice) by the daemon that starts later, which
runs it, fails it if its workflow is unknown, or leaves it aborted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, cli, query

from orchestrator import Runtime, Serialized, Workflow
from orchestrator.errors import JournalUnreachable
from orchestrator.journal import open_journal
from orchestrator.testing import eventually

HELLO = """
from orchestrator import Workflow


def greet(state):
    return {**state, "greeted": True}


workflow = Workflow(id="hello", pipelines={"go": [greet]})
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    made = tmp_path / "flows"
    made.mkdir()
    (made / "hello.py").write_text(HELLO)
    return made


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def show(db: Path, run_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(ok("show", run_id, "--json", "--db", str(db)))
    return shown


@pytest.mark.slow
def test_invoke_with_no_daemon_is_a_queued_run_a_later_daemon_adopts(
    db: Path, folder: Path
) -> None:
    run_id = ok("invoke", "hello", "go", '{"n": 1}', "--db", str(db)).strip()
    aborted = ok("invoke", "hello", "go", '{"n": 2}', "--db", str(db)).strip()
    unknown = ok("invoke", "nope", "go", "{}", "--db", str(db)).strip()

    listed = json.loads(ok("runs", "--json", "--db", str(db)))
    assert {r["run_id"]: r["status"] for r in listed} == {
        run_id: "queued",
        aborted: "queued",
        unknown: "queued",
    }
    assert [r["run_id"] for r in listed] == [unknown, aborted, run_id]  # newest first
    shown = show(db, run_id[:8])  # a prefix works too
    assert (shown["run_id"], shown["status"], shown["workflow_id"]) == (run_id, "queued", "hello")
    assert shown["state"] == {"n": 1}
    assert [e["kind"] for e in shown["timeline"]] == ["run.queued"]

    said = ok("abort", aborted[:6], "--db", str(db))
    assert "aborted" in said
    assert show(db, aborted)["status"] == "aborted"

    with Daemon(folder, db).start() as daemon:

        def settled() -> dict[str, str] | None:
            runs = json.loads(ok("runs", "--json", "--db", str(db)))
            statuses = {r["run_id"]: r["status"] for r in runs}
            return (
                statuses
                if statuses[run_id] == "completed" and statuses[unknown] == "failed"
                else None
            )

        statuses = daemon.wait_until(settled, 30, "the queued runs to be applied")
        assert daemon.stop() == 0
    assert statuses == {run_id: "completed", aborted: "aborted", unknown: "failed"}
    done = show(db, run_id)
    assert done["state"] == {"n": 1, "greeted": True}
    kinds = [e["kind"] for e in done["timeline"]]
    assert kinds == ["run.queued", "run.started", "step.started", "step.completed", "run.completed"]
    failed = show(db, unknown)
    assert failed["error_code"] == "NOT_INVOCABLE" and "nope" in failed["error"]
    assert [e["kind"] for e in show(db, aborted)["timeline"]] == ["run.queued", "run.aborted"]
    # One row per run: adopted, never inserted twice; the aborted one never started.
    assert query(db, "SELECT count(*) FROM runs") == [(3,)]
    assert query(
        db,
        "SELECT count(*) FROM checkpoints WHERE run = (SELECT id FROM runs"
        " WHERE run_id = ?) AND position > 0",
        (aborted,),
    ) == [(0,)]
    # The abort written while no daemon ran is a system event the daemon routed.
    events = query(db, "SELECT type, source, routed_at IS NOT NULL FROM events")
    assert events == [("run.aborted", "system", 1)]


@pytest.mark.slow
def test_invoke_wait_and_keys_with_a_queued_run(db: Path, folder: Path) -> None:
    first = ok("invoke", "hello", "go", "{}", "--key", "k1", "--db", str(db)).strip()
    again = ok("invoke", "hello", "go", "{}", "--key", "k1", "--db", str(db)).strip()
    assert again == first
    assert query(db, "SELECT count(*) FROM runs") == [(1,)]
    waited = cli("invoke", "hello", "go", "{}", "--wait", "--db", str(db))
    assert waited.returncode == 1  # no daemon: it says so within seconds
    assert "no daemon is running" in waited.stderr and "is queued" in waited.stderr
    with Daemon(folder, db).start() as daemon:
        third = cli("invoke", "hello", "go", "{}", "--wait", "--db", str(db))
        assert third.returncode == 0, third.stderr
        daemon.wait_until(
            lambda: show(db, first)["status"] == "completed" or None, 30, "the keyed run"
        )
        assert daemon.stop() == 0
    assert query(db, "SELECT count(*) FROM runs") == [(3,)]


async def test_queued_rows_go_through_the_mode_gate_when_adopted(db: Path) -> None:
    release = asyncio.Event()

    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return state

    commands = open_journal(db).commands
    first, second = (commands.queue_invoke("s", "go", {"n": n}) for n in (1, 2))
    flow = Workflow(id="s", pipelines={"go": [hold]}, mode=Serialized())
    async with Runtime(db, workflows=[flow]) as rt:
        statuses = {r.run_id: r.status for r in await rt.list_runs()}
        assert statuses == {first: "running", second: "queued"}  # one slot: the second waits
        release.set()
        await rt.idle()
        kinds = [e.kind for e in await rt.timeline(second)]
        assert kinds[:3] == ["run.queued", "run.queued", "run.started"]
        assert kinds[-1] == "run.completed"
        assert len(await rt.list_runs()) == 2


async def test_a_command_applied_while_the_journal_is_unreachable_is_applied_again(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read failing for a server's restart marked the command done with that error
    ("JOURNAL_UNREACHABLE: ..."): the invoke was acknowledged, its run never started."""

    async def greet(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "greeted": True}

    flow = Workflow(id="hello", pipelines={"go": [greet]})
    async with Runtime(db, workflows=[flow]) as rt:
        reader = rt._reader
        assert reader is not None
        real = reader.run_status
        failures: list[str] = []

        async def restarting(run_id: str) -> Any:
            if not failures:
                failures.append(run_id)
                raise JournalUnreachable("cannot connect: the database system is shutting down")
            return await real(run_id)

        monkeypatch.setattr(reader, "run_status", restarting)
        run_id = open_journal(db).commands.queue_invoke("hello", "go", {"n": 1})

        async def completed() -> bool | None:
            statuses = {run.run_id: run.status for run in await rt.list_runs()}
            return statuses.get(run_id) == "completed" or None

        await eventually(completed, what="the invoked run to complete", timeout=30)
        assert failures == [run_id]
        outcomes = query(db, "SELECT outcome FROM inbox")
        assert outcomes == [("ok",)], outcomes

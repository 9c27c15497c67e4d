"""System events: every way a run ends emits ``run.completed``, ``run.failed`` or
``run.aborted`` (source ``system``), routed like any event, never starting a run of the
workflow that ended; journaled only while something listens to its type."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, cli, query

from orchestrator import (
    Exclusive,
    FakeClock,
    RunResult,
    Runtime,
    SingletonLoop,
    Step,
    Transient,
    Trigger,
    Workflow,
)
from orchestrator.testing import eventually

Seen = list[dict[str, Any]]
KEYS = {"run_id", "workflow_id", "trigger_id", "status", "error", "error_code"}


def watcher(seen: Seen, *types: str, workflow_id: str = "watch") -> Workflow:
    """A workflow whose runs start on system events and note what they carried."""

    def note(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(state)
        return state

    types = types or ("run.completed", "run.failed", "run.aborted")
    return Workflow(
        id=workflow_id,
        triggers={t.replace(".", "_"): Trigger(event=t) for t in types},
        pipelines={t.replace(".", "_"): [note] for t in types},
    )


def about(seen: Seen, run_id: str) -> list[tuple[str, str | None]]:
    return [(s["status"], s["error_code"]) for s in seen if s["run_id"] == run_id]


def system_events(db: Path) -> list[tuple[str, str]]:
    rows = query(db, "SELECT type, source FROM events WHERE source = 'system' ORDER BY id")
    return [(str(t), str(s)) for t, s in rows]


def boom(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("boom")


def held(release: asyncio.Event) -> Any:
    async def hold(state: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return state

    return hold


async def settle(rt: Runtime | None, seen: Seen, count: int) -> None:
    """Until `count` system events were seen (and, given `rt`, it is idle)."""
    await eventually(lambda: len(seen) >= count or None, what=f"{count} system events")
    if rt is not None:
        await rt.idle()


async def test_completion_and_step_failure_emit_with_the_contract_payload(db: Path) -> None:
    seen: Seen = []
    flows = [
        watcher(seen),
        Workflow(id="ok", pipelines={"go": [lambda s: {**s, "n": 1}]}),
        Workflow(id="bad", pipelines={"go": [boom]}),
    ]
    async with Runtime(db, workflows=flows) as rt:
        done = await rt.invoke("ok", "go", {})
        failed = await rt.invoke("bad", "go", {})
        await settle(rt, seen, 2)
        [completed_event] = [s for s in seen if s["run_id"] == done.run_id]
        assert set(completed_event) == KEYS
        assert completed_event == {
            "run_id": done.run_id,
            "workflow_id": "ok",
            "trigger_id": "go",
            "status": "completed",
            "error": None,
            "error_code": None,
        }
        [failed_event] = [s for s in seen if s["run_id"] == failed.run_id]
        assert failed_event["status"] == "failed"
        assert failed_event["error_code"] == "STEP_FAILED"
        assert "boom" in failed_event["error"]
        # The runs of the watcher completed too: their own ends start no run of it.
        watch_runs = await rt.list_runs(workflow="watch")
        assert len(watch_runs) == 2
        timeline = await rt.timeline(watch_runs[0].run_id)
        assert timeline[0].kind == "event.received"
    # The watcher's own ends are not journaled: only the watcher listens, and never to itself.
    assert system_events(db).count(("run.completed", "system")) == 1
    assert ("run.failed", "system") in system_events(db)


async def test_a_workflow_never_triggers_itself_but_chains_across_workflows(db: Path) -> None:
    counts = {"a": 0, "b": 0}

    def failing(name: str) -> Any:
        def step(state: dict[str, Any]) -> dict[str, Any]:
            counts[name] += 1
            if counts[name] > 3:
                return state  # the chain ends once each side failed three times
            raise RuntimeError(f"{name} failed")

        return step

    flows = [
        Workflow(
            id=name,
            triggers={"alert": Trigger(event="run.failed"), "go": Trigger(event=f"go.{name}")},
            pipelines={"alert": [failing(name)], "go": [failing(name)]},
        )
        for name in ("a", "b")
    ]
    async with Runtime(db, workflows=flows) as rt:
        await rt.emit("go.a", {})
        await eventually(lambda: counts == {"a": 4, "b": 3} or None, what="the chain to end")
        await rt.idle()
        # a fails -> b, b fails -> a, ...: each hop is a run of the other workflow.
        assert counts == {"a": 4, "b": 3}
        runs = await rt.list_runs()
        assert [r.status for r in runs].count("failed") == 6
        assert len(runs) == 7


def park(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="never")


async def test_a_pause_timeout_with_on_timeout_fail_emits_run_failed(db: Path) -> None:
    seen: Seen = []
    clock = FakeClock()

    def wait_a_little(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(event="never", timeout=5, on_timeout="fail")

    flows = [watcher(seen), Workflow(id="t", pipelines={"go": [wait_a_little, lambda s: s]})]
    async with Runtime(db, workflows=flows, clock=clock) as rt:
        timed = await rt.invoke("t", "go", {})
        await clock.advance(10)
        await settle(rt, seen, 1)
        assert about(seen, timed.run_id) == [("failed", "PAUSE_TIMEOUT")]


async def test_aborting_a_paused_a_queued_and_a_running_run_emits(db: Path) -> None:
    seen: Seen = []
    release = asyncio.Event()
    flows = [
        watcher(seen, "run.aborted"),
        Workflow(id="parked", pipelines={"go": [park, lambda s: s]}),
        Workflow(id="busy", pipelines={"go": [held(release)]}, mode=Transient(concurrency=1)),
    ]
    async with Runtime(db, workflows=flows) as rt:
        parked = await rt.invoke("parked", "go", {})
        running = asyncio.ensure_future(rt.invoke("busy", "go", {}))
        queued = asyncio.ensure_future(rt.invoke("busy", "go", {}))
        runs = await eventually(lambda: _by_status(rt), what="one busy run running, one queued")
        for run_id in (parked.run_id, runs["queued"], runs["running"]):
            await rt.abort(run_id)
        await asyncio.gather(running, queued)
        await settle(rt, seen, 3)
        for run_id in (parked.run_id, runs["queued"], runs["running"]):
            assert about(seen, run_id) == [("aborted", "ABORTED")]


async def _by_status(rt: Runtime) -> dict[str, str] | None:
    runs = {r.status: r.run_id for r in await rt.list_runs(workflow="busy")}
    return runs if {"queued", "running"} <= set(runs) else None


async def test_a_singleton_loop_replacing_its_active_run_emits_run_aborted(db: Path) -> None:
    seen: Seen = []
    release = asyncio.Event()
    flows = [
        watcher(seen, "run.aborted"),
        Workflow(
            id="single",
            pipelines={"park": [park, lambda s: s], "hold": [held(release)]},
            mode=SingletonLoop(on_busy="replace"),
        ),
    ]
    async with Runtime(db, workflows=flows) as rt:
        paused = await rt.invoke("single", "park", {})
        running = asyncio.ensure_future(rt.invoke("single", "hold", {}))  # replaces `paused`
        await settle(None, seen, 1)
        [holder] = [r for r in await rt.list_runs(workflow="single") if r.status == "running"]
        last = asyncio.ensure_future(rt.invoke("single", "hold", {}))  # replaces the runner
        await settle(None, seen, 2)
        release.set()
        await asyncio.gather(running, last)
        await rt.idle()
        assert about(seen, paused.run_id) == [("aborted", "REPLACED")]
        assert about(seen, holder.run_id) == [("aborted", "REPLACED")]


async def test_a_run_aborted_by_a_cli_command_emits(db: Path) -> None:
    from orchestrator.journal import open_journal

    seen: Seen = []

    flows = [watcher(seen, "run.aborted"), Workflow(id="p", pipelines={"go": [park]})]
    async with Runtime(db, workflows=flows) as rt:
        paused = await rt.invoke("p", "go", {})
        open_journal(db).commands.queue_command("abort", paused.run_id)
        await settle(rt, seen, 1)
        assert about(seen, paused.run_id) == [("aborted", "ABORTED")]


async def left_running(db: Path, flow: Workflow) -> str:
    """A run of `flow` that the runtime stopped in its step: ``running`` in the journal."""
    started = asyncio.Event()

    async def stuck(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()
        return state

    with_stuck = Workflow(id=flow.id, pipelines={"go": [Step(stuck)]})
    async with Runtime(db, workflows=[with_stuck], shutdown_grace=0) as rt:
        task = asyncio.ensure_future(rt.invoke(flow.id, "go", {}))
        await started.wait()
        [run] = await rt.list_runs()
    task.cancel()
    return run.run_id


async def test_a_crash_loop_at_recovery_emits_run_failed(db: Path) -> None:
    seen: Seen = []

    def stuck(state: dict[str, Any]) -> dict[str, Any]:  # the step it was left in, by name
        return state

    flow = Workflow(id="loop", pipelines={"go": [stuck]})
    await left_running(db, flow)
    # As if its process had died in the step once: the next recovery is one too many.
    query(db, "UPDATE recoveries SET count = 0")
    async with Runtime(db, workflows=[watcher(seen), flow], max_recoveries=0) as rt:
        await settle(rt, seen, 1)
        [(status, code)] = [(s["status"], s["error_code"]) for s in seen]
        assert (status, code) == ("failed", "CRASH_LOOP")


async def test_aborting_a_run_whose_workflow_is_not_loaded_emits(db: Path) -> None:
    seen: Seen = []
    run_id = await left_running(db, Workflow(id="gone", pipelines={"go": [lambda s: s]}))
    async with Runtime(db, workflows=[watcher(seen, "run.aborted")]) as rt:  # no "gone"
        await rt.abort(run_id)  # it waits for its workflow: only its row is here
        await settle(rt, seen, 1)
    assert seen[0]["run_id"] == run_id
    assert (seen[0]["workflow_id"], seen[0]["trigger_id"]) == ("gone", "go")


async def test_only_journaled_while_something_listens_and_a_new_listener_hears_at_once(
    db: Path,
) -> None:
    seen: Seen = []
    async with Runtime(db, workflows=[Workflow(id="ok", pipelines={"go": [lambda s: s]})]) as rt:
        await rt.invoke("ok", "go", {})
        await rt.idle()
        assert system_events(db) == []  # nothing listens: no event row at all
        await rt.register(watcher(seen, "run.completed"))
        after: RunResult = await rt.invoke("ok", "go", {})
        await settle(rt, seen, 1)
        assert about(seen, after.run_id) == [("completed", None)]
        await rt.deregister("watch")
        await rt.invoke("ok", "go", {})
        await rt.idle()
    assert system_events(db) == [("run.completed", "system")]


async def test_a_paused_run_waiting_for_a_system_event_resumes(db: Path) -> None:
    def wait_for_other(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(
            event="run.completed", where={"workflow_id": ("==", "other")}, into="ended"
        )

    flows = [
        Workflow(id="waiter", pipelines={"go": [wait_for_other, lambda s: s]}),
        Workflow(id="other", pipelines={"go": [lambda s: s]}, mode=Exclusive()),
    ]
    async with Runtime(db, workflows=flows) as rt:
        waiting = await rt.invoke("waiter", "go", {})
        assert waiting.status == "paused"
        other = await rt.invoke("other", "go", {})
        await rt.idle()
        info = await rt.watch("waiter", waiting.run_id)
        assert info is not None and info.status == "completed"
        assert info.state["ended"]["run_id"] == other.run_id


@pytest.mark.parametrize("status", ["dropped", "rejected"])
async def test_runs_the_mode_refuses_emit_nothing(db: Path, status: str) -> None:
    seen: Seen = []
    release = asyncio.Event()
    mode = Exclusive() if status == "rejected" else SingletonLoop(on_busy="drop")
    flows = [watcher(seen), Workflow(id="w", pipelines={"go": [held(release)]}, mode=mode)]
    async with Runtime(db, workflows=flows) as rt:
        first, second = (asyncio.ensure_future(rt.invoke("w", "go", {})) for _ in "12")
        refused = await second
        assert refused.status == status
        release.set()
        await first
        await settle(rt, seen, 1)
        assert about(seen, refused.run_id) == []
        assert [s["status"] for s in seen] == ["completed"]


# -- a real daemon ---------------------------------------------------------------------------

PING_PONG = """
import asyncio

from orchestrator import Trigger, Workflow


async def hop(state):
    await asyncio.sleep(0.005)
    return {{"hops": state.get("hops", 0) + 1}}


workflow = Workflow(
    id="{me}",
    triggers={{
        "next": Trigger(
            event="run.completed", where={{"workflow_id": ("==", "{other}")}}, source="system"
        ),
        "start": Trigger(event="{me}.start"),
    }},
    pipelines={{"next": [hop], "start": [hop]}},
)
"""


def completed_without_one_event(db: Path) -> list[tuple[Any, ...]]:
    """Completed runs that do not have exactly one system event, and events of unended runs."""
    return query(
        db,
        "SELECT r.run_id, r.status, (SELECT count(*) FROM events e WHERE e.source = 'system'"
        " AND json_extract(e.data, '$.run_id') = r.run_id) AS n FROM runs r"
        " WHERE (r.status = 'completed') != (n = 1)",
    )


@pytest.mark.slow
def test_a_killed_daemon_keeps_each_run_end_and_its_system_event_together(
    tmp_path: Path, db: Path
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "ping.py").write_text(PING_PONG.format(me="ping", other="pong"))
    (folder / "pong.py").write_text(PING_PONG.format(me="pong", other="ping"))

    def runs() -> int:
        return int(query(db, "SELECT count(*) FROM runs")[0][0])

    with Daemon(folder, db).start() as daemon:
        emitted = cli("emit", "ping.start", "{}", "--db", str(db))
        assert emitted.returncode == 0, emitted.stderr
        daemon.wait_until(lambda: runs() >= 60 or None, 60, "60 hops")
        daemon.kill()  # SIGKILL, mid-stream
    assert completed_without_one_event(db) == []
    before = runs()
    with Daemon(folder, db).start() as daemon:  # the chain goes on from where it was
        daemon.wait_until(lambda: runs() >= before + 20 or None, 60, "20 more hops")
        assert daemon.stop() == 0
    assert completed_without_one_event(db) == []
    # Each hop is a run of the other workflow, started by one system event.
    starts = query(db, "SELECT count(*) FROM runs WHERE trigger_id = 'start'")
    assert starts == [(1,)]
    routed = query(db, "SELECT count(*) FROM events WHERE source = 'system' AND routed_at IS NULL")
    assert routed == [(0,)]


async def test_a_cli_queued_run_of_an_unknown_workflow_fails_with_its_event(db: Path) -> None:
    from orchestrator.journal import open_journal

    seen: Seen = []
    queued = open_journal(db).commands.queue_invoke("gone", "go", {"n": 1})  # no runtime
    async with Runtime(db, workflows=[watcher(seen, "run.failed")]) as rt:
        await settle(rt, seen, 1)
        info = await rt.watch("gone", queued)
        assert info is not None and info.status == "failed"
        assert info.error_code == "NOT_INVOCABLE"
        assert "'gone'" in (info.error or "")
        assert about(seen, queued) == [("failed", "NOT_INVOCABLE")]


ALERT_FILE = """
from orchestrator import Trigger, Workflow


def note(state):
    return state


workflow = Workflow(
    id="alert", triggers={"failed": Trigger(event="run.failed")}, pipelines={"failed": [note]}
)
"""
BAD_FILE = """
from orchestrator import Workflow


def boom(state):
    raise RuntimeError("boom")


workflow = Workflow(id="bad", pipelines={"go": [boom]})
"""


async def test_a_workflow_file_added_to_a_running_folder_hears_the_next_end(
    tmp_path: Path, db: Path
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "bad.py").write_text(BAD_FILE)
    async with Runtime(db, workflows_dir=folder) as rt:
        before = await rt.invoke("bad", "go", {})
        (folder / "alert.py").write_text(ALERT_FILE)
        await eventually(lambda: rt.has_workflow("alert") or None, what="alert.py loaded")
        after = await rt.invoke("bad", "go", {})
        await rt.idle()
        alerted = [r.state["run_id"] for r in await rt.list_runs(workflow="alert")]
        assert alerted == [after.run_id]  # at once; the end before it was not journaled
    assert before.status == "failed"
    assert system_events(db) == [("run.failed", "system")]

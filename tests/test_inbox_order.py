"""Events and commands written by other processes are applied in the order they were written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from procs import query

from orchestrator import Runtime, Trigger, Workflow
from orchestrator.journal import open_journal
from orchestrator.journal.sqlite.commands import emit_event, queue_command


def hold(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="release", where={"key": ("==", state["key"])}, into="release")


def done(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "done": True}


HELD = Workflow(id="held", triggers={"go": Trigger(event="go")}, pipelines={"go": [hold, done]})


async def test_a_signal_written_before_the_event_that_resumes_the_run_is_applied_first(
    db: Path,
) -> None:
    async with Runtime(db, workflows=[HELD]) as rt:
        await rt.emit("go", {"key": 1})
        await rt.idle()
        (paused,) = await rt.list_runs(status="paused")
        run_id = paused.run_id

    # Written while no daemon runs, as two CLI calls would: the signal, then the event.
    queue_command(db, "signal", run_id, {"priority": "high"})
    emit_event(db, "release", {"key": 1})

    async with Runtime(db, workflows=[HELD]) as rt:
        await rt.idle()  # the signal and the event are taken from the inbox and applied
        info = await rt.watch("held", run_id)
        assert info is not None and info.status == "completed"
        assert info.state["priority"] == "high"  # the signal was not lost
        assert info.state["release"] == {"key": 1}
    assert query(db, "SELECT command, outcome FROM inbox") == [("signal", "ok")]


async def test_the_inbox_is_read_as_of_one_moment(db: Path) -> None:
    journal = open_journal(db)
    first = journal.commands.emit_event("a", {"n": 1})
    journal.commands.queue_switch("disable", "w")
    second = journal.commands.emit_event("b", {"n": 2})
    reader = await journal.open_reader()
    try:
        events, commands = await reader.inbox(0, 0, 10)
        assert [e.event_id for e in events] == [first, second]
        assert [(c.command, c.workflow_id) for c in commands] == [("disable", "w")]
        assert events[0].created_at < commands[0].created_at < events[1].created_at
        events, commands = await reader.inbox(events[0].id, 0, 1)  # past ids, and a limit
        assert ([e.event_id for e in events], len(commands)) == ([second], 1)
    finally:
        await reader.close()

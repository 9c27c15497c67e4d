"""Events and commands written by other processes are applied in the order they were written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from procs import query

from orchestrator import Runtime, Trigger, Workflow
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

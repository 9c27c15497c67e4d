"""Versions across restarts: a deleted workflow file, and runs that wait for it to return.

Each `Runtime(workflows_dir=...)` below is a restart of the daemon on the same journal,
with the folder changed in between (as a user would while it was stopped).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator import Runtime

APPROVAL = """
from orchestrator import Trigger, Workflow

def ask(state, ctx):
    return ctx.pause(
        event="approval.decided", where={"ticket": ("==", state["ticket"])}, into="decision"
    )

def close(state):
    return {**state, "closed_by": "VERSION"}

approval = Workflow(
    id="approval",
    triggers={"new": Trigger(event="ticket.opened")},
    pipelines={"new": [ask, close]},
)
"""


def write(folder: Path, version: str) -> Path:
    path = folder / "approval.py"
    path.write_text(APPROVAL.replace("VERSION", version))
    return path


async def paused_then_deleted(tmp_path: Path) -> tuple[Path, Path, str]:
    """A run paused on v1 of approval.py, which is then deleted while nothing runs."""
    folder, db = tmp_path / "flows", tmp_path / "journal.db"
    folder.mkdir()
    path = write(folder, "v1")
    async with Runtime(db, workflows_dir=folder) as rt:
        await rt.emit("ticket.opened", {"ticket": 7})
        await rt.idle()
        (paused,) = await rt.list_runs(status="paused")
        run_id = paused.run_id
    path.unlink()
    return folder, db, run_id


async def test_a_paused_run_of_a_deleted_file_waits_after_restart_then_finishes_on_its_return(
    tmp_path: Path,
) -> None:
    folder, db, run_id = await paused_then_deleted(tmp_path)
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == []
        await rt.emit("approval.decided", {"ticket": 7, "ok": True})
        await rt.idle()
        info = await _with_code(rt, run_id, "WORKFLOW_MISSING")
        assert info is not None, "the reason the run waits"
        assert info.status == "running"
        assert "approval" in (info.error or "") and "returns" in (info.error or "")
        assert await rt.list_runs(status="completed") == []

    write(folder, "v2")
    async with Runtime(db, workflows_dir=folder) as rt:
        result = await asyncio.wait_for(rt.wait(run_id), 20)
        assert result.status == "completed"
        assert result.state["closed_by"] == "v2"  # continued on the version that returned
        assert result.state["decision"]["ok"] is True  # the event it waited for was kept


async def test_a_paused_run_whose_file_is_gone_at_restart_waits_for_its_event_as_before(
    tmp_path: Path,
) -> None:
    folder, db, run_id = await paused_then_deleted(tmp_path)
    async with Runtime(db, workflows_dir=folder) as rt:
        info = await rt.watch("approval", run_id)
        assert info is not None and info.status == "paused"  # paused runs simply wait
        assert info.error is None


async def _with_code(rt: Runtime, run_id: str, code: str):  # type: ignore[no-untyped-def]
    info = await rt.watch("approval", run_id)
    return info if info is not None and info.error_code == code else None

"""`FileTrigger`: new files in a folder become `file.created` events, each exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator import FileTrigger, RunInfo, Runtime, Workflow

FLOWS = """
from orchestrator import FileTrigger, Workflow

def seen(state):
    return {**state, "seen": True}

csv = Workflow(id="csv", triggers={"drop": FileTrigger(dir="inbox", glob="*.csv")},
               pipelines={"drop": [seen]})
audit = Workflow(id="audit", triggers={"drop": FileTrigger(dir="inbox", glob="*.csv")},
                 pipelines={"drop": [seen]})
"""


async def runs_once_settled(rt: Runtime, expected: int) -> list[RunInfo]:
    """Poll until `expected` runs completed, then wait a little for any extra run."""
    async with asyncio.timeout(20):
        while len(await rt.list_runs(status="completed")) < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a duplicate event would have started a run by now
    return await rt.list_runs()


async def test_a_file_created_right_after_start_is_one_event_for_every_matching_trigger(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "flows.py").write_text(FLOWS)
    async with Runtime(tmp_path / "journal.db", workflows_dir=folder) as rt:
        inbox = folder / "inbox"
        assert inbox.is_dir()  # created for the trigger
        (inbox / "a.csv").write_text("x\n1\n")  # at once: before the watch may be live
        (inbox / "notes.txt").write_text("not a csv")
        runs = await runs_once_settled(rt, 2)
    assert sorted(run.workflow_id for run in runs) == ["audit", "csv"]
    for run in runs:
        assert run.state["path"] == str(inbox / "a.csv")
        assert run.state["size"] == 4 and run.state["seen"] is True


async def test_a_file_written_under_a_dot_name_then_renamed_is_one_event(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    workflow = Workflow(
        id="csv",
        triggers={"drop": FileTrigger(dir=inbox, glob="*.csv")},
        pipelines={"drop": [lambda state: state]},
    )
    async with Runtime(tmp_path / "journal.db", workflows=[workflow]) as rt:
        await asyncio.sleep(0.3)
        partial = inbox / ".big.csv"
        partial.write_text("a,b\n")
        await asyncio.sleep(0.2)
        with partial.open("a") as file:
            file.write("1,2\n")
        partial.rename(inbox / "big.csv")
        runs = await runs_once_settled(rt, 1)
    assert [run.state["path"] for run in runs] == [str(inbox / "big.csv")]
    assert runs[0].state["size"] == 8


async def test_a_file_created_the_moment_its_trigger_is_registered_is_not_missed(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    workflow = Workflow(
        id="csv",
        triggers={"drop": FileTrigger(dir=inbox, glob="*.csv")},
        pipelines={"drop": [lambda state: state]},
    )
    async with Runtime(tmp_path / "journal.db") as rt:
        await rt.register(workflow)
        (inbox / "early.csv").write_text("1\n")  # no await since: the watch is not live yet
        runs = await runs_once_settled(rt, 1)
    assert [run.state["path"] for run in runs] == [str(inbox / "early.csv")]

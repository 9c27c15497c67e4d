"""`FileTrigger`: new files in a folder become `file.created` events, each exactly once.

Exactly once across restarts and crashes too: a file there at start, or dropped while the
daemon was down or being killed, is one event, and none is repeated.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from procs import Daemon, query

from orchestrator import FileTrigger, RunInfo, Runtime, Workflow

KILLS = 4
FILES_PER_KILL = 10
FC = "file.created"

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


def csv_workflow(inbox: Path) -> Workflow:
    return Workflow(
        id="csv",
        triggers={"drop": FileTrigger(dir=inbox, glob="*.csv")},
        pipelines={"drop": [lambda state: state]},
    )


def paths(runs: list[RunInfo]) -> list[str]:
    return sorted(Path(run.state["path"]).name for run in runs)


async def test_files_there_at_start_or_dropped_while_down_are_each_one_event_across_restarts(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "before.csv").write_text("1\n")
    db = tmp_path / "journal.db"
    async with Runtime(db, workflows=[csv_workflow(inbox)]) as rt:
        assert paths(await runs_once_settled(rt, 1)) == ["before.csv"]
    (inbox / "while-down.csv").write_text("2\n")
    async with Runtime(db, workflows=[csv_workflow(inbox)]) as rt:
        assert paths(await runs_once_settled(rt, 2)) == ["before.csv", "while-down.csv"]
    async with Runtime(db, workflows=[csv_workflow(inbox)]) as rt:
        assert paths(await runs_once_settled(rt, 2)) == ["before.csv", "while-down.csv"]


async def test_a_name_used_again_by_a_new_file_is_a_new_event(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    report = inbox / "report.csv"
    async with Runtime(tmp_path / "journal.db", workflows=[csv_workflow(inbox)]) as rt:
        report.write_text("monday\n")
        await runs_once_settled(rt, 1)
        report.unlink()  # processed and deleted; the file system may reuse its inode
        await asyncio.sleep(0.3)
        report.write_text("tuesday\n")
        await runs_once_settled(rt, 2)
        report.unlink()  # deleted and created again within one burst of changes
        report.write_text("wednesday\n")
        await runs_once_settled(rt, 3)
        temporary = inbox / ".report.csv"
        temporary.write_text("thursday\n")
        temporary.replace(report)  # saved over the old one
        runs = await runs_once_settled(rt, 4)
    assert paths(runs) == ["report.csv"] * 4
    assert sorted(run.state["size"] for run in runs) == [7, 8, 9, 10]


async def test_a_watched_folder_deleted_and_made_again_is_still_watched(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    async with Runtime(tmp_path / "journal.db", workflows=[csv_workflow(inbox)]) as rt:
        await asyncio.sleep(0.3)
        shutil.rmtree(inbox)
        await asyncio.sleep(0.3)
        inbox.mkdir(exist_ok=True)  # the runtime may have made it again already
        (inbox / "after.csv").write_text("1\n")
        assert paths(await runs_once_settled(rt, 1)) == ["after.csv"]


@pytest.mark.slow
def test_every_file_dropped_while_the_daemon_is_killed_again_and_again_is_one_event(
    tmp_path: Path,
) -> None:
    folder, inbox, db = tmp_path / "flows", tmp_path / "flows" / "inbox", tmp_path / "j.db"
    folder.mkdir()
    (folder / "flows.py").write_text(FLOWS)
    dropped: list[str] = []
    with Daemon(folder, db) as daemon:
        daemon.start()
        for kill in range(KILLS):
            for _ in range(FILES_PER_KILL):
                name = f"{len(dropped):03}.csv"
                staged = inbox / f".{name}"
                staged.write_text(name)
                staged.rename(inbox / name)
                dropped.append(name)
                time.sleep(random.uniform(0, 0.05))
            daemon.stop(signal.SIGKILL)
            daemon.start(ready=kill % 2 == 0)  # half the kills hit the start-up
        daemon.wait_until(daemon.is_ready, 60, "the last daemon to be ready")

        def all_runs_done() -> bool:
            rows = query(db, "SELECT count(*) FROM runs WHERE status = 'completed'")
            return rows[0][0] == 2 * len(dropped)

        daemon.wait_until(all_runs_done, 60, "a completed run per file and workflow")
        assert daemon.stop() == 0
    events = query(db, "SELECT json_extract(data, '$.path') FROM events WHERE type = ?", (FC,))
    assert sorted(Path(path).name for (path,) in events) == dropped
    runs = query(db, "SELECT workflow_id, count(*) FROM runs GROUP BY workflow_id")
    assert sorted(runs) == [("audit", len(dropped)), ("csv", len(dropped))]

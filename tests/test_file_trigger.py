"""`FileTrigger`: new files in a folder become `file.created` events, each exactly once.

Exactly once across restarts and crashes too: a file there at start, or dropped while the
daemon was down or being killed, is one event, and none is repeated.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from procs import Daemon, query

from orchestrator import FileTrigger, RunInfo, Runtime, Workflow
from orchestrator.testing import eventually

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


SENTINEL = "zz-sentinel"
_sentinels = itertools.count()


async def runs_once_settled(rt: Runtime, inbox: Path, expected: int) -> list[RunInfo]:
    """The runs once `expected` have completed and nothing more can come of what was written.

    A new file is written last, a sentinel: once its event has started a run, the watcher
    has handled every change before it, and once the runtime is idle, the first scan of
    the folder is over and every run has ended. So a duplicate event would be in the list.
    Runs of sentinels are left out.
    """

    async def completed() -> bool:
        runs = await rt.list_runs(status="completed")
        return len([run for run in runs if not _is_sentinel(run)]) >= expected

    await eventually(completed, what=f"{expected} completed runs", timeout=20)
    sentinel = inbox / f"{SENTINEL}-{next(_sentinels)}.csv"
    sentinel.write_text("last\n")

    async def sentinel_seen() -> bool:
        return any(run.state["path"] == str(sentinel) for run in await rt.list_runs())

    await eventually(sentinel_seen, what=f"a run for {sentinel.name}", timeout=20)
    await rt.idle()
    return [run for run in await rt.list_runs() if not _is_sentinel(run)]


def _is_sentinel(run: RunInfo) -> bool:
    return Path(run.state.get("path", "")).name.startswith(SENTINEL)


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
        runs = await runs_once_settled(rt, inbox, 2)
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
        await rt.idle()  # the watch is live: it has scanned the folder
        partial = inbox / ".big.csv"
        partial.write_text("a,b\n")
        await asyncio.sleep(0.2)  # a slow writer: the watcher sees the partial file first
        with partial.open("a") as file:
            file.write("1,2\n")
        partial.rename(inbox / "big.csv")
        runs = await runs_once_settled(rt, inbox, 1)
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
        runs = await runs_once_settled(rt, inbox, 1)
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
        assert paths(await runs_once_settled(rt, inbox, 1)) == ["before.csv"]
    (inbox / "while-down.csv").write_text("2\n")
    async with Runtime(db, workflows=[csv_workflow(inbox)]) as rt:
        assert paths(await runs_once_settled(rt, inbox, 2)) == ["before.csv", "while-down.csv"]
    async with Runtime(db, workflows=[csv_workflow(inbox)]) as rt:
        assert paths(await runs_once_settled(rt, inbox, 2)) == ["before.csv", "while-down.csv"]


async def test_a_name_used_again_by_a_new_file_is_a_new_event(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    report = inbox / "report.csv"
    db = tmp_path / "journal.db"
    async with Runtime(db, workflows=[csv_workflow(inbox)]) as rt:
        report.write_text("monday\n")
        await runs_once_settled(rt, inbox, 1)
        report.unlink()  # processed and deleted; the file system may reuse its inode
        await eventually(  # the deletion is seen (and journaled) before the next file comes
            lambda: (
                query(db, "SELECT inode FROM files_seen WHERE name = 'report.csv'") == [(None,)]
            ),
            what="the deletion of report.csv to be seen",
        )
        report.write_text("tuesday\n")
        await runs_once_settled(rt, inbox, 2)
        report.unlink()  # deleted and created again within one burst of changes
        report.write_text("wednesday\n")
        await runs_once_settled(rt, inbox, 3)
        temporary = inbox / ".report.csv"
        temporary.write_text("thursday\n")
        temporary.replace(report)  # saved over the old one
        runs = await runs_once_settled(rt, inbox, 4)
    assert paths(runs) == ["report.csv"] * 4
    assert sorted(run.state["size"] for run in runs) == [7, 8, 9, 10]


async def test_a_watched_folder_deleted_and_made_again_is_still_watched(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    async with Runtime(tmp_path / "journal.db", workflows=[csv_workflow(inbox)]) as rt:
        await rt.idle()  # the watch is live: it has scanned the folder
        shutil.rmtree(inbox)
        # The watch sees its folder go and starts again, which makes the folder again.
        await eventually(inbox.is_dir, what="the runtime to watch (and make) the folder again")
        inbox.mkdir(exist_ok=True)  # the runtime may have made it again already
        (inbox / "after.csv").write_text("1\n")
        assert paths(await runs_once_settled(rt, inbox, 1)) == ["after.csv"]


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
                time.sleep(random.uniform(0, 0.05))  # files arrive at random moments
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

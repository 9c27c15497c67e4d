"""Registering and reloading N workflows is work linear in N: counted, never timed.

The work is the number of lines of the engine and the folder layer that run (a line tracer
on this thread, where the event loop runs), while a folder holding one file of N workflows
loads at start, and while an edit of that file reloads. Four times the workflows must cost
about four times the lines, not sixteen. How long it takes is `bench/bench_registration.py`.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import orchestrator
from orchestrator import Runtime
from orchestrator.testing import eventually

PACKAGE = Path(orchestrator.__file__).parent
TRACED = (str(PACKAGE / "engine"), str(PACKAGE / "folder"))
SMALL, BIG = 60, 240  # 4x


def many_workflows(n: int, version: int) -> str:
    """One file of `n` workflows: event triggers, file triggers and schedules among them."""
    head = textwrap.dedent(
        f"""\
        from orchestrator import FileTrigger, Schedule, Trigger, Workflow

        VERSION = {version}

        def step(state):
            return state

        """
    )
    flows = []
    for i in range(n):
        triggers = [
            f'"ev": Trigger(event="e{i % 3}")',
            f'"f": FileTrigger(dir="in", glob="*.{i % 2}")',
        ]
        if i % 5 == 0:
            triggers.append('"cron": Schedule(cron="0 0 1 1 *")')
        pipelines = ", ".join(f'"{t.split(":")[0][1:-1]}": [step]' for t in triggers)
        flows.append(
            f'w{i} = Workflow(id="flow_{i}", triggers={{{", ".join(triggers)}}}, '
            f"pipelines={{{pipelines}}})\n"
        )
    return head + "".join(flows)


@contextmanager
def counting_lines(traced: tuple[str, ...] = TRACED) -> Iterator[list[int]]:
    """Count the lines of the `traced` modules (the engine and the folder layer) run here."""
    count = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            count[0] += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(traced) else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield count
    finally:
        sys.settrace(previous)


async def lines_to_load_and_reload(tmp_path: Path, n: int) -> tuple[int, int]:
    folder = tmp_path / f"flows-{n}"
    folder.mkdir()
    (folder / "many.py").write_text(many_workflows(n, 1))
    runtime = Runtime(tmp_path / f"journal-{n}.db", workflows_dir=folder)
    with counting_lines() as started:
        await runtime.start()
    try:
        assert len(runtime.list_workflows()) == n
        version = runtime.registry("flow_0").version
        with counting_lines() as reloaded:
            (folder / "many.py").write_text(many_workflows(n, 2))

            def new_version() -> bool:
                return all(runtime.registry(f"flow_{i}").version != version for i in (0, n - 1))

            await eventually(new_version, what="the edit to reload", timeout=60)
        await runtime.idle()
    finally:
        await runtime.stop()
    return started[0], reloaded[0]


async def test_loading_and_reloading_many_workflows_is_linear_work(tmp_path: Path) -> None:
    small_start, small_reload = await lines_to_load_and_reload(tmp_path, SMALL)
    big_start, big_reload = await lines_to_load_and_reload(tmp_path, BIG)
    # Linear: about 4x (plus what does not depend on N); quadratic would be about 16x.
    assert big_start < 6 * small_start, (small_start, big_start)
    assert big_reload < 6 * small_reload, (small_reload, big_reload)


async def test_a_folder_stays_watched_while_any_registered_workflow_watches_it(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"

    def watching(workflow_id: str) -> orchestrator.Workflow:
        return orchestrator.Workflow(
            id=workflow_id,
            triggers={"drop": orchestrator.FileTrigger(dir=inbox, glob="*.csv")},
            pipelines={"drop": [lambda state: state]},
        )

    async with Runtime(tmp_path / "journal.db") as rt:
        await rt.register(watching("a"))
        await rt.register(watching("b"))
        await rt.register(watching("a"))  # replaced: its new version keeps the watch
        await rt.deregister("b")
        (inbox / "one.csv").write_text("1")
        await eventually(rt.list_runs, what="a run of one.csv", timeout=20)
        await rt.deregister("a")  # now no one watches it
        await rt.idle()
        (inbox / "two.csv").write_text("2")
        await rt.register(watching("c"))  # watched again: its first scan finds two.csv
        await rt.idle()
        runs = await rt.list_runs()
    assert sorted((run.workflow_id, Path(run.state["path"]).name) for run in runs) == [
        ("a", "one.csv"),
        ("c", "two.csv"),
    ]

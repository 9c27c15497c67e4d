"""The workflow folder in process: loading, load errors, hot reload, versions and pinning.

Each test runs a `Runtime` over a real folder in ``tmp_path``: files are written with plain
file writes, the runtime's own watcher (watchfiles) sees them, and its probe is a real
subprocess. What the runtime registered is read from the runtime (`has_workflow`,
`registry`) and from its journal, as `orchestrator workflows` shows it.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from procs import query

from orchestrator import Runtime, WorkflowNotFound
from orchestrator.folder.loader import FolderConfig, LoadFailed, digest_of, load_file
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.testing import eventually

# Generous: a reload is a probe subprocess, and the machine is shared.
TIMEOUT = 30.0


def workflow_source(workflow_id: str, value: str, *, trigger: str | None = None) -> str:
    """A file with one workflow whose single step sets ``state["value"] = value``."""
    triggers = f'triggers={{"go": Trigger(event="{trigger}")}}, ' if trigger else ""
    return textwrap.dedent(
        f"""\
        from orchestrator import Trigger, Workflow


        def step(state):
            return {{**state, "value": "{value}"}}


        workflow = Workflow(id="{workflow_id}", {triggers}pipelines={{"go": [step]}})
        """
    )


def write(path: Path, text: str) -> bytes:
    """Write a file the way an editor saving it in place does; returns its bytes."""
    data = textwrap.dedent(text).encode()
    path.write_bytes(data)
    return data


async def journal(db: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The journal's registered workflows by id and its load errors by file name."""
    reader = await JournalReader.open(db)
    try:
        workflows = {w.workflow_id: w for w in await reader.workflows()}
        errors = {Path(e.file).name: e for e in await reader.load_errors()}
    finally:
        await reader.close()
    return workflows, errors


async def journal_error(db: Path, name: str, needle: str = "") -> Any:
    """Wait until the journal reports a load error for file `name` containing `needle`."""

    async def check() -> Any:
        error = (await journal(db))[1].get(name)
        return error if error is not None and needle in error.message else None

    return await eventually(
        check, what=f"a load error for {name} mentioning {needle!r}", timeout=TIMEOUT
    )


async def journal_clean(db: Path, name: str) -> None:
    """Wait until the journal has no load error for file `name`."""

    async def check() -> bool:
        return name not in (await journal(db))[1]

    await eventually(check, what=f"no load error for {name}", timeout=TIMEOUT)


async def registered_version(rt: Runtime, workflow_id: str, version: str) -> None:
    """Wait until `workflow_id` is registered at `version`, in the runtime and its journal."""

    async def check() -> bool:
        if not rt.has_workflow(workflow_id) or rt.registry(workflow_id).version != version:
            return False
        record = (await journal(rt.db))[0].get(workflow_id)
        return record is not None and record.version == version

    await eventually(check, what=f"{workflow_id} at version {version}", timeout=TIMEOUT)


async def gone(rt: Runtime, workflow_id: str) -> None:
    """Wait until `workflow_id` is registered neither in the runtime nor in its journal."""

    async def check() -> bool:
        return not rt.has_workflow(workflow_id) and workflow_id not in (await journal(rt.db))[0]

    await eventually(check, what=f"{workflow_id} to be deregistered", timeout=TIMEOUT)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "workflows"
    path.mkdir()
    return path


# -- loading ------------------------------------------------------------------------------


async def test_a_good_file_registers_each_workflow_with_its_file_and_content_hash(
    folder: Path, db: Path
) -> None:
    data = write(
        folder / "pair.py",
        """\
        from orchestrator import Trigger, Workflow


        def double(state):
            return {**state, "n": state["n"] * 2}


        first = Workflow(id="first", pipelines={"go": [double]})
        second = Workflow(id="second", triggers={"t": Trigger(event="tick")},
                          pipelines={"t": [double]})
        """,
    )
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["first", "second"]
        for workflow_id in ("first", "second"):
            registered = rt.registry(workflow_id)
            assert registered.version == digest_of(data)
            assert registered.file == str(folder / "pair.py")
        result = await rt.invoke("first", "go", {"n": 21})
        assert result.status == "completed" and result.state == {"n": 42}
        assert (await rt.watch("first", result.run_id)).version == digest_of(data)  # type: ignore[union-attr]

        await rt.idle()  # both workflows are in the journal
        workflows, errors = await journal(db)
        assert len(workflows) == 2 and not errors
        assert {w.version for w in workflows.values()} == {digest_of(data)}
        assert {w.file for w in workflows.values()} == {str(folder / "pair.py")}
        assert workflows["second"].triggers[0]["event"] == "tick"


async def test_load_file_reports_a_version_per_content(folder: Path) -> None:
    path = folder / "one.py"
    v1 = write(path, workflow_source("one", "v1"))
    v2 = workflow_source("one", "v2").encode()
    first = await load_file(path, v1, FolderConfig())
    second = await load_file(path, v2, FolderConfig())
    again = await load_file(path, v1, FolderConfig())
    assert first.digest == again.digest == digest_of(v1) != second.digest
    assert [(w.id, line) for w, line in first.workflows] == [("one", 8)]
    assert first.module is not second.module


BROKEN = {
    "syntax": (
        """\
        from orchestrator import Workflow

        def step(state)
            return state
        """,
        3,
        "syntax error",
    ),
    "missing-module": (
        """\
        from orchestrator import Workflow
        import no_such_module_for_the_loader_test
        """,
        2,
        "ModuleNotFoundError: No module named 'no_such_module_for_the_loader_test'",
    ),
    "raise-at-import": (
        """\
        from orchestrator import Workflow


        def connect():
            raise RuntimeError("cannot reach the stock service")


        CLIENT = connect()
        """,
        5,
        "RuntimeError: cannot reach the stock service",
    ),
    "sys-exit": (
        """\
        import sys

        from orchestrator import Workflow

        sys.exit(3)
        """,
        5,
        "sys.exit(3)",
    ),
    "bad-trigger": (
        """\
        from orchestrator import Trigger, Workflow


        def step(state):
            return state


        workflow = Workflow(
            id="bad",
            triggers={"go": Trigger(event="")},
            pipelines={"go": [step]},
        )
        """,
        10,  # the bad Trigger itself
        "DefinitionError: Trigger needs an event type",
    ),
    "bad-workflow": (
        """\
        from orchestrator import Trigger, Workflow


        def step(state):
            return state


        workflow = Workflow(
            id="bad",
            triggers={"go": Trigger(event="order")},
            pipelines={"other": [step]},
        )
        """,
        8,  # the Workflow statement
        "DefinitionError: workflow 'bad' trigger 'go' has no pipeline",
    ),
    "no-workflow": (
        """\
        def helper(state):
            return state
        """,
        None,
        "defines no module-level Workflow",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_a_broken_file_is_reported_with_file_line_and_reason(
    folder: Path, db: Path, case: str
) -> None:
    source, line, reason = BROKEN[case]
    write(folder / "good.py", workflow_source("good", "ok"))
    write(folder / "broken.py", source)
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["good"], "the broken file stops nothing else"
        assert (await rt.invoke("good", "go", {})).state == {"value": "ok"}
        error = await journal_error(db, "broken.py")
        assert error.file == str(folder / "broken.py")
        assert reason in error.message
        assert error.line == line
        assert "good.py" not in (await journal(db))[1]


async def test_an_import_that_never_ends_is_cut_off_by_the_probe(folder: Path, db: Path) -> None:
    (folder / "orchestrator.toml").write_text("probe_timeout = 1\n")
    write(folder / "good.py", workflow_source("good", "ok"))
    write(
        folder / "spin.py",
        """\
        from orchestrator import Workflow

        while True:
            pass
        """,
    )
    async with asyncio.timeout(TIMEOUT):
        async with Runtime(db, workflows_dir=folder) as rt:
            assert rt.list_workflows() == ["good"]
            assert (await rt.invoke("good", "go", {})).state == {"value": "ok"}
            error = await journal_error(db, "spin.py")
            assert "did not finish within 1 s" in error.message
            assert "probe_timeout" in error.message


async def test_a_restricted_folder_reports_a_blocked_import_at_its_line(
    folder: Path, db: Path
) -> None:
    (folder / "orchestrator.toml").write_text("[imports]\nrestrict = true\n")
    write(folder / "good.py", workflow_source("good", "ok"))
    write(
        folder / "shell.py",
        """\
        from orchestrator import Workflow
        import subprocess

        workflow = Workflow(id="shell", pipelines={"go": [lambda state: state]})
        """,
    )
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["good"]
        error = await journal_error(db, "shell.py")
        assert error.line == 2 and "subprocess" in error.message


async def test_an_unrestricted_folder_allows_any_import(folder: Path, db: Path) -> None:
    write(
        folder / "shell.py",
        """\
        import subprocess

        from orchestrator import Workflow


        def run(state):
            out = subprocess.run(["echo", "hi"], capture_output=True, text=True, check=True)
            return {"out": out.stdout.strip()}


        workflow = Workflow(id="shell", pipelines={"go": [run]})
        """,
    )
    async with Runtime(db, workflows_dir=folder) as rt:
        assert (await rt.invoke("shell", "go", {})).state == {"out": "hi"}
        assert (await journal(db))[1] == {}


async def test_an_invalid_orchestrator_toml_is_reported_and_a_fixed_one_applies(
    folder: Path, db: Path
) -> None:
    config = folder / "orchestrator.toml"
    config.write_text("[imports]\nrestrict = 'yes please'\n")
    write(
        folder / "shell.py",
        """\
        import subprocess

        from orchestrator import Workflow

        workflow = Workflow(id="shell", pipelines={"go": [lambda state: state]})
        """,
    )
    async with Runtime(db, workflows_dir=folder) as rt:
        error = await journal_error(db, "orchestrator.toml", "imports.restrict")
        assert error.file == str(config)
        assert rt.has_workflow("shell"), "the default settings apply meanwhile"

        config.write_text("[imports]\nrestrict = true\n")
        await journal_clean(db, "orchestrator.toml")
        error = await journal_error(db, "shell.py", "subprocess")
        assert error.line == 1
        assert rt.has_workflow("shell"), "its last good version stays registered"

        config.write_text("[imports\n")
        assert "not valid TOML" in (await journal_error(db, "orchestrator.toml")).message


# -- hot reload ---------------------------------------------------------------------------


async def test_a_broken_edit_keeps_the_last_good_version_and_a_fix_clears_the_error(
    folder: Path, db: Path
) -> None:
    path = folder / "flow.py"
    v1 = write(path, workflow_source("flow", "v1"))
    async with Runtime(db, workflows_dir=folder) as rt:
        await registered_version(rt, "flow", digest_of(v1))

        write(path, workflow_source("flow", "v2").replace("return", "retur n"))
        error = await journal_error(db, "flow.py", "syntax error")
        assert error.line == 5
        assert rt.registry("flow").version == digest_of(v1)
        assert (await rt.invoke("flow", "go", {})).state == {"value": "v1"}
        assert (await journal(db))[0]["flow"].version == digest_of(v1)

        v3 = write(path, workflow_source("flow", "v3"))
        await registered_version(rt, "flow", digest_of(v3))
        await journal_clean(db, "flow.py")
        result = await rt.invoke("flow", "go", {})
        assert result.state == {"value": "v3"}
        assert (await rt.watch("flow", result.run_id)).version == digest_of(v3)  # type: ignore[union-attr]


async def test_deleting_a_file_deregisters_its_workflows(folder: Path, db: Path) -> None:
    write(folder / "keep.py", workflow_source("keep", "k"))
    write(folder / "doomed.py", workflow_source("doomed", "d"))
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["doomed", "keep"]
        (folder / "doomed.py").unlink()
        await gone(rt, "doomed")
        with pytest.raises(WorkflowNotFound):
            await rt.invoke("doomed", "go", {})
        assert rt.list_workflows() == ["keep"]
        workflows, errors = await journal(db)
        assert list(workflows) == ["keep"] and errors == {}


async def test_deleting_a_broken_file_clears_its_error(folder: Path, db: Path) -> None:
    write(folder / "broken.py", "import no_such_module_for_the_loader_test\n")
    async with Runtime(db, workflows_dir=folder):
        await journal_error(db, "broken.py")
        (folder / "broken.py").unlink()
        await journal_clean(db, "broken.py")


async def test_renaming_a_file_moves_its_workflows_to_the_new_name(folder: Path, db: Path) -> None:
    data = write(folder / "old_name.py", workflow_source("moving", "m"))
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.registry("moving").file == str(folder / "old_name.py")
        os.rename(folder / "old_name.py", folder / "new_name.py")

        async def moved() -> bool:
            if not rt.has_workflow("moving"):
                return False
            record = (await journal(db))[0].get("moving")
            return rt.registry("moving").file == str(folder / "new_name.py") and (
                record is not None and record.file == str(folder / "new_name.py")
            )

        await eventually(moved, what="the workflow to move to new_name.py", timeout=TIMEOUT)
        assert rt.registry("moving").version == digest_of(data)
        assert (await rt.invoke("moving", "go", {})).state == {"value": "m"}
        assert (await journal(db))[1] == {}


async def test_files_starting_with_underscore_or_dot_are_ignored(folder: Path, db: Path) -> None:
    failing = 'raise RuntimeError("must not be imported")\n'
    for name in ("_helpers.py", ".scratch.py"):
        write(folder / name, workflow_source(name.strip("_.").replace(".py", ""), "x") + failing)
    write(folder / "notes.txt", "not python")
    write(folder / "real.py", workflow_source("real", "r"))
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["real"]
        write(folder / "_later.py", workflow_source("later", "l") + failing)
        changed = write(folder / "real.py", workflow_source("real", "r2"))
        await registered_version(rt, "real", digest_of(changed))  # the folder was synced since
        assert rt.list_workflows() == ["real"]
        assert (await journal(db))[1] == {}


def write_in_halves(path: Path, first: bytes, rest: bytes) -> None:
    """Write a file in two parts, as a slow writer (a copy, a download) does."""
    with path.open("wb") as file:
        file.write(first)
        file.flush()
        os.fsync(file.fileno())
        time.sleep(0.03)  # within the watcher's debounce, or just past it
        file.write(rest)


async def test_a_file_seen_half_written_ends_up_loaded_without_an_error(
    folder: Path, db: Path
) -> None:
    write(folder / "other.py", workflow_source("other", "o"))
    data = workflow_source("halves", "complete").encode()
    half = len(data) // 2
    async with Runtime(db, workflows_dir=folder) as rt:
        await asyncio.to_thread(write_in_halves, folder / "halves.py", data[:half], data[half:])
        await registered_version(rt, "halves", digest_of(data))
        await journal_clean(db, "halves.py")
        assert (await rt.invoke("halves", "go", {})).state == {"value": "complete"}


async def test_a_workflow_id_in_two_files_stays_with_the_file_loaded_first(
    folder: Path, db: Path
) -> None:
    a = write(folder / "a.py", workflow_source("dup", "from a"))
    b = write(folder / "b.py", workflow_source("dup", "from b"))
    async with Runtime(db, workflows_dir=folder) as rt:
        assert rt.registry("dup").file == str(folder / "a.py")
        assert (await rt.invoke("dup", "go", {})).state == {"value": "from a"}
        error = await journal_error(db, "b.py", "already defined in a.py")
        assert error.line == 8  # the Workflow assignment in b.py
        assert "a.py" not in (await journal(db))[1]

        (folder / "a.py").unlink()
        await registered_version(rt, "dup", digest_of(b))
        assert rt.registry("dup").file == str(folder / "b.py")
        await journal_clean(db, "b.py")
        assert (await rt.invoke("dup", "go", {})).state == {"value": "from b"}

        # Now b.py loaded first: a.py coming back is the one that clashes.
        (folder / "a.py").write_bytes(a)
        error = await journal_error(db, "a.py", "already defined in b.py")
        assert rt.registry("dup").file == str(folder / "b.py")
        assert (await rt.invoke("dup", "go", {})).state == {"value": "from b"}


# -- versions and runs in progress --------------------------------------------------------


def paused_flow(version: str) -> str:
    return textwrap.dedent(
        f"""\
        from orchestrator import Trigger, Workflow


        def start(state):
            return {{**state, "started": "{version}"}}


        def wait(state, ctx):
            return ctx.pause(event="approve", into="approval")


        def finish(state):
            return {{**state, "finished": "{version}"}}


        workflow = Workflow(
            id="pinned",
            triggers={{"order": Trigger(event="order")}},
            pipelines={{"order": [start, wait, finish]}},
        )
        """
    )


async def test_a_run_in_progress_keeps_its_version_across_a_reload(folder: Path, db: Path) -> None:
    path = folder / "pinned.py"
    v1 = write(path, paused_flow("v1"))
    async with Runtime(db, workflows_dir=folder) as rt:
        old = await rt.invoke("pinned", "order", {"n": 1})
        assert old.status == "paused"

        v2 = write(path, paused_flow("v2"))
        await registered_version(rt, "pinned", digest_of(v2))
        await rt.resume(old.run_id, {"approval": "yes"})
        finished = await rt.wait(old.run_id, timeout=TIMEOUT)
        assert finished.status == "completed"
        assert finished.state == {"n": 1, "started": "v1", "approval": "yes", "finished": "v1"}
        assert (await rt.watch("pinned", old.run_id)).version == digest_of(v1)  # type: ignore[union-attr]

        new = await rt.invoke("pinned", "order", {"n": 2})
        await rt.resume(new.run_id, {"approval": "yes"})
        finished = await rt.wait(new.run_id, timeout=TIMEOUT)
        assert finished.state == {"n": 2, "started": "v2", "approval": "yes", "finished": "v2"}
        assert (await rt.watch("pinned", new.run_id)).version == digest_of(v2)  # type: ignore[union-attr]


async def test_a_paused_run_of_a_deleted_file_resumes_and_new_events_start_nothing(
    folder: Path, db: Path
) -> None:
    path = folder / "pinned.py"
    v1 = write(path, paused_flow("v1"))
    async with Runtime(db, workflows_dir=folder) as rt:
        await rt.emit("order", {"n": 1})

        await rt.idle()
        [run] = await rt.list_runs(status="paused")
        path.unlink()
        await gone(rt, "pinned")

        await rt.emit("approve", {"by": "ops"})
        finished = await rt.wait(run.run_id, timeout=TIMEOUT)
        assert finished.status == "completed"
        assert finished.state == {
            "n": 1,
            "started": "v1",
            "approval": {"by": "ops"},
            "finished": "v1",
        }
        assert run.version == digest_of(v1)

        event_id = await rt.emit("order", {"n": 2})

        await rt.idle()
        rows = query(db, "SELECT routed_at FROM events WHERE event_id = ?", (event_id,))
        assert rows and rows[0][0] is not None, "the second order event is routed"
        assert [r.run_id for r in await rt.list_runs()] == [run.run_id]
        assert query(db, "SELECT count(*) FROM event_routes WHERE event_id = ?", (event_id,)) == [
            (0,)
        ]


async def test_load_file_raises_load_failed_with_the_line(folder: Path) -> None:
    path = folder / "boom.py"
    data = write(path, "x = 1\n\n\nraise ValueError('no')\n")
    with pytest.raises(LoadFailed) as caught:
        await load_file(path, data, FolderConfig())
    assert caught.value.line == 4 and caught.value.message == "ValueError: no"


async def test_workflow_files_import_helpers_and_a_changed_helper_reloads_them(
    folder: Path, db: Path
) -> None:
    write(folder / "_shared.py", 'GREETING = "hello"\n')
    write(
        folder / "greeter.py",
        """\
        from _shared import GREETING
        from orchestrator import Workflow


        def greet(state):
            return {**state, "said": GREETING}


        greeter = Workflow(id="greeter", pipelines={"go": [greet]})
        """,
    )
    async with Runtime(db, workflows_dir=folder) as rt:
        assert (await rt.invoke("greeter", "go", {})).state == {"said": "hello"}
        write(folder / "_shared.py", 'GREETING = "bonjour"\n')

        async def greets_anew() -> bool:
            return (await rt.invoke("greeter", "go", {})).state == {"said": "bonjour"}

        await eventually(
            greets_anew, what="the workflow to pick up the changed helper", timeout=TIMEOUT
        )
        assert (await journal(db))[1] == {}

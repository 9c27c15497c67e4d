r"""Any file name the file system allows: the daemon survives it, and says what it refused.

A POSIX name is any bytes but ``/`` and NUL. One that is not UTF-8 (``notes-\xe9.txt``,
written with bytes) cannot be journaled: in the workflow folder it is a load error, in a
`FileTrigger` folder a journaled warning (a load error of its path) and no event, both with
the name escaped. watchfiles ends its watch on such a name; the watch starts again and
nothing else is lost. Every other name, newlines and control characters included, loads or
is an event as usual. Files are real files in a temporary folder; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import textwrap
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, example, given, settings

from orchestrator import FileTrigger, RunInfo, Runtime, Workflow
from orchestrator.engine.file_events import matches
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.testing import eventually

TIMEOUT = 30.0
NOT_UTF8 = [
    b"notes-\xe9",  # Latin-1
    b"\xff\xfe",
    b"\xed\xa0\x80-surrogate",  # UTF-8 of a lone surrogate: not valid UTF-8 either
    b"cut-\xe2\x82",  # a sequence cut short
]
ODD_BUT_VALID = [
    "line\nbreak",
    "tab\tand\x01control\x7f",
    "carriage\rreturn",
    "é" * 100,  # 200 bytes
    "n" * 251,  # with ".txt": 255 bytes, the longest name
]


def make(folder: Path, name: bytes, data: bytes = b"x") -> None:
    """Create a file whose name is these bytes."""
    with open(os.fsencode(folder) + b"/" + name, "wb") as file:
        file.write(data)


def escaped(folder: Path, name: bytes) -> str:
    """The path as load errors show it."""
    return (os.fsencode(folder) + b"/" + name).decode("utf-8", "backslashreplace")


async def load_errors(db: Path) -> dict[str, str]:
    reader = await JournalReader.open(db)
    try:
        return {error.file: error.message for error in await reader.load_errors()}
    finally:
        await reader.close()


async def errors_for(db: Path, files: list[str]) -> dict[str, str]:
    async def check() -> tuple[dict[str, str]] | None:
        errors = await load_errors(db)
        return (errors,) if all(file in errors for file in files) else None

    (errors,) = await eventually(check, what=f"load errors for {files}", timeout=TIMEOUT)
    return errors


def workflow_source(workflow_id: str) -> str:
    return textwrap.dedent(
        f"""\
        from orchestrator import Workflow

        def step(state):
            return state

        workflow = Workflow(id={workflow_id!r}, pipelines={{"go": [step]}})
        """
    )


FILES = """\
from orchestrator import FileTrigger, Trigger, Workflow

def step(state):
    return state

files = Workflow(
    id="files",
    triggers={"drop": FileTrigger(dir="inbox", glob="*.txt"), "ping": Trigger(event="ping")},
    pipelines={"drop": [step], "ping": [step]},
)
"""


async def settled(rt: Runtime, inbox: Path, sentinel: str) -> list[RunInfo]:
    """The runs once a file written last has started its run and the runtime is idle.

    The sentinel follows every other file, so once its run exists the watcher (or the scan
    that follows a failed watch) has handled them all; idle means the scan is over.
    """
    (inbox / sentinel).write_text("last")

    async def seen() -> bool:
        return any(run.state.get("path") == str(inbox / sentinel) for run in await rt.list_runs())

    await eventually(seen, what=f"a run for {sentinel}", timeout=TIMEOUT)
    await rt.idle()
    return [run for run in await rt.list_runs() if run.state.get("path") != str(inbox / sentinel)]


# -- the workflow folder ---------------------------------------------------------------------


async def test_a_workflow_file_whose_name_is_not_utf8_is_a_load_error_and_the_rest_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, db = tmp_path / "flows", tmp_path / "journal.db"
    folder.mkdir()
    (folder / "good.py").write_text(workflow_source("good"))
    make(folder, b"bad-\xe9.py", workflow_source("bad").encode())  # there at start
    with caplog.at_level(logging.WARNING):
        async with Runtime(db, workflows_dir=folder) as rt:
            assert rt.list_workflows() == ["good"]
            make(folder, b"late-\xe9.py", workflow_source("late").encode())  # while watched
            (folder / "after.py").write_text(workflow_source("after"))
            await eventually(lambda: rt.has_workflow("after"), what="after.py", timeout=TIMEOUT)
            errors = await errors_for(
                db, [escaped(folder, b"bad-\xe9.py"), escaped(folder, b"late-\xe9.py")]
            )
            assert "not valid UTF-8" in errors[escaped(folder, b"bad-\xe9.py")]
            assert rt.list_workflows() == ["after", "good"]
            assert (await rt.invoke("after", "go", {})).ok  # the runtime works on
            os.remove(os.fsencode(folder) + b"/bad-\xe9.py")
            (folder / "touch.py").write_text(workflow_source("touch"))

            async def cleared() -> bool:
                return escaped(folder, b"bad-\xe9.py") not in await load_errors(db)

            await eventually(cleared, what="the error of the removed file", timeout=TIMEOUT)
    assert "bad-\\xe9.py" in caplog.text  # logged escaped
    async with Runtime(db, workflows_dir=folder) as rt:  # a restart with such a file is fine
        assert rt.list_workflows() == ["after", "good", "touch"]
        assert escaped(folder, b"late-\xe9.py") in await load_errors(db)


async def test_workflow_files_with_odd_but_valid_names_load(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    names = [name[:250] for name in ODD_BUT_VALID]
    for index, name in enumerate(names):
        make(folder, f"{name}.py".encode(), workflow_source(f"w{index}").encode())
    async with Runtime(tmp_path / "journal.db", workflows_dir=folder) as rt:
        assert rt.list_workflows() == sorted(f"w{index}" for index in range(len(names)))
        assert await load_errors(rt.db) == {}


# -- FileTrigger folders ---------------------------------------------------------------------


async def test_a_file_whose_name_is_not_utf8_starts_no_run_and_is_a_journaled_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, db = tmp_path / "flows", tmp_path / "journal.db"
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    (folder / "files.py").write_text(FILES)
    make(inbox, b"before-\xe9.txt")  # there at start: the first scan finds it
    with caplog.at_level(logging.WARNING):
        async with Runtime(db, workflows_dir=folder) as rt:
            await rt.idle()
            make(inbox, b"notes-\xe9.txt")  # watchfiles fails on it, and watches again
            (inbox / "ok.txt").write_text("fine")
            runs = await settled(rt, inbox, "sentinel-1.txt")
            assert [run.state["path"] for run in runs] == [str(inbox / "ok.txt")]
            errors = await errors_for(
                db, [escaped(inbox, b"before-\xe9.txt"), escaped(inbox, b"notes-\xe9.txt")]
            )
            assert "starts no run" in errors[escaped(inbox, b"notes-\xe9.txt")]
            await rt.emit("ping", {})  # other events still route
            await rt.idle()
            assert len(await rt.list_runs(workflow="files")) == 3
    assert "notes-\\xe9.txt" in caplog.text
    make(inbox, b"while-down-\xe9.txt")
    async with Runtime(db, workflows_dir=folder) as rt:  # a restart scans them: fine
        runs = await settled(rt, inbox, "sentinel-2.txt")
        files = sorted(run.state["path"] for run in runs if "path" in run.state)
        assert files == [str(inbox / "ok.txt"), str(inbox / "sentinel-1.txt")]  # none again
        await errors_for(db, [escaped(inbox, b"while-down-\xe9.txt")])


async def test_the_warning_goes_with_the_file_or_with_the_last_trigger_on_its_folder(
    tmp_path: Path,
) -> None:
    inbox, db = tmp_path / "inbox", tmp_path / "journal.db"
    inbox.mkdir()
    make(inbox, b"one-\xe9.csv")
    make(inbox, b"two-\xe9.csv")
    workflow = Workflow(
        id="csv",
        triggers={"drop": FileTrigger(dir=inbox, glob="*.csv")},
        pipelines={"drop": [lambda state: state]},
    )
    async with Runtime(db, workflows=[workflow]) as rt:
        await errors_for(db, [escaped(inbox, b"one-\xe9.csv"), escaped(inbox, b"two-\xe9.csv")])
        os.remove(os.fsencode(inbox) + b"/one-\xe9.csv")

        async def one_cleared() -> bool:
            return escaped(inbox, b"one-\xe9.csv") not in await load_errors(db)

        await eventually(one_cleared, what="the removed file's warning to go", timeout=TIMEOUT)
        await rt.deregister("csv")
        await rt.idle()
        assert await load_errors(db) == {}


def run_file_trigger(names: list[bytes], before: int) -> None:
    """Create files with these names in a FileTrigger folder (`before` of them at start)."""

    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            inbox = Path(tmp) / "inbox"
            inbox.mkdir()
            workflow = Workflow(
                id="all",
                triggers={"drop": FileTrigger(dir=inbox, glob="*")},
                pipelines={"drop": [lambda state: state]},
            )
            for name in names[:before]:
                make(inbox, name)
            async with Runtime(Path(tmp) / "journal.db", workflows=[workflow]) as rt:
                await rt.idle()
                for name in names[before:]:
                    make(inbox, name)
                runs = await settled(rt, inbox, "~sentinel~")
                texts = [os.fsdecode(name) for name in names]
                valid = [name for name in texts if _is_utf8(name) and matches(name, "*")]
                by_path = sorted(run.state["path"] for run in runs)
                assert by_path == sorted(str(inbox / name) for name in valid)
                refused = [n for n in names if not _is_utf8(os.fsdecode(n))]
                refused = [n for n in refused if matches(os.fsdecode(n), "*")]
                await errors_for(rt.db, [escaped(inbox, name) for name in refused])

    asyncio.run(scenario())


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NAME = st.one_of(
    st.binary(min_size=1, max_size=24),
    st.binary(min_size=200, max_size=255),
    st.sampled_from([name for name in NOT_UTF8] + [n.encode() for n in ODD_BUT_VALID]),
).filter(lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b".."))
NAMES = st.lists(NAME, min_size=1, max_size=6, unique=True).filter(
    lambda names: b"~sentinel~" not in names
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(names=[b"notes-\xe9.txt", b"ok.txt", b"line\nbreak.txt"], before=1)
@example(names=[b"\xed\xa0\x80", b"n" * 255], before=0)
@given(names=NAMES, before=st.integers(min_value=0, max_value=6))
def test_any_name_in_a_file_trigger_folder_is_one_event_or_a_warning(
    names: list[bytes], before: int
) -> None:
    run_file_trigger(names, before)


def run_workflow_folder(names: list[bytes]) -> None:
    """Create workflow files with these names; the valid ones load, the others are errors."""

    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "flows"
            folder.mkdir()
            wanted: dict[str, str] = {}
            refused: list[bytes] = []
            half = len(names) // 2
            for index, name in enumerate(names[:half]):
                make(folder, name, workflow_source(f"w{index}").encode())
            async with Runtime(Path(tmp) / "journal.db", workflows_dir=folder) as rt:
                for index, name in enumerate(names[half:], start=half):
                    make(folder, name, workflow_source(f"w{index}").encode())
                for index, name in enumerate(names):
                    text = os.fsdecode(name)
                    if not text.endswith(".py") or text.startswith(("_", ".")):
                        continue
                    if _is_utf8(text):
                        wanted[f"w{index}"] = text
                    else:
                        refused.append(name)
                (folder / "zz_sentinel.py").write_text(workflow_source("sentinel"))

                def loaded() -> bool:
                    return set(rt.list_workflows()) == {*wanted, "sentinel"}

                await eventually(loaded, what=f"workflows {sorted(wanted)}", timeout=TIMEOUT)
                await errors_for(rt.db, [escaped(folder, name) for name in refused])

    asyncio.run(scenario())


PY_NAME = (
    st.tuples(NAME.filter(lambda name: len(name) <= 250), st.booleans())
    .map(lambda pair: pair[0] + b".py" if pair[1] else pair[0])
    .filter(lambda name: name not in (b"zz_sentinel.py", b"orchestrator.toml"))
)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(names=[b"bad-\xe9.py", b"good.py", b"new\nline.py", b"\xff"])
@given(names=st.lists(PY_NAME, min_size=1, max_size=4, unique=True))
def test_any_name_in_the_workflow_folder_loads_or_is_a_load_error(names: list[bytes]) -> None:
    run_workflow_folder(names)

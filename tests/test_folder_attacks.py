"""Hostile workflow folders: files that would hang, crash or split the daemon.

Each test puts one such file beside a good one and checks that the daemon reports a clear
load error naming the file, loads every other file and stays responsive (and stoppable).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest
from procs import Daemon, cli
from test_loader import (
    TIMEOUT,
    gone,
    journal,
    journal_clean,
    journal_error,
    registered_version,
    workflow_source,
    write,
)

from orchestrator import Runtime
from orchestrator.folder.loader import MAX_FILE_BYTES, PARALLEL_PROBES, digest_of, read_file


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "workflows"
    path.mkdir()
    return path


async def test_a_file_nested_too_deeply_to_parse_is_a_load_error_and_later_files_load(
    folder: Path, db: Path
) -> None:
    write(folder / "a_good.py", workflow_source("a_good", "a"))
    (folder / "deep.py").write_text("x = " + "1 + " * 200_000 + "1\n")
    write(folder / "z_good.py", workflow_source("z_good", "z"))
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["a_good", "z_good"]
        error = await journal_error(db, "deep.py")
        assert "nested too deeply" in error.message
        # Added while the daemon runs: the same error, and a file after it still loads.
        (folder / "deep2.py").write_text("x = " + "-" * 200_000 + "1\n")
        zz_good = write(folder / "zz_good.py", workflow_source("zz_good", "zz"))
        assert "nested too deeply" in (await journal_error(db, "deep2.py")).message
        await registered_version(rt, "zz_good", digest_of(zz_good))
        assert (await rt.invoke("zz_good", "go", {})).state == {"value": "zz"}


def test_run_of_pipeline_source_nested_too_deeply_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "deep.py"
    source.write_text("x = " + "1 + " * 200_000 + "1\n")
    out = cli("run", str(source), "--db", str(tmp_path / "j.db"))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "nested too deeply" in out.stderr


async def test_fifos_in_the_folder_neither_hang_the_daemon_nor_stop_other_files(
    folder: Path, db: Path
) -> None:
    write(folder / "good.py", workflow_source("good", "ok"))
    os.mkfifo(folder / "_helper.py")  # a helper module, read on each sync
    os.mkfifo(folder / "orchestrator.toml")
    os.mkfifo(folder / "pipe.py")  # named as a workflow file: a load error
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["good"]
        error = await journal_error(db, "orchestrator.toml")
        assert "not a regular file" in error.message
        later = write(folder / "later.py", workflow_source("later", "later"))
        await registered_version(rt, "later", digest_of(later))
        assert (await rt.invoke("later", "go", {})).state == {"value": "later"}
        error = await journal_error(db, "pipe.py")
        assert error.message == "cannot read the file: not a regular file"


def test_read_file_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.py")
    with pytest.raises(OSError, match="not a regular file"):
        read_file(tmp_path / "x.py")


async def test_a_file_that_forks_at_import_is_a_load_error_not_a_second_daemon(
    folder: Path, db: Path, tmp_path: Path
) -> None:
    children = tmp_path / "children"
    write(folder / "good.py", workflow_source("good", "ok"))
    write(
        folder / "forks.py",
        f"""\
        import os
        from pathlib import Path

        from orchestrator import Workflow

        if os.fork() == 0:
            Path({str(children)!r}).open("a").write(f"{{os.getpid()}}\\n")


        def step(state):
            return state


        workflow = Workflow(id="forks", pipelines={{"go": [step]}})
        """,
    )
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        error = await journal_error(db, "forks.py")
        assert "forked a process at import" in error.message
        assert rt.list_workflows() == ["good"]
        assert (await rt.invoke("good", "go", {})).state == {"value": "ok"}
    assert not children.exists(), "a forked child ran the rest of the file"


def test_a_thread_a_workflow_file_starts_at_import_does_not_keep_a_stopped_daemon_alive(
    folder: Path, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"  # a registry of live daemons of this test's own
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    write(folder / "good.py", workflow_source("good", "ok"))
    write(
        folder / "spins.py",
        textwrap.dedent(
            """\
            import threading
            import time

            from orchestrator import Workflow


            def forever():
                while True:
                    time.sleep(0.05)


            threading.Thread(target=forever, name="spinner").start()


            def step(state):
                return state


            workflow = Workflow(id="spins", pipelines={"go": [step]})
            """
        ),
    )
    with Daemon(folder, db) as daemon:
        daemon.start()
        assert daemon.stop(timeout=TIMEOUT) == 0, daemon.log()
    assert "stopped cleanly" in daemon.log()
    assert "exiting without waiting for threads" in daemon.log()
    assert "spinner" in daemon.log()
    # Exiting at once, it still left the registry of live daemons, as a clean stop does.
    assert [
        p.name for p in (runtime / "orchestrator").iterdir() if p.name.startswith("daemon-")
    ] == []


@pytest.mark.parametrize("how", ["swapped", "removed then made again"])
async def test_a_folder_swapped_or_made_again_under_the_daemon_is_watched_anew(
    folder: Path, db: Path, tmp_path: Path, how: str
) -> None:
    write(folder / "old.py", workflow_source("old", "old"))
    async with asyncio.timeout(2 * TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["old"]
        if how == "swapped":  # a deploy: the new folder made beside it, renamed over it
            new = tmp_path / "new"
            new.mkdir()
            write(new / "old.py", workflow_source("old", "old"))
            folder.rename(tmp_path / "previous")
            new.rename(folder)
        else:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
            await gone(rt, "old")
            folder.mkdir()
        fresh = write(folder / "fresh.py", workflow_source("fresh", "fresh"))
        await registered_version(rt, "fresh", digest_of(fresh))
        assert (await rt.invoke("fresh", "go", {})).state == {"value": "fresh"}
        edited = write(folder / "fresh.py", workflow_source("fresh", "edited"))
        await registered_version(rt, "fresh", digest_of(edited))


USES_HELPER = textwrap.dedent(
    """\
    from _shared import VALUE

    from orchestrator import Workflow


    def step(state):
        return {**state, "value": VALUE}


    workflow = Workflow(id="uses", pipelines={"go": [step]})
    """
)


def swap_link(link: Path, target: Path) -> None:
    """``ln -sfn TARGET LINK-tmp && mv -T LINK-tmp LINK``: a deploy's atomic switch."""
    tmp = link.with_name(f"{link.name}-tmp")
    tmp.symlink_to(target)
    os.replace(tmp, link)


async def test_a_symlink_swapped_to_another_release_loads_it_as_an_edit_of_each_file(
    db: Path, tmp_path: Path
) -> None:
    """The folder was resolved once at start: a link swapped to a new release went unseen."""
    releases = [tmp_path / f"release{n}" for n in (1, 2, 3)]
    for release in releases:
        release.mkdir()
    write(releases[0] / "flow.py", workflow_source("flow", "v1"))
    write(releases[0] / "old.py", workflow_source("old", "old"))
    for release, value in zip(releases[:2], ("helper 1", "helper 2"), strict=True):
        write(release / "_shared.py", f"VALUE = {value!r}\n")  # each release's own helper
        write(release / "a_uses.py", USES_HELPER)  # the same file in both: loaded anew
    v2 = write(releases[1] / "flow.py", workflow_source("flow", "v2"))
    new = write(releases[1] / "new.py", workflow_source("new", "new"))
    write(releases[1] / "bad.py", "def broken(:\n")
    write(releases[2] / "flow.py", "def broken(:\n")  # a broken release: v2 stays
    write(releases[2] / "new.py", workflow_source("new", "new"))
    current = tmp_path / "current"
    current.symlink_to(releases[0])
    async with asyncio.timeout(3 * TIMEOUT), Runtime(db, workflows_dir=current) as rt:
        assert rt.list_workflows() == ["flow", "old", "uses"]
        assert (await rt.invoke("uses", "go", {})).state == {"value": "helper 1"}
        swap_link(current, releases[1])
        await registered_version(rt, "flow", digest_of(v2))  # after a_uses.py, in one sync
        assert (await rt.invoke("uses", "go", {})).state == {"value": "helper 2"}
        await registered_version(rt, "new", digest_of(new))
        await gone(rt, "old")
        assert (await journal_error(db, "bad.py")).file == str(releases[1] / "bad.py")
        assert (await rt.invoke("flow", "go", {})).state == {"value": "v2"}

        swap_link(current, releases[2])
        error = await journal_error(db, "flow.py")
        assert error.file == str(releases[2] / "flow.py")
        assert error.line == 1
        await journal_clean(db, "bad.py")  # release2's error is withdrawn with release2
        assert rt.registry("flow").version == digest_of(v2)
        assert rt.list_workflows() == ["flow", "new"]  # release3 has no a_uses.py
        assert (await rt.invoke("flow", "go", {})).state == {"value": "v2"}
        # The new release is the folder watched now: an edit there loads.
        v3 = write(releases[2] / "flow.py", workflow_source("flow", "v3"))
        await registered_version(rt, "flow", digest_of(v3))
        await journal_clean(db, "flow.py")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_run_of_a_file_that_is_not_regular_is_refused_not_waited_on(
    tmp_path: Path, kind: str
) -> None:
    source = tmp_path / "pipe.py"
    if kind == "fifo":
        os.mkfifo(source)
    else:
        source.mkdir()
    out = cli("run", str(source), "--db", str(tmp_path / "j.db"))
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"error: cannot read {source}: [Errno 22] not a regular file: '{source}'\n"


async def test_a_file_past_the_size_limit_is_a_load_error_and_the_last_good_version_stays(
    folder: Path, db: Path
) -> None:
    path = folder / "flow.py"
    v1 = write(path, workflow_source("flow", "v1"))
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        await registered_version(rt, "flow", digest_of(v1))
        huge = workflow_source("flow", "v2") + "DATA = [" + "1, " * 4_000_000 + "]\n"
        path.write_text(huge)
        assert len(huge) > MAX_FILE_BYTES
        error = await journal_error(db, "flow.py", "larger than 10 MB")
        assert "read it in a step" in error.message
        assert (await rt.invoke("flow", "go", {})).state == {"value": "v1"}


def test_signal_handlers_a_file_sets_at_import_do_not_make_the_daemon_unstoppable(
    folder: Path, db: Path
) -> None:
    write(folder / "good.py", workflow_source("good", "ok"))
    write(
        folder / "deaf.py",
        textwrap.dedent(
            """\
            import signal

            from orchestrator import Workflow

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)


            def step(state):
                return state


            workflow = Workflow(id="deaf", pipelines={"go": [step]})
            """
        ),
    )
    with Daemon(folder, db) as daemon:
        daemon.start()
        assert "the file set a handler for SIGTERM at import" in daemon.log()
        assert daemon.stop(timeout=TIMEOUT) == 0, daemon.log()
    assert "stopped cleanly" in daemon.log()


async def test_process_settings_a_file_changes_at_import_are_put_back(
    folder: Path, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        folder / "rude.py",
        """\
        import gc
        import logging
        import os
        import sys

        from orchestrator import Workflow

        sys.setrecursionlimit(sys.getrecursionlimit() - 1)
        sys.setswitchinterval(1.0)
        gc.disable()
        logging.disable(logging.CRITICAL)
        os.chdir("/")
        sys.path[:] = ["/nowhere"]


        def step(state):
            return state


        workflow = Workflow(id="rude", pipelines={"go": [step]})
        """,
    )
    before = (
        sys.getrecursionlimit(),
        sys.getswitchinterval(),
        gc.isenabled(),
        logging.root.manager.disable,
        os.getcwd(),
    )
    entries = list(sys.path)
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == ["rude"]
        assert (
            sys.getrecursionlimit(),
            sys.getswitchinterval(),
            gc.isenabled(),
            logging.root.manager.disable,
            os.getcwd(),
        ) == before
        assert all(entry in sys.path for entry in entries)
        later = write(folder / "later.py", workflow_source("later", "later"))
        await registered_version(rt, "later", digest_of(later))
    warned = [r.getMessage() for r in caplog.records if "rude.py" in r.getMessage()]
    assert any("changed the recursion limit" in line for line in warned), warned
    assert any("changed the working directory" in line for line in warned), warned
    assert any("took entries off sys.path" in line for line in warned), warned


async def test_a_workflow_file_that_cannot_be_read_is_a_load_error_and_its_last_version_stays(
    folder: Path, db: Path
) -> None:
    write(folder / "good.py", workflow_source("good", "ok"))
    (folder / "loop.py").symlink_to("loop.py")
    (folder / "dangling.py").symlink_to("nowhere.py")
    v1 = write(folder / "flow.py", workflow_source("flow", "v1"))
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        await registered_version(rt, "flow", digest_of(v1))
        assert "symbolic links" in (await journal_error(db, "loop.py")).message
        dangling = await journal_error(db, "dangling.py")
        assert dangling.message == "cannot read the file: a symbolic link to nothing"
        # Replaced by a FIFO: reported, and its last good version stays.
        (folder / "flow.py").unlink()
        os.mkfifo(folder / "flow.py")
        await journal_error(db, "flow.py", "not a regular file")
        assert (await rt.invoke("flow", "go", {})).state == {"value": "v1"}
        (folder / "flow.py").unlink()
        await gone(rt, "flow")
        assert "flow.py" not in (await journal(db))[1]
        assert rt.list_workflows() == ["good"]


async def test_a_file_reading_stdin_at_import_takes_nothing_from_other_files_probes(
    folder: Path, db: Path
) -> None:
    write(
        folder / "a_reads.py",
        """\
        import sys

        TAKEN = sys.stdin.read()

        from orchestrator import Workflow


        def step(state):
            return {**state, "taken": len(TAKEN)}


        workflow = Workflow(id="reads", pipelines={"go": [step]})
        """,
    )
    # Enough files that the reading one shares its probe batch with others, on any machine.
    ids = [f"flow_{n:02d}" for n in range(2 * PARALLEL_PROBES)]
    for workflow_id in ids:
        write(folder / f"{workflow_id}.py", workflow_source(workflow_id, workflow_id))
    async with asyncio.timeout(TIMEOUT), Runtime(db, workflows_dir=folder) as rt:
        assert rt.list_workflows() == sorted([*ids, "reads"])
        assert (await journal(db))[1] == {}
        assert (await rt.invoke("reads", "go", {})).state == {"taken": 0}

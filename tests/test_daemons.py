"""One journal per folder, and commands that say when no daemon holds their journal.

The registry of live daemons (`orchestrator.cli.daemons`) is checked in process, then with
real daemons (``orchestrator up --headless`` subprocesses, `procs.Daemon`) and real CLI
processes. Every test points ``$XDG_RUNTIME_DIR`` at a folder of its own, so the daemons
other tests run at the same time are not in its registry.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import textwrap
from pathlib import Path

import pytest
from procs import Daemon, cli, fill_disk, small_disk

from orchestrator.cli.arguments import UsageError
from orchestrator.cli.daemons import live_daemons, register, registry_dir

TIMEOUT = 60.0
FLOW = textwrap.dedent(
    """\
    from orchestrator import Trigger, Workflow


    def step(state):
        return {**state, "done": True}


    workflow = Workflow(id="flow", pipelines={"go": [step]}, triggers={"go": Trigger("go")})
    """
)


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of this test's own (the CLI and daemons it starts inherit the variable)."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime / "orchestrator"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "workflows"
    path.mkdir()
    (path / "flow.py").write_text(FLOW)
    return path


def entries(registry: Path) -> list[str]:
    return sorted(path.name for path in registry.iterdir() if path.name.startswith("daemon-"))


# -- the registry, in process ---------------------------------------------------------------


def test_a_folder_taken_on_another_journal_is_refused_and_freed_by_close(
    tmp_path: Path, registry: Path
) -> None:
    assert registry_dir() == registry
    with register(tmp_path, "/j/one.db") as first:
        assert first.warning == ""
        assert stat.S_IMODE(registry.stat().st_mode) == 0o700
        with pytest.raises(UsageError, match=rf"pid {os.getpid()}, since .* on journal /j/one.db"):
            register(tmp_path, "/j/two.db")
        with register(tmp_path, "/j/one.db"):  # the same journal: the journal's business
            assert [d.journal for d in live_daemons()] == ["/j/one.db", "/j/one.db"]
        with register(tmp_path / "elsewhere", "/j/two.db"):  # another folder: fine
            assert len(live_daemons()) == 2
    assert entries(registry) == [] and live_daemons() == []
    register(tmp_path, "/j/two.db").close()


def test_an_entry_nobody_holds_is_stale_whatever_its_pid(tmp_path: Path, registry: Path) -> None:
    """A killed daemon's entry, or one whose pid now belongs to another process, blocks nothing."""
    registry.mkdir(mode=0o700)
    stale = {"pid": os.getpid(), "folder": str(tmp_path), "journal": "/j/old.db", "started_at": 1}
    (registry / "daemon-1-dead.json").write_text(json.dumps(stale))
    (registry / ".new-2-dead.json").write_text("{")  # a daemon killed while registering
    assert live_daemons() == []
    with register(tmp_path, "/j/new.db") as mine:
        assert mine.warning == ""
        assert len(entries(registry)) == 1  # the stale ones were removed
        assert not (registry / ".new-2-dead.json").exists()


def test_a_registry_that_cannot_be_used_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(not_a_folder))
    with register(tmp_path, "/j/one.db") as first:
        assert "cannot be used" in first.warning and "running anyway" in first.warning
    assert live_daemons() == []


def test_a_full_disk_under_the_registry_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_disk(tmp_path / "disk", "64k") as disk:
        (disk / "orchestrator").mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(disk))
        filler = fill_disk(disk)
        try:
            with register(tmp_path, "/j/one.db") as first:
                assert "cannot be used" in first.warning, first.warning
            assert live_daemons() == []
            assert sorted(p.name for p in (disk / "orchestrator").iterdir()) in ([], [".lock"])
        finally:
            filler.unlink()


def test_a_loose_registry_folder_is_made_private(tmp_path: Path, registry: Path) -> None:
    registry.mkdir()
    registry.chmod(0o777)
    with register(tmp_path, "/j/one.db"):
        assert stat.S_IMODE(registry.stat().st_mode) == 0o700


# -- real daemons -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_daemon_on_the_folder_with_another_journal_exits_2(
    folder: Path, tmp_path: Path
) -> None:
    with Daemon(folder, tmp_path / "one.db").start(timeout=TIMEOUT) as first:
        other = cli("up", str(folder), "--db", str(tmp_path / "two.db"), "--headless")
        assert other.returncode == 2, other.stderr
        assert f"a daemon (pid {first.pid}" in other.stderr
        assert str((tmp_path / "one.db").resolve()) in other.stderr and "kill" in other.stderr
        assert not (tmp_path / "two.db").exists()
        same = cli("up", str(folder), "--db", str(tmp_path / "one.db"), "--headless")
        assert same.returncode == 2, same.stderr
        assert f"in use by pid {first.pid} on " in same.stderr
        assert "one process runs a journal at a time" in same.stderr
        assert first.proc is not None and first.proc.poll() is None
        assert first.stop() == 0


@pytest.mark.slow
def test_a_killed_daemon_leaves_the_folder_to_the_next_one(
    folder: Path, tmp_path: Path, registry: Path
) -> None:
    with Daemon(folder, tmp_path / "one.db").start(timeout=TIMEOUT) as first:
        first.kill()  # SIGKILL: its entry stays, unlocked
        assert len(entries(registry)) == 1
        with Daemon(folder, tmp_path / "two.db").start(timeout=TIMEOUT) as second:
            assert [d.pid for d in live_daemons()] == [second.pid]
            assert second.stop(signal.SIGTERM) == 0
    assert entries(registry) == []  # a clean stop leaves the registry


@pytest.mark.slow
def test_a_daemon_runs_when_its_registry_cannot_be_used(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocked))
    with Daemon(folder, tmp_path / "one.db").start(timeout=TIMEOUT) as daemon:
        assert daemon.log().count("registry of live daemons") == 1
        assert daemon.stop() == 0


# -- what writing commands say ------------------------------------------------------------


def note_lines(stderr: str) -> list[str]:
    """The "no daemon" notes on stderr (emit also reports what routing did there)."""
    return [line for line in stderr.splitlines() if line.startswith("note: ")]


def test_a_write_to_a_journal_no_daemon_holds_says_so_in_one_line(db: Path) -> None:
    out = cli("emit", "order.created", "{}", "--db", str(db))
    assert out.returncode == 0 and len(out.stdout.split()) == 1
    (line,) = note_lines(out.stderr)
    assert line == (
        f"note: no daemon is running on {db}; the event waits in the journal until one "
        f"starts: orchestrator up DIR --db {db}"
    )
    for args, waiting in (
        (["invoke", "flow", "go"], "the run"),
        (["disable", "flow"], "the disable"),
    ):
        out = cli(*args, "--db", str(db))
        assert out.returncode == 0, out.stderr
        (line,) = note_lines(out.stderr)
        assert f"; {waiting} waits in the journal" in line


@pytest.mark.slow
def test_a_write_names_the_daemon_that_runs_on_another_journal(
    folder: Path, tmp_path: Path
) -> None:
    theirs, mine = tmp_path / "daemon.db", tmp_path / "mine.db"
    with Daemon(folder, theirs).start(timeout=TIMEOUT) as daemon:
        out = cli("emit", "go", "{}", "--db", str(mine))
        assert out.returncode == 0
        (line,) = note_lines(out.stderr)
        assert line.startswith(f"note: no daemon is running on {mine}, but a daemon ")
        real, held_by = folder.resolve(), theirs.resolve()  # the registry keeps real paths
        assert f"(pid {daemon.pid}) runs {real}/ on {held_by}: pass --db {held_by}" in line
        waited = cli("invoke", "flow", "go", "--wait", "--db", str(mine))
        assert waited.returncode == 1
        assert f"but a daemon (pid {daemon.pid}) runs" in waited.stderr
        held = cli("emit", "go", "{}", "--db", str(theirs))  # the daemon's: nothing to say
        assert held.returncode == 0 and note_lines(held.stderr) == []
        assert held.stderr.startswith("started run ")
        assert daemon.stop() == 0

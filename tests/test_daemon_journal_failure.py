"""`orchestrator up` when its journal fails for good: it says so once and exits non-zero.

A damaged journal, or a lease another daemon took over while this one was frozen, stops
the daemon with exit code 3 and one line naming the journal and the reason; it never
says "stopped cleanly". A frozen daemon, resumed, starts no step of the runs the new
owner took over (a counter the steps append to under a file lock proves it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import ROOT, Daemon, cli, fill_disk, query, small_disk

from orchestrator.testing import eventually_blocking

TIMEOUT = 30.0
EXIT_JOURNAL_FAILED = 3


def _one_step_flow(folder: Path) -> None:
    (folder / "flow.py").write_text(
        textwrap.dedent(
            """\
            from orchestrator import Workflow


            def step(state):
                return state


            workflow = Workflow(id="flow", pipelines={"go": [step]})
            """
        )
    )


def test_a_damaged_wal_stops_the_daemon_at_once_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    _one_step_flow(folder)
    db = tmp_path / "j.db"
    with Daemon(folder, db) as daemon:
        daemon.start()
        with open(f"{db}-wal", "r+b") as wal:
            wal.truncate(50)
        eventually_blocking(
            lambda: daemon.proc is not None and daemon.proc.poll() is not None,
            what="the daemon to exit on its own",
            timeout=TIMEOUT,
            details=daemon.log,
        )
        code = daemon.stop()  # SIGTERM, had it not exited: still not a clean stop
    log = daemon.log()
    assert code == EXIT_JOURNAL_FAILED, log
    assert "stopped cleanly" not in log
    failures = [line for line in log.splitlines() if "the journal failed" in line]
    assert len(failures) == 1, log
    assert str(db) in failures[0] and "not a database" in failures[0]
    assert len(log.splitlines()) < 10, log  # no flood of retries


@pytest.mark.parametrize("how", ["replaced", "deleted", "wal deleted"])
def test_a_journal_replaced_or_deleted_under_the_daemon_stops_it_with_exit_3(
    tmp_path: Path, how: str
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    _one_step_flow(folder)
    db = tmp_path / "j.db"
    with Daemon(folder, db, log=tmp_path / "daemon.log") as daemon:
        daemon.start()
        assert cli("invoke", "flow", "go", "{}", "--wait", "--db", str(db)).returncode == 0
        if how == "replaced":  # a restore from a backup, a copy over it: not a journal here
            stranger = tmp_path / "stranger"
            stranger.write_bytes(b"not a journal")
            stranger.chmod(0o600)
            stranger.replace(db)
        elif how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        else:  # commands would see a journal without its last commits
            for suffix in ("-wal", "-shm"):
                Path(f"{db}{suffix}").unlink()
        eventually_blocking(
            lambda: daemon.proc is not None and daemon.proc.poll() is not None,
            what="the daemon to exit on its own",
            timeout=TIMEOUT,
            details=daemon.log,
        )
        code = daemon.stop()
    log = daemon.log()
    assert code == EXIT_JOURNAL_FAILED, log
    assert "stopped cleanly" not in log
    failures = [line for line in log.splitlines() if "the journal failed" in line]
    assert len(failures) == 1, log
    assert str(db) in failures[0]
    said = {
        "replaced": "the file was replaced by another file",
        "deleted": "the file was deleted",
        "wal deleted": "its file j.db-wal was deleted",
    }
    assert said[how] in failures[0]
    if how == "wal deleted":  # the daemon's last connection wrote its commits back
        assert query(db, "SELECT count(*) FROM runs WHERE status = 'completed'") == [(1,)]


def test_a_step_that_changes_directory_leaves_a_relative_journal_path_working(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "wander.py").write_text(
        textwrap.dedent(
            """\
            import os

            from orchestrator import Workflow


            async def wander(state):
                os.chdir(os.path.dirname(__file__))
                return state


            workflow = Workflow(id="wander", pipelines={"go": [wander]})
            """
        )
    )
    db = tmp_path / "j.db"
    relative = os.path.relpath(db, ROOT)  # the daemon runs in ROOT
    with Daemon(folder, relative, log=tmp_path / "daemon.log") as daemon:
        daemon.start()
        for _ in range(2):
            out = cli("invoke", "wander", "go", "{}", "--wait", "--db", str(db))
            assert out.returncode == 0, out.stderr + daemon.log()
        assert daemon.stop() == 0, daemon.log()
    assert "stopped cleanly" in daemon.log()


# A workflow whose steps append "start PID" and "end PID" to a counter file under a lock.
_COUNTED = """\
import asyncio
import fcntl
import os

from orchestrator import Workflow

COUNTER = {counter!r}


def note(what):
    with open(COUNTER, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(f"{{what}} {{os.getpid()}}\\n")


async def step(state):
    note("start")
    await asyncio.sleep(0.02)
    note("end")
    return state


workflow = Workflow(id="counted", pipelines={{"go": [step] * 2000}})
"""


def _entries(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def _starts_by(counter: Path, pid: int) -> int:
    return _entries(counter).count(f"start {pid}")


def _note(counter: Path, line: str) -> None:
    with open(counter, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(line + "\n")


@contextlib.contextmanager
def _frozen(pid: int, db: Path) -> Iterator[None]:
    """SIGSTOP `pid` at a moment it holds no write lock on `db` (else the lease is stuck)."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        _until_stopped(pid)  # the signal is delivered after `kill` returns
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            break
        except sqlite3.OperationalError:  # frozen inside a commit: let it finish
            os.kill(pid, signal.SIGCONT)
        finally:
            conn.close()
    else:
        raise AssertionError("the daemon always held the write lock")
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _until_stopped(pid: int) -> None:
    """Return once `pid` is stopped (its state in /proc is ``T``)."""
    eventually_blocking(
        lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T" or None,
        what=f"process {pid} to stop",
        timeout=TIMEOUT,
    )


def _lease_stale(db: Path) -> bool:
    conn = sqlite3.connect(db, timeout=30)
    try:
        (heartbeat,) = conn.execute("SELECT heartbeat_at FROM lease").fetchone()
    finally:
        conn.close()
    return time.time() * 1_000_000 - heartbeat > 5_500_000


def test_a_daemon_frozen_past_its_lease_starts_no_step_once_resumed(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    counter = tmp_path / "counter"
    (folder / "counted.py").write_text(_COUNTED.format(counter=str(counter)))
    db = tmp_path / "j.db"
    with Daemon(folder, db) as first, Daemon(folder, db) as second:
        first.start()
        assert cli("invoke", "counted", "go", "--db", str(db)).returncode == 0
        first.wait_until(lambda: _starts_by(counter, first.pid) >= 3, TIMEOUT, "steps to run")
        with _frozen(first.pid, db):
            eventually_blocking(
                lambda: _lease_stale(db), what="the lease to go stale", timeout=TIMEOUT
            )
            second.start()
            second.wait_until(
                lambda: _starts_by(counter, second.pid) >= 3, TIMEOUT, "the second to run steps"
            )
            _note(counter, "resumed")
        eventually_blocking(
            lambda: first.proc is not None and first.proc.poll() is not None,
            what="the first daemon to exit",
            timeout=TIMEOUT,
            details=first.log,
        )
        code = first.stop()
        assert second.proc is not None and second.proc.poll() is None, second.log()
    entries = _entries(counter)
    after = entries[entries.index("resumed") :]
    assert f"start {first.pid}" not in after, entries
    assert code == EXIT_JOURNAL_FAILED, first.log()
    assert "another process took over the lease" in first.log()
    assert "stopped cleanly" not in first.log()


def test_sigterm_while_writes_fail_exits_3_not_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    counter = tmp_path / "counter"
    (folder / "counted.py").write_text(_COUNTED.format(counter=str(counter)))
    with small_disk(tmp_path / "disk", "8m") as disk, Daemon(folder, disk / "j.db") as daemon:
        daemon.log_path = tmp_path / "daemon.log"  # not on the full disk
        daemon.start()
        assert cli("invoke", "counted", "go", "--db", str(disk / "j.db")).returncode == 0
        daemon.wait_until(lambda: _starts_by(counter, daemon.pid) >= 3, TIMEOUT, "steps to run")
        fill_disk(disk)
        daemon.wait_until(
            lambda: "journal writes failing" in daemon.log(), TIMEOUT, "writes to fail"
        )
        code = daemon.stop()
    log = daemon.log()
    assert code == EXIT_JOURNAL_FAILED, log
    assert "stopped cleanly" not in log
    assert len([line for line in log.splitlines() if "the journal failed" in line]) == 1, log

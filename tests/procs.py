"""Helpers for tests that use real processes: workers, the CLI, the journal file, effect logs.

Shared by the crash and CLI tests and by the worker scripts they start (``crash_worker.py``,
``event_worker.py``), which import it as ``procs``: pytest puts this folder on the path of
the tests, and Python puts it on the path of a script run from it. It must not import
pytest, so a worker can use it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from orchestrator.journal.sqlite.deltas import state_of
from orchestrator.testing import eventually_blocking

ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 60.0
T = TypeVar("T")


# -- the journal and the outside world, as the tests see them -------------------------------


def query(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one SQL statement on the journal with plain sqlite3 or psycopg (no orchestrator code).

    A ``postgresql://`` journal runs it in the journal's schema, ``?`` placeholders as
    ``%s``: the tests' statements are written in the SQL both databases share.
    """
    if str(db).startswith("postgresql:"):
        import psycopg

        with psycopg.connect(str(db), options="-c search_path=orchestrator") as pg:
            cursor = pg.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


class Checkpoint(NamedTuple):
    """One committed checkpoint of a run."""

    position: int
    step: str | None
    kind: str
    state: dict[str, Any]


PAD = "p" * 1500  # makes a state large enough to be journaled as patches (`deltas`)


def crash_input(k: int) -> dict[str, Any]:
    """The crash worker's input `k`: every other one with a large field."""
    return {"i": k, "pad": PAD} if k % 2 else {"i": k}


def checkpoint_chains(db: Path) -> dict[str, list[Checkpoint]]:
    """Each run's committed checkpoints, in order, by run id (the input is position 0)."""
    chains: dict[str, list[Checkpoint]] = {}
    rows = query(
        db,
        f"SELECT r.run_id, c.position, c.step, c.kind, {state_of('c')} FROM checkpoints c"
        " JOIN runs r ON r.id = c.run ORDER BY r.id, c.position",
    )
    for run_id, position, step, kind, state in rows:
        chains.setdefault(run_id, []).append(Checkpoint(position, step, kind, json.loads(state)))
    return chains


class EffectLog:
    """A worker's outside world: one line per step execution, appended to ``DB.effects``.

    Each line is one unbuffered ``write``, so it reaches the kernel before the step returns
    and survives a SIGKILL: the log shows how often each step really ran.
    """

    def __init__(self, db: str | Path) -> None:
        self._fd = os.open(f"{db}.effects", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, run_id: str, step: str) -> None:
        """Note that `step` of run `run_id` ran (once more)."""
        os.write(self._fd, f"{run_id} {step}\n".encode())


def effects(db: Path) -> collections.Counter[tuple[str, str]]:
    """How often each (run id, step) ran, from the ``DB.effects`` log."""
    path = Path(f"{db}.effects")
    lines = path.read_text().splitlines() if path.exists() else []
    pairs = (line.split(" ") for line in lines)
    return collections.Counter((run_id, step) for run_id, step in pairs)


# -- worker processes ---------------------------------------------------------------------


def announce_ready(db: str | Path) -> None:
    """Called by a worker once it is set up: appends its pid to ``DB.ready``."""
    with open(f"{db}.ready", "a") as file:
        file.write(f"{os.getpid()}\n")


def reap(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process if it still runs, and always wait for it (no zombie holds a lease)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


class Workers:
    """The worker processes of one test, each ``python SCRIPT DB ARGS...`` from the root.

    Their stderr goes to ``worker.err`` beside the journal. Use as a context manager: every
    worker started is reaped at the end, whatever happens.
    """

    def __init__(self, script: Path, db: Path | str, folder: Path | None = None) -> None:
        self.script, self.db = script, db
        self.log = (folder or Path(db).parent) / "worker.err"  # `folder`: for a URL journal
        self.started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc in self.started:
            reap(proc)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a worker on the journal with these arguments."""
        with self.log.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, str(self.script), str(self.db), *args],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.started.append(proc)
        return proc

    def stderr(self) -> str:
        """The end of what the workers wrote to stderr."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Wait until `proc` has announced it is ready (see `announce_ready`)."""
        path = Path(f"{self.db}.ready")
        self.wait_until(
            proc,
            lambda: path.exists() and str(proc.pid) in path.read_text().split(),
            timeout,
            f"worker {proc.pid} to be ready",
        )

    def wait_until(
        self,
        proc: subprocess.Popen[bytes],
        check: Callable[[], T | None],
        timeout: float,
        what: str,
    ) -> T:
        """`eventually_blocking`, failing at once, with the workers' stderr, if `proc` exits."""
        return eventually_blocking(
            alive(proc, check, what, self.stderr), what=what, timeout=timeout, details=self.stderr
        )

    def restart(self, proc: subprocess.Popen[bytes], *args: str) -> subprocess.Popen[bytes]:
        """SIGKILL `proc` and start a new worker with `args` once it is gone."""
        reap(proc)
        return self.start(*args)


def alive(
    proc: subprocess.Popen[bytes] | None,
    check: Callable[[], T | None],
    what: str,
    log: Callable[[], str] = lambda: "",
) -> Callable[[], T | None]:
    """`check`, failing at once (with `log`) if `proc` has exited: for `eventually_blocking`."""

    def checked() -> T | None:
        result = check()
        if not result and proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"waiting for {what}: the process exited {proc.returncode}\n{log()}"
            )
        return result

    return checked


# -- the CLI ------------------------------------------------------------------------------


def no_error(stderr: str) -> bool:
    """Whether a command's stderr holds no error (`emit` reports what its event did there)."""
    return not any(line.startswith("error") or "Traceback" in line for line in stderr.splitlines())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m orchestrator ARGS...`` and wait for it (killed after a minute)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CLI_TIMEOUT,
    )


def show(db: Path, run_id: str) -> dict[str, Any]:
    """``orchestrator show RUN_ID --json`` (it must succeed)."""
    out = cli("show", run_id, "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    shown: dict[str, Any] = json.loads(out.stdout)
    return shown


async def acli(*args: str) -> subprocess.CompletedProcess[str]:
    """Like `cli`, without blocking the event loop (a runtime in this process keeps going)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


# -- the daemon ---------------------------------------------------------------------------


class Daemon:
    """``orchestrator up DIR --headless`` as a real process; its stderr goes to ``DB.daemon``.

    Use as a context manager: the process is always reaped (SIGKILL if still running).
    """

    def __init__(
        self,
        folder: Path,
        db: Path | str,
        *extra: str,
        launcher: tuple[str, ...] = ("-m", "orchestrator"),
        log: Path | None = None,
    ) -> None:
        """`launcher`: what follows ``python`` before ``up`` (a script wrapping the CLI).

        `log`: where its stderr goes; by default beside the journal file, or in the
        folder's parent for a PostgreSQL journal.
        """
        self.folder, self.db, self.extra, self.launcher = folder, db, extra, launcher
        where = folder.parent / "journal" if str(db).startswith("postgresql:") else db
        self.log_path = log or Path(f"{where}.daemon")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True, timeout: float = 60.0) -> Daemon:
        """Start the daemon; with `ready`, wait until it has recovered and loaded the folder."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *self.launcher,
                    "up",
                    str(self.folder),
                    "--db",
                    str(self.db),
                    "--headless",
                    *self.extra,
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        if ready:
            self.wait_until(self.is_ready, timeout, "the daemon to be ready")
        return self

    def wait_until(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """`eventually_blocking`, failing at once, with this daemon's log, if the daemon exits."""
        return eventually_blocking(
            alive(self.proc, check, what, self.log), what=what, timeout=timeout, details=self.log
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the daemon was not started"
        return self.proc.pid

    def is_ready(self) -> bool:
        """Whether this daemon holds the lease and is ready."""
        if str(self.db).startswith("postgresql:"):
            from orchestrator import JournalError
            from orchestrator.journal import open_journal

            try:
                record = open_journal(self.db).commands.daemon()
            except JournalError:  # no journal yet: the daemon has not migrated it
                return False
            return record is not None and record.pid == self.pid and record.ready
        if not Path(self.db).exists():
            return False
        try:
            rows = query(self.db, "SELECT pid, ready FROM lease WHERE id = 1")
        except sqlite3.OperationalError:
            return False
        return bool(rows) and rows[0] == (self.pid, 1)

    def log(self) -> str:
        """What the daemon wrote to stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` and wait for the exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the daemon and wait for it."""
        if self.proc is not None:
            reap(self.proc)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


# -- a small disk --------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (skips the test where mounting is not allowed)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as file:  # unbuffered: nothing left to flush at close
        while True:
            try:
                file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler


# -- a writer frozen inside its batch ---------------------------------------------------------

# The start of a script whose writer stops its own process (SIGSTOP) at the last point
# before a batch's COMMIT once `FreezeInsideABatch.armed`: frozen inside its transaction,
# holding its row's lock, as a suspended VM would be.
FREEZE_INSIDE_A_BATCH = """
import asyncio, os, signal, sys
from orchestrator.journal.faults import BEFORE_COMMIT, FaultPoints


class FreezeInsideABatch(FaultPoints):
    armed = False

    def hit(self, point: str) -> None:
        if point == BEFORE_COMMIT and self.armed:
            os.kill(os.getpid(), signal.SIGSTOP)
"""


def stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (SIGSTOP): its state in /proc is ``T``."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"


@contextlib.asynccontextmanager
async def frozen_script(
    where: Path, script: str, *args: str
) -> collections.abc.AsyncIterator[asyncio.subprocess.Process]:
    """Run `script` (`FREEZE_INSIDE_A_BATCH` and more) with `args`, until it froze.

    The script prints ``ready`` and then stops itself inside a batch; yields the process
    (continue it with SIGCONT, read what it printed with ``communicate``); it is killed
    if it still runs at the end.
    """
    from orchestrator.testing import eventually

    path = where / "frozen.py"
    path.write_text(script)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        await eventually(lambda: stopped(proc.pid), what="the process to freeze in its batch")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

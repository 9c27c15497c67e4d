"""The dashboard end to end, in real terminals: tmux, a pseudo-terminal, and none at all.

`orchestrator up` shows the dashboard in its own process when it has a terminal, and
`orchestrator tui` attaches another dashboard to the same journal. Here both run as real
processes: inside tmux (the screen is read back with ``capture-pane``; skipped where tmux is
not installed), and under a pseudo-terminal from the standard library (the raw output is
read from the master side, its escape sequences stripped; this always runs). Events come
from the real CLI. Nothing is timed: every wait polls for a condition, with a generous bound.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pilots import until
from procs import ROOT, Daemon, alive, cli, query, reap

from orchestrator.testing import eventually_blocking
from tui.app import DashboardApp
from tui.dialogs import ConfirmDialog

TIMEOUT = 30.0
COLUMNS, LINES = 140, 40
TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed on this machine")

# The keys a read-only dashboard must not offer, and the footer labels that show them.
ACTION_LABELS = ("Abort", "Resume", "Signal", "Emit", "Invoke")
CONFIRM_TEXT = "run(s) are executing"

HOLD_FLOW = """\
    import asyncio

    from orchestrator import Trigger, Workflow


    async def hold(state, ctx):
        # Long enough to be running when the dashboard quits; 0 after the restart.
        await asyncio.sleep(float(ctx.env.get("HOLD_SECONDS") or 0))
        return {**state, "held": True}


    workflow = Workflow(
        id="hold",
        triggers={"go": Trigger(event="hold.start")},
        pipelines={"go": [hold]},
    )
    """

# CSI (with private parameters), OSC (ended by BEL or ST), DCS/SOS/PM/APC strings, and the
# two-byte escapes: what a terminal interprets rather than shows.
ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[PX^_][^\x1b]*\x1b\\"
    r"|\x1b[ -/]*[0-~]"
)


def plain(raw: bytes) -> str:
    """Terminal output as text: escape sequences and control characters removed."""
    text = ANSI.sub("", raw.decode("utf-8", errors="replace"))
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of a small workflow folder: the orders example and a workflow that holds."""
    path = tmp_path / "workflows"
    path.mkdir()
    shutil.copy(ROOT / "examples" / "orders.py", path / "orders.py")
    (path / "hold.py").write_text(textwrap.dedent(HOLD_FLOW))
    return path


def orchestrator(*args: str | Path) -> list[str]:
    """The command line of ``python -m orchestrator ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "orchestrator", *map(str, args)]


def terminal_env(**extra: str) -> dict[str, str]:
    """The environment of a dashboard process: a known terminal, no stray Textual settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")}
    env.pop("ORCHESTRATOR_DB", None)
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES), **extra)
    return env


def emit(db: Path, event_type: str, data: dict[str, Any]) -> str:
    """Journal an event with the real CLI; returns its id."""
    out = cli("emit", event_type, json.dumps(data), "--db", str(db))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def run_of(db: Path, workflow_id: str, status: str | None = None) -> str | None:
    """The id of the workflow's only run (with that status, if given), once it exists."""
    rows = query(db, "SELECT run_id, status FROM runs WHERE workflow_id = ?", (workflow_id,))
    assert len(rows) <= 1, rows
    if rows and status in (None, rows[0][1]):
        return str(rows[0][0])
    return None


def wait_for_run(db: Path, workflow_id: str, status: str, log: Callable[[], str]) -> str:
    """Wait until the workflow's run has `status` in the journal; returns its id."""
    return eventually_blocking(
        lambda: db.exists() and run_of(db, workflow_id, status),
        what=f"a {status} run of {workflow_id}",
        timeout=TIMEOUT,
        details=log,
    )


def lease_pid(db: Path) -> int | None:
    """The pid of the ready daemon holding the journal, if any."""
    try:
        rows = query(db, "SELECT pid FROM lease WHERE ready = 1") if db.exists() else []
    except sqlite3.OperationalError:  # the daemon has not created its schema yet
        return None
    return int(rows[0][0]) if rows else None


def assert_stopped_cleanly(db: Path) -> None:
    """The daemon released the lease and logged a clean stop (to DB.log, as with a dashboard)."""
    assert query(db, "SELECT count(*) FROM lease") == [(0,)]
    log = Path(f"{db}.log").read_text()
    assert "stopped cleanly" in log, log


def footer(screen: str) -> str:
    """The last three non-blank lines of a screen: the dashboard's key bar (1 to 3 lines)."""
    return "\n".join([line for line in screen.splitlines() if line.strip()][-3:])


def row_of(screen: str, run_id: str) -> str:
    """The runs table's line of a run (shown by its short id), or ``""``."""
    return next((line for line in screen.splitlines() if f" {run_id[:8]} " in line), "")


# -- tmux -----------------------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket, no user config) for the sessions of one test."""

    def __init__(self) -> None:
        assert TMUX is not None
        self.argv = [TMUX, "-L", f"orchestrator-e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}"]
        self.argv += ["-f", os.devnull]
        self.socket: Path | None = None

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one tmux command on this server."""
        return subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )

    def start(self, name: str, argv: list[str], exit_file: Path) -> None:
        """Start `argv` in a new detached session; its exit code goes to `exit_file`."""
        # Explicit sizes: an imported `readline` (pytest's) exports COLUMNS=80 and LINES=24
        # at C level, the tmux server inherits them, and Rich would believe them.
        size = [f"COLUMNS={COLUMNS}", f"LINES={LINES}"]
        command = f"{shlex.join(['env', *size, *argv])}; echo $? > {shlex.quote(str(exit_file))}"
        done = self(
            "new-session", "-d", "-s", name, "-x", str(COLUMNS), "-y", str(LINES),
            "-c", str(ROOT), command,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        if self.socket is None:
            self.socket = Path(self("display-message", "-p", "#{socket_path}").stdout.strip())

    def screen(self, name: str) -> str:
        """What the session's pane shows now (``""`` once the session is gone)."""
        done = self("capture-pane", "-p", "-t", name)
        return done.stdout if done.returncode == 0 else ""

    def wait_for(self, name: str, check: Callable[[str], bool], what: str, log: Path) -> str:
        """Wait until `check` accepts the session's screen; returns that screen."""
        return eventually_blocking(
            lambda: (screen := self.screen(name)) and check(screen) and screen,
            what=f"{what} in tmux session {name!r}",
            timeout=TIMEOUT,
            details=lambda: f"screen:\n{self.screen(name)}\nlog:\n{_read(log)}",
        )

    def kill(self) -> None:
        """Kill the server and everything in it; remove its socket (tmux leaves it)."""
        self("kill-server")
        if self.socket is not None and self.socket.name:
            self.socket.unlink(missing_ok=True)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(none)"


def showing_runs(screen: str) -> bool:
    """Whether the screen is the runs screen of a dashboard connected to a daemon."""
    return "workflow" in screen and "status" in screen and "daemon pid" in screen


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.kill()


@needs_tmux
@pytest.mark.slow
def test_up_and_a_read_only_tui_in_tmux(tmux: Tmux, folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    log, up_exit = Path(f"{db}.log"), tmp_path / "up.exit"
    tmux.start("up", orchestrator("up", folder, "--db", db), up_exit)
    tmux.wait_for("up", lambda s: showing_runs(s) and "no runs yet" in s, "the runs screen", log)

    emit(db, "order.created", {"order_id": 7, "total": 12})
    run_id = wait_for_run(db, "orders", "paused", lambda: _read(log))
    screen = tmux.wait_for("up", lambda s: "paused" in row_of(s, run_id), "the paused run", log)
    assert "orders" in row_of(screen, run_id)
    assert all(label in footer(screen) for label in ("Abort", "Signal")), footer(screen)

    tmux.start("ro", orchestrator("tui", "--db", db, "--read-only"), tmp_path / "ro.exit")
    screen = tmux.wait_for("ro", lambda s: "paused" in row_of(s, run_id), "the run", log)
    assert "orders" in row_of(screen, run_id) and "read-only" in screen
    assert not [label for label in ACTION_LABELS if label in footer(screen)], footer(screen)

    emit(db, "payment.received", {"order_id": 7, "amount": 12})
    for name in ("up", "ro"):
        screen = tmux.wait_for(
            name, lambda s: "completed" in row_of(s, run_id), "the completed run", log
        )
        assert "orders" in row_of(screen, run_id)

    tmux("send-keys", "-t", "up", "q")  # no run is executing: no confirmation
    eventually_blocking(
        up_exit.exists, what="`up` to exit", timeout=TIMEOUT, details=lambda: _read(log)
    )
    assert up_exit.read_text().strip() == "0", _read(log)
    assert_stopped_cleanly(db)
    tmux.wait_for("ro", lambda s: "no daemon holds it" in s, "the daemon gone", log)


# -- a pseudo-terminal ----------------------------------------------------------------------


class Terminal:
    """A process on a pseudo-terminal of COLUMNS x LINES; a thread collects its output."""

    def __init__(self, argv: list[str], **env: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=ROOT,
                env=terminal_env(**env),
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the child's copies are the last: reads end when it exits
        self._master = master
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._pump, name="pty-reader", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the last slave descriptor closed
                return
            if not data:
                return
            with self._lock:
                self._output += data

    def mark(self) -> int:
        """A position in the output, to look only at what comes after it."""
        with self._lock:
            return len(self._output)

    def text(self, since: int = 0) -> str:
        """The output after `since`, as plain text."""
        with self._lock:
            raw = bytes(self._output[since:])
        return plain(raw)

    def wait_for(self, *needles: str, since: int = 0, log: Path | None = None) -> None:
        """Wait until every needle appears in the output after `since`."""

        def missing() -> list[str]:
            text = self.text(since)
            return [needle for needle in needles if needle not in text]

        def details() -> str:
            return f"missing {missing()}\nlog:\n{_read(log) if log else ''}"

        what = f"{needles} on the terminal"
        eventually_blocking(
            alive(self.proc, lambda: not missing(), what, details),
            what=what,
            timeout=TIMEOUT,
            details=details,
        )

    def press(self, keys: str) -> None:
        """Type on the terminal."""
        os.write(self._master, keys.encode())

    def wait(self) -> int:
        """Wait for the process to exit; returns its exit code."""
        return self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        """Kill the process if it still runs, reap it, stop reading."""
        reap(self.proc)
        self._reader.join(TIMEOUT)
        os.close(self._master)


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    """Start processes on pseudo-terminals; each is killed and reaped at the end."""
    started: list[Terminal] = []

    def start(argv: list[str], **env: str) -> Terminal:
        started.append(Terminal(argv, **env))
        return started[-1]

    try:
        yield start
    finally:
        for terminal in started:
            terminal.close()


@pytest.mark.slow
def test_up_on_a_pseudo_terminal(
    terminals: Callable[..., Terminal], folder: Path, tmp_path: Path
) -> None:
    db = tmp_path / "journal.db"
    log = Path(f"{db}.log")
    term = terminals(orchestrator("up", folder, "--db", db))
    term.wait_for("no runs yet", "daemon pid", log=log)
    assert "the daemon logs to" in term.text()  # said before the dashboard took the screen

    since = term.mark()
    emit(db, "order.created", {"order_id": 7, "total": 12})
    run_id = wait_for_run(db, "orders", "paused", lambda: _read(log))
    term.wait_for(run_id[:8], "orders", "paused", since=since, log=log)

    since = term.mark()
    emit(db, "hold.start", {})
    emit(db, "payment.received", {"order_id": 7, "amount": 12})
    hold_id = wait_for_run(db, "hold", "completed", lambda: _read(log))
    wait_for_run(db, "orders", "completed", lambda: _read(log))
    term.wait_for(hold_id[:8], "hold", "completed", since=since, log=log)

    term.press("q")  # nothing is executing: it quits at once
    assert term.wait() == 0, term.text()[-4000:]
    assert_stopped_cleanly(db)


@pytest.mark.slow
def test_quitting_while_a_step_runs_asks_first(
    terminals: Callable[..., Terminal], folder: Path, tmp_path: Path
) -> None:
    db = tmp_path / "journal.db"
    log = Path(f"{db}.log")
    term = terminals(orchestrator("up", folder, "--db", db, "--grace", "1"), HOLD_SECONDS="600")
    term.wait_for("no runs yet", "daemon pid", log=log)
    emit(db, "hold.start", {"n": 1})
    run_id = wait_for_run(db, "hold", "running", lambda: _read(log))

    since = term.mark()
    term.press("q")
    term.wait_for(CONFIRM_TEXT, "Stop", since=since, log=log)
    term.press("n")
    # The daemon keeps working: a new run starts and shows up on the dashboard.
    since = term.mark()
    emit(db, "order.created", {"order_id": 8, "total": 5})
    order_id = wait_for_run(db, "orders", "paused", lambda: _read(log))
    term.wait_for(order_id[:8], since=since, log=log)
    assert term.proc.poll() is None and lease_pid(db) == term.proc.pid
    assert run_of(db, "hold", "running") == run_id

    since = term.mark()
    term.press("q")
    term.wait_for(CONFIRM_TEXT, since=since, log=log)
    assert term.proc.poll() is None  # asked again, not gone
    term.press("y")
    assert term.wait() == 0, _read(log)
    assert_stopped_cleanly(db)
    # The step was cancelled after the grace, not finished: the run continues at the next start.
    assert run_of(db, "hold", "running") == run_id

    with Daemon(folder, db) as daemon:  # headless, HOLD_SECONDS unset: the step is quick
        daemon.start()
        wait_for_run(db, "hold", "completed", daemon.log)
        assert daemon.stop() == 0
    state = json.loads(cli("show", run_id, "--json", "--db", str(db)).stdout)["state"]
    assert state == {"n": 1, "held": True}


async def test_the_quit_confirmation_in_process(tmp_path: Path) -> None:
    quits: list[str] = []
    app = DashboardApp(
        tmp_path / "journal.db", active_runs=lambda: 1, on_quit=lambda: quits.append("x")
    )
    async with app.run_test(size=(COLUMNS, LINES)) as pilot:
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the dialog")
        assert CONFIRM_TEXT in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), "no dialog")
        assert app.is_running and quits == []
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the dialog again")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the app to exit")
    assert quits == ["x"]


# -- no terminal ----------------------------------------------------------------------------


def test_tui_without_a_terminal_refuses(tmp_path: Path) -> None:
    out = cli("tui", "--db", str(tmp_path / "journal.db"))
    assert out.returncode == 2
    assert "needs a terminal" in out.stderr and out.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("tty_stdin", [False, True], ids=["no-tty", "tty-stdin-only"])
def test_up_without_a_terminal_runs_headless(folder: Path, tmp_path: Path, tty_stdin: bool) -> None:
    db, out_path = tmp_path / "journal.db", tmp_path / "up.out"
    master, slave = pty.openpty() if tty_stdin else (-1, -1)
    try:
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                orchestrator("up", folder, "--db", db),
                stdin=slave if tty_stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=terminal_env(),
            )
        try:
            eventually_blocking(
                alive(proc, lambda: lease_pid(db) == proc.pid, "the daemon"),
                what="the daemon",
                timeout=TIMEOUT,
            )
            emit(db, "hold.start", {})
            wait_for_run(db, "hold", "completed", lambda: _read(out_path))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=TIMEOUT) == 0, _read(out_path)
        finally:
            reap(proc)
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    output = out_path.read_text()
    assert "stopped cleanly" in output and "\x1b" not in output, output  # logs, no screen
    assert not Path(f"{db}.log").exists()
    assert query(db, "SELECT count(*) FROM lease") == [(0,)]

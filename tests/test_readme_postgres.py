"""The README's "Three daemons on one PostgreSQL, step by step", run as written.

Its bash blocks are typed into one bash process, command by command, as into a terminal
(variables and background jobs carry over from one block to the next), in a folder standing
in for the repository's root, with libpq's ``PGHOST``, ``PGPORT`` and ``PGUSER`` naming the
suite's PostgreSQL server, so ``createdb shop`` and ``postgresql:///shop`` reach it. Every
command exits 0. Where the README says to wait (a daemon ready, a standby taken over, a
frozen daemon fenced), the test waits for it on the journal or the daemons' logs before it
types the next command, and checks what the README says happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from documented import Block, Shell, section
from postgres import Cluster
from procs import ROOT, query

from orchestrator.journal.records import DaemonRecord, StandbyRecord
from orchestrator.testing import eventually_blocking

HEADING = "### Three daemons on one PostgreSQL, step by step"
LISTED = "orchestrator workflows --db postgresql:///shop | grep -E '^(daemon|standby):'"
WALKTHROUGH = section((ROOT / "README.md").read_text(), HEADING)
DATABASE = "shop"
TIMEOUT = 60.0


class Terminal:
    """One bash process fed commands on its stdin; its output goes to ``terminal.log``."""

    def __init__(self, shell: Shell) -> None:
        self.root = shell.root
        self.log = self.root / "terminal.log"
        self.marks = self.root / ".exit-codes"
        self.typed = 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["bash"],
                cwd=self.root,
                env=shell.env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its background jobs (the daemons) share its group
            )

    def type(self, command: str) -> tuple[int, str]:
        """Run `command` (one or more whole lines); its exit code and what it printed."""
        assert self.proc.stdin is not None
        before = self.output()
        self.typed += 1
        mark = self.typed
        self.proc.stdin.write(f'{command}\necho "$? {mark}" >> {self.marks.name}\n'.encode())
        self.proc.stdin.flush()

        def exit_code() -> str | None:  # a string: exit code 0 is a result too
            if self.proc.poll() is not None:
                raise AssertionError(f"bash exited {self.proc.returncode}:\n{self.output()}")
            done = self.marks.read_text().split("\n") if self.marks.exists() else []
            codes = [line.split()[0] for line in done if line.endswith(f" {mark}")]
            return codes[0] if codes else None

        code = eventually_blocking(exit_code, what=f"{command!r} to finish", timeout=TIMEOUT)
        return int(code), self.output()[len(before) :]

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """End bash and whatever it left running (its process group)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)


def commands(block: Block) -> Iterator[str]:
    """The block's commands: its lines, a line joined with the next while bash finds it cut."""
    pending: list[str] = []
    for line in block.text.splitlines():
        pending.append(line)
        text = "\n".join(pending)
        if subprocess.run(["bash", "-n", "-c", text], capture_output=True).returncode == 0:
            yield text
            pending = []
    assert not pending, f"{block}: an unfinished command: {pending}"


def test_the_walkthrough_has_the_steps_it_claims() -> None:
    typed = [command for block in WALKTHROUGH for command in commands(block)]
    assert typed[0].startswith("createdb ") and len(typed) >= 10, typed
    assert any(command.startswith("for i in 1 2 3; do") for command in typed), typed
    assert [c.split()[0] for c in typed if c.startswith("kill -")] == ["kill", "kill", "kill"]


@pytest.fixture
def terminal(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Terminal]:
    shell = Shell(tmp_path / "root")
    shell.env.update(PGHOST="127.0.0.1", PGPORT=str(pg_cluster.port), PGUSER="postgres")
    terminal = Terminal(shell)
    try:
        yield terminal
    finally:
        terminal.close()
        import psycopg

        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def daemons(url: str) -> tuple[DaemonRecord | None, list[StandbyRecord]]:
    """The journal's active daemon and its standbys, as `orchestrator workflows` reads them."""
    from orchestrator.journal import open_journal

    async def read() -> tuple[DaemonRecord | None, list[StandbyRecord]]:
        reader = await open_journal(url).open_reader()
        try:
            return await reader.daemon(), await reader.standbys()
        finally:
            await reader.close()

    return asyncio.run(read())


def orders(url: str) -> list[str]:
    """The statuses of the journal's runs of workflow ``orders``."""
    return [
        status for (status,) in query(url, "SELECT status FROM runs WHERE workflow_id = 'orders'")
    ]


class Walk:
    """What the walk-through says happens, checked around each command typed."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.killed: list[int] = []  # the daemons killed or frozen, in order

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.root.glob("daemon-*.log"))

    def taken_over(self) -> int | None:
        """The pid of the ready daemon, if it is none of those killed or frozen."""
        daemon, _ = daemons(self.url)
        ready = daemon is not None and daemon.ready and daemon.pid not in self.killed
        return daemon.pid if daemon is not None and ready else None

    def settled(self) -> bool:
        """Whether a new daemon is ready, with the standbys left (two, less one a take-over)."""
        _, standbys = daemons(self.url)
        return self.taken_over() is not None and len(standbys) == 2 - len(self.killed)

    def until(self, check: Callable[[], object], what: str) -> None:
        eventually_blocking(check, what=what, timeout=TIMEOUT, details=self.logs)

    def before(self, command: str) -> None:
        if LISTED in command:  # typed once the README's "a second later" has passed
            self.until(self.settled, "the daemons to settle")
        if command.startswith(("kill -9", "kill -STOP")):
            pid = eventually_blocking(self.taken_over, what="the active daemon", timeout=TIMEOUT)
            self.killed.append(pid)

    def after(self, command: str, printed: str) -> None:
        if command.startswith("for i in 1 2 3"):  # one ready, two standbys
            self.until(self.taken_over, "a daemon ready")
            self.until(lambda: self.logs().count("standby: ") == 2, "two standbys")
        elif command.startswith(("kill -9", "kill -STOP")):
            self.until(self.taken_over, "a standby to take over")
        elif LISTED in command:  # the active daemon, never one killed or frozen; standbys
            shown = re.search(r"^daemon: pid (\d+) on .*, ready$", printed, re.M)
            assert shown and int(shown[1]) not in self.killed, (printed, self.killed)
            standbys = re.findall(r"^standby: pid \d+ on .*, since .*$", printed, re.M)
            assert len(standbys) == 2 - len(self.killed), printed
        elif "emit order.created" in command:
            self.until(lambda: orders(self.url) == ["paused"], "the order's run to pause")
        elif "emit payment.received" in command:  # resumed under the second daemon
            self.until(lambda: orders(self.url) == ["completed"], "the order's run to complete")
        elif command.startswith("kill -CONT"):
            assert "exit 3" in printed, printed + self.logs()
            assert "another daemon fenced this one" in self.logs(), self.logs()


def test_three_daemons_one_active_two_taking_over(terminal: Terminal, pg_cluster: Cluster) -> None:
    walk = Walk(pg_cluster.url(DATABASE), terminal.root)
    for block in WALKTHROUGH:
        for command in commands(block):
            walk.before(command)
            code, printed = terminal.type(command)
            assert code == 0, f"{block}: {command!r} exited {code}:\n{printed}\n{walk.logs()}"
            walk.after(command, printed)
    first, frozen = walk.killed
    assert len(WALKTHROUGH) == 5 and first != frozen
    # The standbys named the first daemon, and the journal where libpq's variables point.
    assert f"(pid {first} on " in walk.logs()
    assert f"journal database {DATABASE} on 127.0.0.1:{pg_cluster.port} as postgres" in walk.logs()

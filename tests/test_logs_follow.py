"""`orchestrator logs -f` when the journal it follows is deleted or replaced under it.

A reader opened on the old file would read that file for ever, showing nothing of the
journal now under the name (a restore from a backup, a new journal a daemon made).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from procs import ROOT
from test_cli import seed

from orchestrator.testing import eventually_blocking

TIMEOUT = 30.0


class Follower:
    """``orchestrator logs -f --json``, its stdout and stderr collected line by line."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "logs", "-f", "--json", "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _collect(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    def shows(self, run_id: str) -> None:
        eventually_blocking(
            lambda: any(run_id in line for line in self.out),
            what=f"logs -f to show run {run_id}",
            timeout=TIMEOUT,
            details=lambda: "".join(self.out[-5:] + self.err),
        )

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for reader in self.readers:  # each ends at its pipe's end, then the pipe is closed
            reader.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


@pytest.mark.parametrize("how", ["replaced", "deleted then made again", "caught half made"])
def test_logs_follow_goes_on_with_the_journal_now_under_its_name(tmp_path: Path, how: str) -> None:
    db = tmp_path / "j.db"
    _, first = seed(db)
    follower = Follower(db)
    try:
        follower.shows(first)
        if how == "replaced":
            other = tmp_path / "other.db"
            _, second = seed(other)
            other.replace(db)
        elif how == "caught half made":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            # An SQLite file without the journal's schema yet, as one being made looks.
            with sqlite3.connect(db) as half:
                half.execute("CREATE TABLE being_made (x)")
            half.close()
            eventually_blocking(
                lambda: any("following it anew" in line for line in follower.err),
                what="logs -f to notice the journal went",
                timeout=TIMEOUT,
            )
            other = tmp_path / "other.db"
            _, second = seed(other)
            for suffix in ("-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            other.replace(db)
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            _, second = seed(db)
        follower.shows(second)
        assert follower.proc.poll() is None, "still following"
        assert any("was deleted or replaced; following it anew" in line for line in follower.err)
    finally:
        follower.stop()

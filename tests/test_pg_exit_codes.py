"""`orchestrator up` exits 2 on a journal it cannot start on, 3 on one that fails later.

The rule (README, "CLI"): a journal the daemon cannot use at start is for the user to fix
(the URL, the server, the orchestrator's version, the file), as bad input is: exit 2 and one
line naming the journal and the error's code, a PostgreSQL server that cannot be reached as
a file that is not a journal. A journal that fails once the daemon runs (another daemon
fenced it, writes that cannot be committed): exit 3.
"""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
from procs import Daemon, cli

from orchestrator.journal.backends import migrate_journal


def closed_port() -> int:
    """A port of this host that nothing listens on (once the socket is closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_up_on_a_journal_it_cannot_start_on_exits_2_in_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    unreachable = f"postgresql://me:s3cret@127.0.0.1:{closed_port()}/orch?connect_timeout=5"
    await migrate_journal(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE orchestrator.schema_version SET version = 99")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a journal at all" * 100)
    damaged.chmod(0o600)
    cases = (
        (unreachable, "JOURNAL_UNREACHABLE"),
        (pg_url, "JOURNAL_ERROR"),  # written by a newer orchestrator: upgrade
        (str(damaged), "JOURNAL_CORRUPT"),
    )
    for db, code in cases:
        done = cli("up", str(folder), "--db", db, "--headless")
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert lines[0].endswith(f"[{code}]") and "s3cret" not in done.stderr


async def test_a_journal_that_fails_once_the_daemon_runs_exits_3(
    pg_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    with Daemon(folder, pg_url) as daemon:  # type: ignore[arg-type]
        daemon.start()
        with psycopg.connect(pg_url, autocommit=True) as conn:  # as another daemon fences it
            conn.execute(
                "UPDATE orchestrator.daemons SET epoch = epoch + 1, fenced_at = 1 WHERE pid = %s",
                (daemon.pid,),
            )
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=60) == 3, daemon.log()
        assert "another daemon fenced this one" in daemon.log()

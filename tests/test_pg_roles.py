"""A PostgreSQL journal used by a plain role: rights granted on the schema, or missing.

The journal is migrated by its owner (the cluster's superuser); daemons and commands then
connect as a role made by each test (``CREATE ROLE ... LOGIN``, no superuser, no right to
create anything in the database). Granted the journal's tables, such a role runs a daemon
and its commands; without them, each says in one line what it may not do and how to fix
it, never "check that the server runs".
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import psycopg
import pytest
from procs import Daemon, cli, frozen_script, query
from test_pg_standby import FROZEN, TAKE_OVER_TIMEOUT

from orchestrator import Runtime

FLOW = """
from orchestrator import Trigger, Workflow


def work(state):
    return {**state, "done": True}


workflow = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [work]})
"""

GRANTS = (
    "GRANT USAGE ON SCHEMA orchestrator TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA orchestrator TO {role}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA orchestrator TO {role}",
)


def plain_role(url: str, *grants: str) -> str:
    """A new login role (no superuser, no CREATE on the database) given `grants`: its URL."""
    dbname = url.rsplit("/", 1)[1]
    role = f"r_{dbname}"[:60]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'REVOKE CREATE ON DATABASE "{dbname}" FROM PUBLIC')
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for grant in grants:
            conn.execute(grant.format(role=f'"{role}"'))
    return re.sub(r"postgresql://[^@]*@", f"postgresql://{role}:pw@", url)


def one_error_line(done: object) -> str:
    stderr: str = done.stderr  # type: ignore[attr-defined]
    errors = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_a_role_granted_the_journals_tables_runs_a_daemon_and_the_commands(
    tmp_path: Path, pg_url: str
) -> None:
    """`up` found the schema current, yet ran CREATE SCHEMA, which needs CREATE on the
    database: "migrating the PostgreSQL journal failed: permission denied", exit 2."""
    assert cli("journal", "migrate", "--db", pg_url).returncode == 0
    url = plain_role(pg_url, *GRANTS)
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "job.py").write_text(FLOW)
    with Daemon(folder, url) as daemon:  # type: ignore[arg-type]
        daemon.start()
        emitted = cli("emit", "job", '{"n": 1}', "--db", url)
        assert emitted.returncode == 0, emitted.stderr

        def completed() -> bool | None:
            return query(pg_url, "SELECT status FROM runs") == [("completed",)] or None

        daemon.wait_until(completed, 60, "the run to complete")
        listed = cli("runs", "--json", "--db", url)
        assert listed.returncode == 0, listed.stderr
        assert [run["status"] for run in json.loads(listed.stdout)] == ["completed"]
        assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize(
    "args",
    [("runs",), ("workflows",), ("emit", "job", "{}"), ("show", "abc"), ("up", "FOLDER")],
    ids=lambda args: args[0],
)
def test_a_role_without_rights_on_the_journal_is_told_so_in_one_line(
    tmp_path: Path, pg_url: str, args: tuple[str, ...]
) -> None:
    assert cli("journal", "migrate", "--db", pg_url).returncode == 0
    url = plain_role(pg_url, "GRANT USAGE ON SCHEMA orchestrator TO {role}")
    folder = tmp_path / "flows"
    folder.mkdir()
    args = tuple(str(folder) if arg == "FOLDER" else arg for arg in args)
    done = cli(*args, "--db", url)
    assert done.returncode == 2, done
    line = one_error_line(done)
    assert "permission denied" in line and "[JOURNAL_PERMISSION_DENIED]" in line, line
    assert "GRANT" in line and "check that the server runs" not in line, line
    assert ":pw@" not in done.stdout + done.stderr


def test_a_role_that_may_not_create_the_schema_is_told_who_must_migrate(
    tmp_path: Path, pg_url: str
) -> None:
    url = plain_role(pg_url)
    folder = tmp_path / "flows"
    folder.mkdir()
    for args in (("journal", "migrate"), ("up", str(folder))):
        done = cli(*args, "--db", url)
        assert done.returncode == 2, done
        line = one_error_line(done)
        assert "[JOURNAL_PERMISSION_DENIED]" in line, line
        assert "orchestrator journal migrate" in line, line


async def test_a_frozen_daemon_of_a_plain_role_is_taken_over_by_one_of_the_same_role(
    tmp_path: Path, pg_url: str
) -> None:
    """A plain role may end its own connections: the frozen daemon's batch is cut off,
    a standby of that role takes over, and the frozen batch never lands."""
    assert cli("journal", "migrate", "--db", pg_url).returncode == 0
    url = plain_role(pg_url, *GRANTS)
    async with frozen_script(tmp_path, FROZEN, url) as proc:
        standby = Runtime(url, standby=True)
        await asyncio.wait_for(standby.start(), TAKE_OVER_TIMEOUT)
        try:
            assert standby.failure is None
        finally:
            await standby.stop()
        os.kill(proc.pid, signal.SIGCONT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"failure JOURNAL_LOCKED" in out, (out, err)
    assert query(pg_url, "SELECT count(*) FROM runs") == [(0,)]  # the frozen batch never landed

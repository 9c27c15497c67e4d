"""`open_journal`: a path is a SQLite journal, a PostgreSQL URL a PostgreSQL one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import Runtime, Workflow
from orchestrator.errors import JournalUnreachable
from orchestrator.journal import SORTS, open_journal
from orchestrator.journal.sqlite import views

ROOT = Path(__file__).resolve().parent.parent
URLS = ["postgresql://me:s3cret@db.example/orch", "postgres://db.example/orch", "POSTGRESQL://h/d"]


def echo(state: dict[str, object]) -> dict[str, object]:
    return state


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed once the probe is


@pytest.mark.parametrize("url", [*URLS, Path("postgresql://h/d")])
def test_a_postgresql_url_is_a_postgresql_journal_shown_without_its_password(
    url: str | Path,
) -> None:
    journal = open_journal(url)  # nothing is connected yet
    assert journal.location.startswith("database ") and "s3cret" not in journal.location
    assert journal.identity.startswith("postgresql://") and "s3cret" not in journal.identity


def test_two_urls_of_one_database_are_one_journal() -> None:
    a = open_journal("postgresql://me:s3cret@db.example:5432/orch")
    b = open_journal("postgresql://other@db.example/orch")
    assert a.identity == b.identity


async def test_a_runtime_on_an_unreachable_server_fails_at_start_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"postgresql://me:s3cret@127.0.0.1:{closed_port()}/orch"
    with pytest.raises(JournalUnreachable, match="cannot connect") as caught:
        async with Runtime(url):
            pass
    assert "s3cret" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["runs"], ["emit", "x", "{}"], ["show", "r"]])
def test_the_cli_on_an_unreachable_server_says_so_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"postgresql://me:s3cret@127.0.0.1:{closed_port()}/orch"
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ORCHESTRATOR_DB": url, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "[JOURNAL_UNREACHABLE]" in out.stderr and "s3cret" not in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert list(tmp_path.iterdir()) == []


async def test_a_path_is_a_sqlite_journal_that_connects_only_when_used(db: Path) -> None:
    journal = open_journal(db)
    assert journal.location == str(db)
    assert not journal.exists() and not db.exists()
    async with Runtime(db, workflows=[Workflow(id="w", pipelines={"go": [echo]})]) as rt:
        result = await rt.invoke("w", "go", {"n": 1})
    assert journal.exists()
    event_id = journal.commands.emit_event("ping", {"n": 2})
    reader = await journal.open_reader()
    try:
        assert reader.location == str(db)
        assert (await reader.get_run(result.run_id)) is not None
        assert [e.event_id for e in await reader.unrouted_events(0)] == [event_id]
    finally:
        await reader.close()
    viewing = await journal.open_views()
    try:
        assert (await viewing.status_counts()) == {"completed": 1}
    finally:
        await viewing.close()


def test_every_sort_of_the_run_list_has_its_sqlite_order() -> None:
    assert list(views._ORDER_BY) == list(SORTS)


def test_the_clis_writing_commands_load_neither_asyncio_nor_aiosqlite(tmp_path: Path) -> None:
    code = (
        "import atexit, sys\n"
        "heavy = ('asyncio', 'aiosqlite')\n"
        "atexit.register(lambda: print([m for m in heavy if m in sys.modules]))\n"
        "from orchestrator.cli.main import main\n"
        f"main(['emit', 'x', '{{}}', '--db', {str(tmp_path / 'j.db')!r}])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines()[-1] == "[]"

"""`open_journal`: a path is a SQLite journal, a PostgreSQL URL a clear error (for now)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import Runtime, Workflow
from orchestrator.errors import JournalBackendUnavailable, JournalError
from orchestrator.journal import SORTS, open_journal
from orchestrator.journal.sqlite import views

ROOT = Path(__file__).resolve().parent.parent
URLS = ["postgresql://me:s3cret@db.example/orch", "postgres://db.example/orch", "POSTGRESQL://h/d"]


def echo(state: dict[str, object]) -> dict[str, object]:
    return state


@pytest.mark.parametrize("url", [*URLS, Path("postgresql://h/d")])
def test_a_postgresql_url_is_refused_with_a_stable_code(url: str | Path) -> None:
    with pytest.raises(JournalBackendUnavailable, match="PostgreSQL") as caught:
        open_journal(url)
    assert isinstance(caught.value, JournalError)
    assert caught.value.code == "JOURNAL_BACKEND_UNAVAILABLE"
    assert "s3cret" not in str(caught.value)


def test_a_runtime_on_a_postgresql_url_fails_at_once_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JournalBackendUnavailable):
        Runtime(URLS[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["runs"], ["emit", "x", "{}"], ["show", "r"]])
def test_the_cli_refuses_a_postgresql_url_as_bad_input(tmp_path: Path, command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ORCHESTRATOR_DB": URLS[0], "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert out.returncode == 2
    assert "[JOURNAL_BACKEND_UNAVAILABLE]" in out.stderr and "s3cret" not in out.stderr
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

"""A journal that is not private is refused; every file the daemon writes is 0600."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import cli

from orchestrator import JournalNotPrivate, Runtime, Workflow
from orchestrator.cli.daemon import PrivateFileHandler, configure_logging

NOBODY = 65534  # an uid that is not this process's


async def inc(state: dict[str, int]) -> dict[str, int]:
    return {**state, "n": state.get("n", 0) + 1}


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def _seed(db: Path) -> None:
    async with Runtime(db, workflows=[Workflow(id="w", pipelines={"go": [inc]})]) as rt:
        await rt.invoke("w", "go", {})


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another uid needs root (CI may not be root)")


async def test_a_journal_pre_created_0666_is_refused_with_the_chmod_to_run(
    db: Path, umask_000: None
) -> None:
    db.touch(0o666)  # as another user of a shared folder could leave it
    assert _mode(db) == 0o666
    with pytest.raises(JournalNotPrivate, match=r"chmod 600 \S*journal\.db") as caught:
        async with Runtime(db):
            pass
    assert caught.value.code == "JOURNAL_NOT_PRIVATE" and "0666" in str(caught.value)
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    db.chmod(0o600)  # the hint works, and SQLite then gives -wal and -shm the same mode
    await _seed(db)
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        assert not path.exists() or _mode(path) == 0o600, suffix


async def test_a_new_journal_is_private_whatever_the_umask(tmp_path: Path, umask_000: None) -> None:
    db = tmp_path / "journal.db"
    await _seed(db)
    assert _mode(db) == 0o600


async def test_a_loose_wal_beside_a_private_journal_is_refused(db: Path, umask_000: None) -> None:
    await _seed(db)
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"left over")  # SQLite makes an empty one as private as the journal
    wal.chmod(0o666)
    with pytest.raises(JournalNotPrivate, match=r"-wal \(0666\)"):
        async with Runtime(db):
            pass


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
async def test_a_journal_owned_by_another_user_is_refused(db: Path, suffix: str) -> None:
    _needs_root()
    await _seed(db)
    target = Path(f"{db}{suffix}")
    target.touch(0o600)
    os.chown(target, NOBODY, NOBODY)
    with pytest.raises(JournalNotPrivate, match=f"belongs to uid {NOBODY}") as caught:
        async with Runtime(db):
            pass
    assert "chown" in str(caught.value)


def test_cli_writes_refuse_a_loose_journal_and_reads_still_work(tmp_path: Path) -> None:
    import asyncio

    db = tmp_path / "journal.db"
    asyncio.run(_seed(db))
    db.chmod(0o644)
    emitted = cli("emit", "order.created", "--db", str(db))
    assert emitted.returncode == 2
    assert "JOURNAL_NOT_PRIVATE" in emitted.stderr and "chmod 600" in emitted.stderr
    listed = cli("runs", "--db", str(db), "--json")
    assert listed.returncode == 0, listed.stderr


def test_the_daemon_log_is_0600_even_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    path = tmp_path / "journal.db.log"
    logger = logging.getLogger("orchestrator")
    before = list(logger.handlers)
    configure_logging(path)
    try:
        logging.getLogger("orchestrator.daemon").info("hello")
    finally:
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
            handler.close()
    assert _mode(path) == 0o600 and "hello" in path.read_text()


def test_a_loose_log_of_ours_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "journal.db.log"
    path.write_text("old lines\n")
    path.chmod(0o644)
    PrivateFileHandler(path).close()
    assert _mode(path) == 0o600 and path.read_text() == "old lines\n"


def test_a_log_that_is_a_symlink_or_another_users_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "journal.db.log"
    link.symlink_to(target)
    with pytest.raises(JournalNotPrivate, match=r"cannot open the log file .*symbolic link"):
        PrivateFileHandler(link)
    _needs_root()
    theirs = tmp_path / "theirs.log"
    theirs.touch(0o600)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(JournalNotPrivate, match=f"belongs to uid {NOBODY}"):
        PrivateFileHandler(theirs)

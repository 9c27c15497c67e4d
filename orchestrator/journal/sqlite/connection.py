"""The one place that sets how the journal's SQLite connections behave.

Writers run every transaction as ``BEGIN IMMEDIATE`` (a deferred read-then-write
transaction fails at once with "database is locked" across processes, whatever the busy
timeout), wait up to `BUSY_TIMEOUT_MS` for the lock, and keep WAL mode. Readers are
``query_only`` and never hold a transaction between queries, so WAL checkpoints proceed.
The file is created 0600 before SQLite opens it; SQLite gives -wal and -shm the same mode.

A writer refuses a journal that is not private (`check_private`): another user's file is
never opened, and a file (or -wal, -shm) that group or others may read or write is refused
once SQLite has shown it is a database, as ssh refuses a loose key. Readers do not check:
they only read what the file system already lets them read, and create nothing.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on use: the CLI's writing commands need no event loop
    import aiosqlite

from ...errors import JournalCorrupt, JournalError, JournalNotPrivate
from ..protocol import Synchronous

BUSY_TIMEOUT_MS = 30_000

# Primary result codes (https://www.sqlite.org/rescode.html) of failures that may pass: a
# full disk, an I/O error, a lock held past the busy timeout. The file is sound; try again.
TRANSIENT_CODES = frozenset({5, 6, 10, 13})  # BUSY, LOCKED, IOERR, FULL
# The file is damaged or not a database: no retry will help.
CORRUPT_CODES = frozenset({11, 26})  # CORRUPT, NOTADB


def is_transient(exc: sqlite3.Error) -> bool:
    """Whether `exc` is a failure that may pass (disk full, I/O error, locked)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in TRANSIENT_CODES


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether `exc` says the file is damaged or is not a database."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in CORRUPT_CODES


def create_private(path: Path) -> None:
    """Create the journal file with mode 0600 if it does not exist yet."""
    # Invariant: never open an existing journal outside SQLite. Closing any descriptor of a
    # file drops every POSIX lock this process holds on it, its SQLite connections' too;
    # another process then believes it closes the last connection and deletes -wal and -shm
    # under them (https://www.sqlite.org/howtocorrupt.html, section 2.2).
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder made for it
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if not os.access(path, os.R_OK | os.W_OK):  # no descriptor: see above
            raise JournalError(f"cannot open journal {path}: permission denied") from None
        return
    except OSError as exc:
        raise JournalError(f"cannot create journal {path}: {exc.strerror}") from exc
    os.close(fd)


def check_private(path: Path, *, modes: bool = True) -> None:
    """Refuse a journal whose file, -wal or -shm another user owns or (`modes`) may use.

    Group or other users who can read it see every run's state and errors; who can write
    it can queue events and commands the daemon runs. Only `os.stat`: see `create_private`.

    Raises:
        JournalNotPrivate: Says which file, why, and the ``chown``/``chmod`` that fixes it.
    """
    me = os.geteuid()
    loose: list[str] = []
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            info = os.stat(file)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise JournalError(f"cannot open journal {file}: {exc.strerror}") from exc
        if info.st_uid != me:
            raise JournalNotPrivate(
                f"journal {file} belongs to uid {info.st_uid}, not to this user (uid {me}): "
                "whoever owns it can read the runs and write events this process would run; "
                f"use a journal of your own (--db), or have it handed over with "
                f"`chown {me} {shlex.quote(str(file))}`"
            )
        if modes and info.st_mode & 0o077:
            loose.append(f"{file} ({info.st_mode & 0o777:04o})")
    if loose:
        files = [path, *(Path(f"{path}{s}") for s in ("-wal", "-shm"))]
        fix = " ".join(shlex.quote(str(f)) for f in files if f.exists())
        raise JournalNotPrivate(
            f"journal not private: group or other users may read or write {', '.join(loose)}, "
            f"so they could read the runs and write events this process would run; "
            f"run `chmod 600 {fix}` and start again"
        )


def connect_writer(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """Open the journal for writing; the caller owns the connection and its thread.

    Raises:
        JournalNotPrivate: See `check_private`.
    """
    create_private(path)
    # Another user's file is refused before SQLite opens it, and so is a loose empty one
    # (SQLite would create -wal and -shm as loose beside it); a loose file with content
    # once SQLite has shown it is a database.
    check_private(path, modes=os.stat(path).st_size == 0)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise JournalCorrupt(
            f"{path} is not a journal (SQLite says: {exc}); pass the right --db or move the file"
        ) from exc
    if str(mode).lower() != "wal":
        conn.close()
        raise JournalError(f"{path}: cannot switch the journal to WAL mode (got {mode!r})")
    try:  # now -wal and -shm exist too: SQLite adopted any that were there
        check_private(path)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_reader(path: Path) -> aiosqlite.Connection:
    """Open an existing journal for reading only; the file must exist."""
    import aiosqlite

    uri = _read_write_uri(path)
    try:
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA query_only = ON")
    except sqlite3.DatabaseError as exc:
        raise JournalCorrupt(f"{path} is not a journal (SQLite says: {exc})") from exc
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


def _read_write_uri(path: Path) -> str:
    # mode=rw: a reader must never create a missing journal.
    return f"{path.resolve().as_uri()}?mode=rw"


def rollback_if_open(conn: sqlite3.Connection) -> None:
    """Roll back a transaction left open by a failure.

    After SQLITE_FULL or an I/O error SQLite may already have rolled back, and a blind
    ROLLBACK would raise; so look first.
    """
    if conn.in_transaction:
        conn.rollback()

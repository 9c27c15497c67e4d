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

A journal that cannot be opened is named for what it is: a path that cannot hold one (a
directory, a folder that does not exist: never created here), permission denied (the file,
or the folder where SQLite keeps -wal and -shm), or a damaged file or one that is no
journal (`JournalCorrupt`, with how to recover it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import sqlite3
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on use: the CLI's writing commands need no event loop
    import aiosqlite

from ...errors import (
    JournalCorrupt,
    JournalError,
    JournalNotPrivate,
    JournalPathInvalid,
    JournalPermissionDenied,
)
from ..protocol import Synchronous

BUSY_TIMEOUT_MS = 30_000

# Primary result codes (https://www.sqlite.org/rescode.html) of failures that may pass: a
# full disk, an I/O error, a lock held past the busy timeout. The file is sound; try again.
TRANSIENT_CODES = frozenset({5, 6, 10, 13})  # BUSY, LOCKED, IOERR, FULL
# The file is damaged or not a database: no retry will help.
CORRUPT_CODES = frozenset({11, 26})  # CORRUPT, NOTADB
# SQLite may not open or write the file: often permission denied (see `open_error`).
ACCESS_CODES = frozenset({3, 8, 14, 23})  # PERM, READONLY, CANTOPEN, AUTH


# What a call into sqlite3 raises when the file is at fault: its own errors, and
# UnicodeDecodeError when SQLite hands back text that is not UTF-8 (a damaged schema page
# names its tables in garbage, and SQLite quotes them in its error message).
SQLITE_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def is_transient(exc: Exception) -> bool:
    """Whether `exc` is a failure that may pass (disk full, I/O error, locked)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in TRANSIENT_CODES


def is_corrupt(exc: Exception) -> bool:
    """Whether `exc` says the file is damaged or is not a database."""
    if isinstance(exc, UnicodeDecodeError):
        return True
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in CORRUPT_CODES


def check_path(path: Path) -> None:
    """Refuse a path that cannot hold a journal, before SQLite sees it.

    Raises:
        JournalPathInvalid: `path` is a directory, or its folder does not exist.
        JournalPermissionDenied: A folder on the way may not be searched.
    """
    try:
        if path.is_dir():
            raise JournalPathInvalid(
                f"journal {path} is a directory, not a file; pass a file path, "
                f"e.g. {path / 'orchestrator.db'}"
            )
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            check_regular(path, path.stat().st_mode)
        if not path.parent.is_dir():
            missing = "is not a folder" if path.parent.exists() else "does not exist"
            raise JournalPathInvalid(
                f"cannot use journal {path}: its folder {path.parent} {missing}; "
                "create the folder first, or pass another path"
            )
    except OSError as exc:
        raise path_error(path, exc, "reach") from exc
    except ValueError as exc:  # a NUL in the path
        raise JournalPathInvalid(f"journal path {path!r} cannot be used: {exc}") from exc


def check_regular(path: Path, mode: int) -> None:
    """Refuse a journal path that is there as a FIFO, a socket or a device (`mode`).

    None can hold a journal, and opening a FIFO waits for a writer: it is refused from its
    `os.stat`, never opened. A folder is refused by `check_path`, with its own fix.

    Raises:
        JournalPathInvalid: Says what the path is and what to pass instead.
    """
    kind = _special_kind(mode)
    if kind is not None:
        raise JournalPathInvalid(
            f"journal {path} is {kind}, not a regular file, so it cannot hold a journal; "
            "pass the path of a journal file, or of a new one to create"
        )


def _special_kind(mode: int) -> str | None:
    """What a file of `mode` is if it is neither a regular file nor a folder."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def path_error(path: Path, exc: OSError, doing: str) -> JournalError:
    """`exc`, met while trying to `doing` journal `path`, as the journal error it is."""
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return JournalPermissionDenied(
            f"cannot {doing} journal {path}: {exc.strerror or exc} (check the permissions "
            f"of the file and of its folder {path.parent})"
        )
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EISDIR):
        return JournalPathInvalid(f"cannot {doing} journal {path}: {exc.strerror or exc}")
    return JournalError(f"cannot {doing} journal {path}: {exc.strerror or exc}")


def open_error(path: Path, exc: Exception, *, write: bool) -> JournalError:
    """A failure of SQLite to open (or first query) journal `path`, named for what it is."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if is_corrupt(exc):
        return not_a_journal(path, exc)
    if code in ACCESS_CODES:
        problem = _access_problem(path, write=write)
        if problem is not None:
            doing = "write" if write else "read"
            return JournalPermissionDenied(f"cannot {doing} journal {path}: {problem}")
    return JournalError(f"cannot open journal {path}: {exc}")


def not_a_journal(path: Path, exc: Exception) -> JournalCorrupt:
    """`JournalCorrupt` for `path`, with what to do about it."""
    said = "text that is not UTF-8" if isinstance(exc, UnicodeDecodeError) else exc
    return JournalCorrupt(
        f"{path} is not a journal, or it is damaged (SQLite says: {said}); pass the right "
        f"--db, or restore the journal from a backup (`sqlite3 {path} .recover` salvages "
        "what it can)"
    )


def _access_problem(path: Path, *, write: bool) -> str | None:
    """Why this process may not open `path` (read, or `write`), if permissions say so."""
    wanted = os.R_OK | (os.W_OK if write else 0)
    if path.exists() and not os.access(path, wanted):
        return f"permission denied on the file ({'read and write' if write else 'read'})"
    side = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    if not all(p.exists() for p in side) and not os.access(path.parent, os.W_OK | os.X_OK):
        return (
            f"its folder {path.parent} is not writable, and SQLite keeps {path.name}-wal "
            "and -shm beside the journal; make the folder writable, or move the journal"
        )
    return None


def create_private(path: Path) -> None:
    """Create the journal file with mode 0600 if it does not exist yet.

    Its folder must exist: a mistyped path is an error, not a new tree of folders.
    """
    # Invariant: never open an existing journal outside SQLite. Closing any descriptor of a
    # file drops every POSIX lock this process holds on it, its SQLite connections' too;
    # another process then believes it closes the last connection and deletes -wal and -shm
    # under them (https://www.sqlite.org/howtocorrupt.html, section 2.2).
    check_path(path)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if not os.access(path, os.R_OK | os.W_OK):  # no descriptor: see above
            raise JournalPermissionDenied(
                f"cannot open journal {path}: permission denied on the file (read and write)"
            ) from None
        return
    except OSError as exc:
        raise path_error(path, exc, "create") from exc
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
    new = os.stat(path).st_size == 0
    check_private(path, modes=new)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except SQLITE_ERRORS as exc:
        raise open_error(path, exc, write=True) from exc
    try:
        mode = _configure(conn, new=new, synchronous=synchronous)
    except SQLITE_ERRORS as exc:
        conn.close()
        raise open_error(path, exc, write=True) from exc
    if str(mode).lower() != "wal":
        conn.close()
        raise JournalError(f"{path}: cannot switch the journal to WAL mode (got {mode!r})")
    try:  # now -wal and -shm exist too: SQLite adopted any that were there
        check_private(path)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, *, new: bool, synchronous: Synchronous) -> str:
    """Set the writer's pragmas; the journal mode they leave (``wal`` unless refused).

    On a file another process is creating at the same moment (two CLI commands on a new
    journal), SQLite reports ``database is locked`` at once from these pragmas, without
    its busy handler: they are tried again for up to about 5 seconds.
    """
    for attempt in range(_CONFIGURE_ATTEMPTS):
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if new:  # only before the first page is written: prune can give space back
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            return mode
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _CONFIGURE_ATTEMPTS - 1:
                raise
        time.sleep(min(0.005 * (attempt + 1), 0.1))
    raise AssertionError("unreachable: the last attempt returns or raises")


_CONFIGURE_ATTEMPTS = 60


async def connect_reader(path: Path) -> aiosqlite.Connection:
    """Open an existing journal for reading only; the file must exist."""
    import aiosqlite

    check_path(path)
    uri = read_write_uri(path)
    pending = aiosqlite.connect(uri, uri=True, isolation_level=None)
    try:
        conn = await pending
    except SQLITE_ERRORS as exc:
        await _thread_stopped(pending)
        raise open_error(path, exc, write=False) from exc
    try:
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute_fetchall("PRAGMA query_only = ON")
    except SQLITE_ERRORS as exc:
        # Closed here, or its thread outlives the event loop and prints a traceback.
        await conn.close()
        raise open_error(path, exc, write=False) from exc
    conn.row_factory = sqlite3.Row
    return conn


async def _thread_stopped(conn: aiosqlite.Connection) -> None:
    """Wait for the thread of a connection that failed to open to end.

    aiosqlite stops it without waiting; if the event loop closes first, the thread prints
    an "Event loop is closed" traceback under the user's one-line error.
    """
    import asyncio

    thread = getattr(conn, "_thread", None)  # private to aiosqlite: wait only if it is there
    if thread is not None and thread.is_alive():
        await asyncio.to_thread(thread.join, 5.0)


def read_write_uri(path: Path) -> str:
    """The URI that opens an existing journal only (mode=rw: a reader never creates one)."""
    return f"{path.resolve().as_uri()}?mode=rw"


def rollback_if_open(conn: sqlite3.Connection) -> None:
    """Roll back a transaction left open by a failure.

    After SQLITE_FULL or an I/O error SQLite may already have rolled back, and a blind
    ROLLBACK would raise; so look first.
    """
    if conn.in_transaction:
        conn.rollback()


def file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file `path` names (following symlinks); None if none.

    What tells a journal file from another put under its name (a restore, a stray ``rm``).
    """
    try:
        stat = os.stat(path)
    except (OSError, ValueError):  # not there, unreachable, or a NUL in the path
        return None
    return stat.st_dev, stat.st_ino

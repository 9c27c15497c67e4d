"""Reading a whole SQLite journal out, table by table, for `journal copy`.

The export holds the journal's write lock (``BEGIN IMMEDIATE``) from its first row to its
last: no daemon or command writes in between, so the rows are one consistent moment. It
refuses a journal a live daemon holds. An older schema is upgraded inside that transaction
and rolled back with it: the source file is never changed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import JournalCorrupt, JournalError, JournalLocked
from . import lease
from .connection import (
    SQLITE_ERRORS,
    check_regular,
    connect_writer,
    open_error,
    path_error,
    rollback_if_open,
)
from .schema import upgrade


class Export:
    """The tables of one journal, read inside its write transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    def tables(self) -> set[str]:
        """The names of the journal's tables."""
        rows = self._conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        return {str(name) for (name,) in rows}

    def columns(self, table: str) -> list[str]:
        """The columns of `table`, in their order."""
        return [str(row[1]) for row in self._conn.execute(f'PRAGMA table_info("{table}")')]

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Every row of `table` (these columns), read as they are consumed."""
        names = ", ".join(f'"{c}"' for c in columns)
        return _Rows(self._conn.execute(f'SELECT {names} FROM "{table}"'), self.path, table)


class _Rows:
    """A table's rows; a row SQLite cannot give back is reported with its table."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path, table: str) -> None:
        self._cursor, self._path, self._table = cursor, path, table

    def __iter__(self) -> _Rows:
        return self

    def __next__(self) -> tuple[Any, ...]:
        try:
            row: tuple[Any, ...] = next(self._cursor)
        except (*SQLITE_ERRORS, UnicodeDecodeError) as exc:
            raise JournalCorrupt(
                f"table {self._table} of {self._path} cannot be read ({exc}); nothing was "
                f"copied: fix or delete that row, or salvage the journal with "
                f"`sqlite3 {self._path} .recover`"
            ) from None
        return row


def check_source(path: Path) -> None:
    """Refuse a `path` that holds no journal to copy: missing, empty, a FIFO, a device.

    Raises:
        JournalError: Says what `path` is instead.
    """
    try:
        info = path.stat()
        check_regular(path, info.st_mode)  # a FIFO is refused as such, not as "empty"
        if info.st_size == 0:
            raise JournalError(f"{path} is empty: there is no journal to copy")
    except FileNotFoundError:
        raise JournalError(f"there is no journal at {path}: pass the path of one") from None
    except OSError as exc:
        raise path_error(path, exc, "read") from exc


@contextmanager
def exported(path: Path) -> Iterator[Export]:
    """The journal at `path`, locked for writing (and unchanged) until the block ends.

    Raises:
        JournalError: There is no journal at `path`, or it cannot be read.
        JournalLocked: A live daemon holds it; stop it first.
    """
    check_source(path)
    conn = connect_writer(path, "FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        upgrade(conn, path)
        _refuse_a_live_daemon(conn, path)
        yield Export(conn, path)
    except SQLITE_ERRORS as exc:
        raise open_error(path, exc, write=False) from exc
    finally:
        rollback_if_open(conn)
        conn.close()


def _refuse_a_live_daemon(conn: sqlite3.Connection, path: Path) -> None:
    holder = lease.read_holder(conn)
    if holder is not None and lease.is_live(holder, time.time_ns() // 1000):
        raise JournalLocked(
            f"a daemon (pid {holder.pid} on {holder.host}) runs on {path}: a journal is "
            "copied while no daemon runs; stop it first, then copy again"
        )

"""Short blocking transactions on a PostgreSQL journal, for the CLI's commands (no event loop).

Each call of `transaction` connects, runs its work in one transaction, commits and
disconnects. A serialization failure or a deadlock (another transaction won a race) is
retried a bounded number of times, as SQLite's commands retry "database is locked"; every
other failure is one `JournalError` line naming the journal by `describe` (never the
password). A database with no journal in it is refused: the commands write into a journal,
they never create one (`orchestrator journal migrate`, or a daemon, does).

psycopg imports asyncio when it is imported (its waiting functions have both flavours): a
command on a PostgreSQL journal loads asyncio, and never starts an event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import JournalError
from .connection import (
    NOTIFY_CHANNEL,
    SCHEMA,
    connect_options,
    denied,
    describe,
    load_psycopg,
    parse_url,
    unreachable,
)
from .reader import row_factory
from .schema import MIGRATIONS

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
ATTEMPTS = 5
RETRIED = ("40001", "40P01")  # serialization_failure, deadlock_detected


class Tx:
    """One open transaction: `rows` and `run` with ``%s`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All the rows of one query (each readable by position or column name)."""
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one query, or None."""
        return self.conn.execute(sql, params).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        return self.conn.execute(sql, params).rowcount


def connect_blocking(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A blocking connection to `url` (`JournalUnreachable` if it cannot be made)."""
    pg = load_psycopg()
    params = parse_url(url)
    try:
        conn: psycopg.Connection[Any] = pg.connect(
            url, autocommit=autocommit, row_factory=row_factory, **connect_options(params)
        )
    except pg.OperationalError as exc:
        raise unreachable(url, params, exc) from None
    return conn


def journal_version(tx: Tx) -> int:
    """The journal's schema version in this database; 0 if there is no journal in it."""
    found = tx.one("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_version",))
    if not found[0]:
        return 0
    return int(tx.one(f"SELECT version FROM {SCHEMA}.schema_version")[0])


def transaction(url: str, work: Callable[[Tx], T], *, write: bool = True) -> T:
    """`work` in one transaction on a new connection (see `Session.run`), then disconnect."""
    with Session(url) as session:
        return session.run(work, write=write)


class Session:
    """One connection for a series of short transactions (a prune's batches), then closed."""

    def __init__(self, url: str) -> None:
        self.url = url  # may hold a password: messages use `describe`
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, work: Callable[[Tx], T], *, write: bool = True) -> T:
        """`work` in one transaction: committed if `write`, else rolled back.

        A write transaction ends with a notification on `NOTIFY_CHANNEL` (delivered at
        commit), so a daemon's feed sees it at once.

        Raises:
            JournalUnreachable: The server cannot be reached, or the connection was lost.
            JournalError: No journal in the database, one of another version, or a
                statement failed (after `ATTEMPTS` tries for a conflict with another
                transaction).
        """
        pg = load_psycopg()
        for attempt in range(1, ATTEMPTS + 1):
            conn = self._connected()
            try:
                tx = Tx(conn)
                result = work(tx)
                if write:
                    tx.run("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
                    conn.commit()
                return result
            except pg.Error as exc:
                if getattr(exc, "sqlstate", None) not in RETRIED:
                    if conn.broken:
                        raise unreachable(self.url, parse_url(self.url), exc) from None
                    raise failed(self.url, exc) from exc
                if attempt == ATTEMPTS:
                    raise JournalError(
                        f"journal {describe(self.url)}: still conflicting with other writers "
                        f"after {ATTEMPTS} attempts; try again"
                    ) from exc
            finally:
                _rollback(conn)
            time.sleep(0.02 * attempt)  # a conflict: the other transaction goes first
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connected(self) -> psycopg.Connection[Any]:
        """The open connection, made (and the journal checked) on first use."""
        if self._conn is None or self._conn.closed:
            conn = connect_blocking(self.url)
            try:
                _check_journal(self.url, Tx(conn))
            except load_psycopg().Error as exc:
                conn.close()
                raise failed(self.url, exc) from exc
            except BaseException:
                conn.close()
                raise
            _rollback(conn)
            self._conn = conn
        return self._conn


def failed(url: str, exc: BaseException) -> JournalError:
    """A statement's failure as one line (psycopg's message, on one line)."""
    refused = denied(describe(url), "write", exc)
    if refused is not None:
        return refused
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return JournalError(f"journal {describe(url)}: write failed: {reason}")


def _check_journal(url: str, tx: Tx) -> None:
    version = journal_version(tx)
    if version == len(MIGRATIONS):
        return
    if version == 0:
        raise JournalError(
            f"no journal in the PostgreSQL {describe(url)}: create it with "
            f"`orchestrator journal migrate --db URL`, or start a daemon on it"
        )
    if version < len(MIGRATIONS):
        raise JournalError(
            f"the PostgreSQL journal ({describe(url)}) has schema {version} of "
            f"{len(MIGRATIONS)}: upgrade it with `orchestrator journal migrate --db URL`"
        )
    raise JournalError(
        f"the PostgreSQL journal was written by a newer orchestrator (schema {version}, "
        f"this one knows {len(MIGRATIONS)}); upgrade the orchestrator"
    )


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    try:
        conn.rollback()
    except load_psycopg().Error:  # the connection is gone: nothing to roll back
        pass

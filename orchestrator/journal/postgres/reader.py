"""Reading a PostgreSQL journal: the queries of `JournalQueries`, on one connection.

The connection is in autocommit, so no read transaction outlives a query. Rows come back
as `Row`: read by position or by column name, as ``sqlite3.Row`` is on SQLite, so the
decoding helpers the SQLite reader uses (and the dashboard's views) read both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import JournalError
from .connection import connect, describe, load_psycopg

if TYPE_CHECKING:
    import psycopg


class Row(tuple[Any, ...]):
    """One result row: ``row[0]`` or ``row["column"]``."""

    __slots__ = ()
    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)


def _row_type(names: Sequence[str]) -> type[Row]:
    return type("Row", (Row,), {"__slots__": (), "_names": {n: i for i, n in enumerate(names)}})


def row_factory(cursor: Any) -> Any:
    """A psycopg row factory making `Row`s (one class per result: names looked up once)."""
    names = [column.name for column in cursor.description or ()]
    made = _row_type(names)
    return lambda values: made(values)


class PostgresReader:
    """Queries over one autocommit connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], url: str) -> None:
        self._conn = conn
        self.url = url  # may hold a password: `location` is what is shown

    @property
    def location(self) -> str:
        """Where the journal is, without the password."""
        return describe(self.url)

    @classmethod
    async def open(cls, url: str) -> PostgresReader:
        """Open a reader on the journal at `url` (`JournalUnreachable` if it cannot connect)."""
        conn = await connect(url, autocommit=True)
        conn.row_factory = row_factory
        return cls(conn, url)

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one read query (``%s`` placeholders) and return all its rows."""
        pg = load_psycopg()
        try:
            cursor = await self._conn.execute(sql, params)
            return await cursor.fetchall()
        except pg.Error as exc:
            reason = " ".join(str(exc).split())
            raise JournalError(f"journal {self.location}: read failed: {reason}") from exc

"""Writing a whole journal's rows into an empty PostgreSQL journal, for `journal copy`.

Everything goes in one transaction (``COPY`` per table): the destination ends with all of
the rows or none. Ids are kept, so the identity sequences are moved past them afterwards.
A value PostgreSQL cannot hold as it is (a NUL character in text, binary data in a text
column) stops the copy with its table, column and row: nothing is changed or dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import JournalError
from . import schema
from .connection import DAEMONS_LOCK, connect, describe, load_psycopg


@dataclass(frozen=True)
class TableRows:
    """One table to load: its name, the columns given, the rows in that column order."""

    name: str
    columns: Sequence[str]
    rows: Iterable[Sequence[Any]]


async def columns_of(url: str) -> dict[str, list[str]]:
    """The journal's tables at `url` (migrated first) and their columns, in order."""
    await schema.migrate(url)
    conn = await connect(url, autocommit=True)
    try:
        cursor = await conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        )
        tables: dict[str, list[str]] = {}
        for table, column in await cursor.fetchall():
            tables.setdefault(str(table), []).append(str(column))
        return tables
    finally:
        await conn.close()


async def load(url: str, tables: Iterable[TableRows]) -> dict[str, int]:
    """Load `tables` in order into the empty journal at `url`; rows loaded per table.

    Raises:
        JournalError: The destination holds rows already, a value cannot be stored as it
            is, or PostgreSQL refused a row (nothing is written then).
        JournalUnreachable: No connection could be made.
    """
    pg = load_psycopg()
    conn = await connect(url)
    counts: dict[str, int] = {}
    try:
        async with conn.transaction():
            # As a daemon registering takes it: one registering now (its row and its
            # highest run id read, not committed yet) is counted, not raced.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DAEMONS_LOCK,))
            await _refuse_a_journal_in_use(conn, url)
            # Counted once at the end: the trigger would update the same few `run_counts`
            # rows once per run, for a million runs in one transaction (minutes, not seconds).
            await conn.execute("ALTER TABLE runs DISABLE TRIGGER run_counts_insert")
            for table in tables:
                try:
                    counts[table.name] = await _copy(conn, table)
                except pg.Error as exc:
                    reason = " ".join(str(exc).split())
                    raise JournalError(
                        f"copying table {table.name} into {describe(url)} failed: {reason}; "
                        "nothing was written"
                    ) from None
            await conn.execute("ALTER TABLE runs ENABLE TRIGGER run_counts_insert")
            await conn.execute(
                "INSERT INTO run_counts (workflow_id, trigger_id, status, n)"
                " SELECT workflow_id, trigger_id, status, count(*) FROM runs GROUP BY 1, 2, 3"
            )
            identities = await conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND is_identity = 'YES'"
            )
            for table, column in await identities.fetchall():
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), max({column})) FROM"
                    f" {table} HAVING max({column}) IS NOT NULL",
                    (table, column),
                )
    finally:
        await conn.close()
    return counts


async def _refuse_a_journal_in_use(conn: Any, url: str) -> None:
    """Refuse a destination with any run, event, command, workflow or daemon in it."""
    cursor = await conn.execute(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events),"
        " (SELECT count(*) FROM inbox), (SELECT count(*) FROM workflows),"
        " (SELECT count(*) FROM daemons)"
    )
    runs, events, commands, workflows, daemons = await cursor.fetchone()
    if runs or events or commands or workflows or daemons:
        raise JournalError(
            f"{describe(url)} holds a journal already ({runs} runs, {events} events, "
            f"{commands} commands, {workflows} workflows, {daemons} daemons have used it): "
            "journal copy writes into an empty one; create a new database and copy again"
        )


async def _copy(conn: Any, table: TableRows) -> int:
    names = ", ".join(table.columns)
    count = 0
    cursor = conn.cursor()
    async with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        for row in table.rows:
            _check_row(table, row)
            await copy.write_row(row)
            count += 1
    return count


def _check_row(table: TableRows, row: Sequence[Any]) -> None:
    for column, value in zip(table.columns, row, strict=True):
        if isinstance(value, str):
            if "\x00" in value:
                problem = "a NUL character, which PostgreSQL text cannot hold"
            else:
                continue
        elif isinstance(value, bytes | bytearray | memoryview):
            problem = "binary data where text belongs"
        else:
            continue
        raise JournalError(
            f"table {table.name}, column {column}, row {_row_key(table, row)} holds "
            f"{problem}; nothing was written: fix or delete that row in the source first"
        )


def _row_key(table: TableRows, row: Sequence[Any]) -> str:
    for key in ("id", "run_id", "event_id", "run", "workflow_id", "file", "name", "child"):
        if key in table.columns:
            return f"{key}={row[list(table.columns).index(key)]!r}"
    return repr(tuple(row)[:2])

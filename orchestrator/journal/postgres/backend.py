"""A journal in one PostgreSQL database: where its writer, readers and commands come from.

`open_journal` sends a ``postgresql://`` URL here. Importing this module loads neither
asyncio nor psycopg: each part is imported when it is asked for, as on SQLite.

Parts not ported yet refuse with `JournalBackendUnavailable` (`NOT_COMPLETE`), so a runtime,
a daemon, a command or the dashboard on a URL fails at once with one clear line, never
halfway (docs/POSTGRES.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from ...errors import JournalBackendUnavailable
from .connection import describe, parse_url

if TYPE_CHECKING:
    from ..faults import FaultPoints
    from ..protocol import (
        DashboardViews,
        JournalCommands,
        JournalQueries,
        JournalWriter,
        Synchronous,
    )

NOT_COMPLETE = (
    "the PostgreSQL journal is not complete yet: only `orchestrator journal migrate` "
    "works on a postgresql:// URL for now; pass a file path to use a SQLite journal"
)


def _not_complete() -> NoReturn:
    raise JournalBackendUnavailable(NOT_COMPLETE)


class PostgresJournal:
    """The PostgreSQL backend of one database's journal (`JournalBackend`)."""

    def __init__(self, url: str) -> None:
        self.url = url  # may hold a password: never shown (`location` is what is shown)

    @property
    def location(self) -> str:
        """Where the journal is, without the password: ``database D on HOST:PORT as USER``."""
        return describe(self.url)

    @property
    def identity(self) -> str:
        """The same for every URL naming this database (user and password left out)."""
        params = parse_url(self.url)
        host = params.get("host") or params.get("hostaddr") or "localhost"
        return f"postgresql://{host}:{params.get('port') or '5432'}/{params.get('dbname', '')}"

    @property
    def commands(self) -> JournalCommands:
        """Writes for the CLI and the dashboard, each one short transaction."""
        _not_complete()

    def exists(self) -> bool:
        """Whether the database holds a journal yet (its schema is migrated)."""
        _not_complete()

    def writer(
        self, *, synchronous: Synchronous = "FULL", faults: FaultPoints | None = None
    ) -> JournalWriter:
        """The runtime's group-commit writer on this database, not open yet."""
        _not_complete()

    async def open_reader(self) -> JournalQueries:
        """A reader on the existing journal (`postgres.reader.PostgresReader`)."""
        _not_complete()

    async def open_views(self) -> DashboardViews:
        """The dashboard's queries over a reader of their own (`postgres.views`)."""
        from .views import PostgresViews

        return await PostgresViews.open(self.url)


def open_postgres(url: str) -> PostgresJournal:
    """The journal at `url`, checked (psycopg installed, the URL valid), not connected yet.

    Raises:
        JournalBackendUnavailable: psycopg is not installed (saying how to install it), or,
            until every part is ported, the backend is not complete.
        JournalPathInvalid: `url` is not a valid PostgreSQL URL.
    """
    parse_url(url)
    _not_complete()  # the last line to go: `return PostgresJournal(url)`

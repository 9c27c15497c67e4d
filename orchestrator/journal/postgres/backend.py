"""A journal in one PostgreSQL database: where its writer, readers and commands come from.

`open_journal` sends a ``postgresql://`` URL here. Importing this module loads neither
asyncio nor psycopg: each part is imported when it is asked for, as on SQLite.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from .connection import denied, describe, load_psycopg, parse_url, unreachable

if TYPE_CHECKING:
    from ..faults import FaultPoints
    from ..protocol import (
        DashboardViews,
        JournalQueries,
        JournalWriter,
        Synchronous,
    )
    from .commands import PostgresCommands
    from .executor_writer import ExecutorWriter
    from .run_tasks import PostgresRunTasks
    from .step_jobs import PostgresStepJobs


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
    def shared(self) -> bool:
        """Daemons on several machines may run it: one active, the others standing by."""
        return True

    @cached_property
    def commands(self) -> PostgresCommands:
        """Writes for the CLI and the dashboard, each one short transaction."""
        from .commands import PostgresCommands

        return PostgresCommands(self.url)

    def exists(self) -> bool:
        """Whether the database holds a journal yet (its schema is migrated).

        Raises:
            JournalUnreachable: The server cannot be reached.
        """
        from .blocking import Tx, connect_blocking, journal_version

        conn = connect_blocking(self.url, autocommit=True)
        try:
            return journal_version(Tx(conn)) > 0
        except load_psycopg().Error as exc:
            refused = denied(describe(self.url), "reading", exc)
            raise refused or unreachable(self.url, parse_url(self.url), exc) from None
        finally:
            conn.close()

    def incarnation(self) -> object:
        """Always the same: a reader's connection follows the database, not a file."""
        return self.url

    def writer(
        self, *, synchronous: Synchronous = "FULL", faults: FaultPoints | None = None
    ) -> JournalWriter:
        """The runtime's group-commit writer on this database, not open yet."""
        from .writer import PostgresWriter

        return PostgresWriter(self.url, synchronous=synchronous, faults=faults)

    async def open_reader(self) -> JournalQueries:
        """A reader on the existing journal (`postgres.reader.PostgresReader`)."""
        from .reader import PostgresReader

        return await PostgresReader.open(self.url)

    async def open_views(self) -> DashboardViews:
        """The dashboard's queries over a reader of their own (`postgres.views`)."""
        from .views import PostgresViews

        return await PostgresViews.open(self.url)

    def step_jobs(self) -> PostgresStepJobs:
        """Isolated steps offered to the standbys (`postgres.step_jobs`), not connected yet."""
        from .step_jobs import PostgresStepJobs

        return PostgresStepJobs(self.url)

    def run_tasks(self) -> PostgresRunTasks:
        """Segments of runs offered to executors (`postgres.run_tasks`), not connected yet."""
        from .run_tasks import PostgresRunTasks

        return PostgresRunTasks(self.url)

    def executor_writer(self, token: str) -> ExecutorWriter:
        """The writer of executor `token`'s run segments (`postgres.executor_writer`)."""
        from .executor_writer import ExecutorWriter

        return ExecutorWriter(self.url, token=token)


def open_postgres(url: str) -> PostgresJournal:
    """The journal at `url`, checked (psycopg installed, the URL valid), not connected yet.

    Raises:
        JournalBackendUnavailable: psycopg is not installed (saying how to install it).
        JournalPathInvalid: `url` is not a valid PostgreSQL URL.
    """
    parse_url(url)
    return PostgresJournal(url)

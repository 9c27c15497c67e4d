"""Which backend holds a journal: `open_journal` tells it from ``db``.

``Runtime(db=...)``, ``--db`` and ``$ORCHESTRATOR_DB`` take a file path (SQLite, the
default) or a ``postgresql://`` URL. The runtime, the CLI and the dashboard all get their
journal here, so a new backend plugs in by adding a branch, not by touching them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ValidationError
from .sqlite.backend import SqliteJournal

if TYPE_CHECKING:
    from .protocol import JournalBackend

# A path made of a URL (``Path("postgresql://h/db")``) keeps one slash: match the scheme only.
_POSTGRES_SCHEMES = ("postgresql:", "postgres:")


def is_postgres_url(db: str | os.PathLike[str]) -> bool:
    """Whether `db` names a PostgreSQL journal (a ``postgresql://`` URL), not a file."""
    return os.fspath(db).lower().startswith(_POSTGRES_SCHEMES)


def postgres_url(db: str | os.PathLike[str]) -> str:
    """`db` as libpq reads it: the scheme in lower case, the slash a `Path` dropped put back."""
    scheme, _, rest = os.fspath(db).partition(":")
    if rest.startswith("/") and not rest.startswith("//"):
        rest = "/" + rest  # Path("postgresql://h/d") is "postgresql:/h/d"
    return f"{scheme.lower()}:{rest}"


def open_journal(db: str | os.PathLike[str]) -> JournalBackend:
    """The journal `db` names; nothing is connected or created until it is used.

    Raises:
        JournalBackendUnavailable: `db` is a PostgreSQL URL and psycopg is not installed.
        JournalPathInvalid: `db` is a PostgreSQL URL that is not valid.
    """
    if is_postgres_url(db):
        from .postgres.backend import open_postgres

        return open_postgres(postgres_url(db))
    return SqliteJournal(Path(os.fspath(db)))


@dataclass(frozen=True)
class Migrated:
    """What `migrate_journal` did: where (no password), the schema version before and after."""

    where: str
    before: int
    after: int


async def migrate_journal(db: str | os.PathLike[str]) -> Migrated:
    """Create or upgrade the schema of the PostgreSQL journal `db`, one process at a time.

    Raises:
        ValidationError: `db` is a file path (a SQLite journal migrates when it is opened).
        JournalBackendUnavailable: psycopg is not installed.
        JournalUnreachable: no connection could be made.
        JournalError: the schema is foreign or newer, or a migration failed.
    """
    if not is_postgres_url(db):
        raise ValidationError(
            "a SQLite journal (a file path) migrates itself when it is opened; "
            "`journal migrate` takes a postgresql:// URL"
        )
    from .postgres import connection, schema

    url = postgres_url(db)
    done = await schema.migrate(url)
    return Migrated(connection.describe(url), done.before, done.after)

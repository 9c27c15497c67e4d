"""`open_postgres`: where `open_journal` sends a ``postgresql://`` URL.

The backend does not implement the journal protocol yet (docs/POSTGRES.md), so a URL is
checked (psycopg installed, the URL valid) and then refused, saying so: a runtime, a daemon,
a command or the dashboard on it fails at once with one clear line, never later or halfway.
"""

from __future__ import annotations

from typing import NoReturn

from ...errors import JournalBackendUnavailable
from .connection import parse_url

NOT_COMPLETE = (
    "the PostgreSQL journal is not complete yet: only `orchestrator journal migrate` "
    "works on a postgresql:// URL for now; pass a file path to use a SQLite journal"
)


def open_postgres(url: str) -> NoReturn:
    """Check `url`, then refuse it until the backend is complete.

    Raises:
        JournalBackendUnavailable: psycopg is not installed (saying how to install it),
            or, always for now, the backend is not complete.
        JournalPathInvalid: `url` is not a valid PostgreSQL URL.
    """
    parse_url(url)
    raise JournalBackendUnavailable(NOT_COMPLETE)

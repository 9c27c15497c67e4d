"""Which backend holds a journal: `open_journal` tells it from ``db``.

``Runtime(db=...)``, ``--db`` and ``$ORCHESTRATOR_DB`` take a file path (SQLite, the
default) or a ``postgresql://`` URL. The runtime, the CLI and the dashboard all get their
journal here, so a new backend plugs in by adding a branch, not by touching them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import JournalBackendUnavailable
from .sqlite.backend import SqliteJournal

if TYPE_CHECKING:
    from .protocol import JournalBackend

# A path made of a URL (``Path("postgresql://h/db")``) keeps one slash: match the scheme only.
_POSTGRES_SCHEMES = ("postgresql:", "postgres:")


def open_journal(db: str | os.PathLike[str]) -> JournalBackend:
    """The journal `db` names; nothing is connected or created until it is used.

    Raises:
        JournalBackendUnavailable: `db` is a PostgreSQL URL; that backend is not available yet.
    """
    text = os.fspath(db)
    if text.lower().startswith(_POSTGRES_SCHEMES):
        # The URL is not repeated: it may carry a password.
        raise JournalBackendUnavailable(
            "the PostgreSQL journal backend is not available yet; "
            "pass a file path to use a SQLite journal"
        )
    return SqliteJournal(Path(text))

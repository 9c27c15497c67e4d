"""Run ids by prefix: the one query, for the reader and for the commands of another process.

It reads a range of the ``runs.run_id`` UNIQUE index (``run_id >= prefix AND run_id <
past``), never a ``LIKE`` (which SQLite does not run on an index under its default
case-insensitive ``LIKE``): finding the runs of a 4-character prefix among 1,000,000 reads
a few index entries. No aiosqlite here: the CLI's writing commands resolve a prefix
without an event loop.
"""

from __future__ import annotations

from typing import Any

from ..decoding import run_matches, text_after

# The first `?3` runs of the range, by id, each with how many the range holds in all (an
# uncorrelated subquery: counted once, on the index alone).
SQL = (
    "SELECT run_id, workflow_id, status,"
    " (SELECT count(*) FROM runs WHERE run_id >= ?1 AND run_id < ?2)"
    " FROM runs WHERE run_id >= ?1 AND run_id < ?2 ORDER BY run_id LIMIT ?3"
)


def params(prefix: str, limit: int) -> tuple[Any, ...]:
    """The parameters of `SQL` for the runs whose id starts with `prefix`."""
    return prefix, past(prefix), limit


def past(prefix: str) -> str | bytes:
    """The least value above every text that starts with `prefix`, in SQLite's order.

    SQLite compares text as UTF-8 bytes, which sort as code points do (`text_after`).
    Past a prefix of U+10FFFF alone, a BLOB: SQLite sorts every BLOB after every text.
    """
    return text_after(prefix) or b"\xff"


matches = run_matches  # `SQL`'s rows as `RunMatches`

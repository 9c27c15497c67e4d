"""Run ids by prefix: the one query, for the reader and for the commands of another process.

It reads a range of the ``runs.run_id`` UNIQUE index (``run_id >= prefix AND run_id <
past``), never a ``LIKE`` (which SQLite does not run on an index under its default
case-insensitive ``LIKE``): finding the runs of a 4-character prefix among 1,000,000 reads
a few index entries. No aiosqlite here: the CLI's writing commands resolve a prefix
without an event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..records import RunMatch, RunMatches

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

    SQLite compares text as UTF-8 bytes, which sort as code points do: the prefix with its
    last character one higher (after dropping trailing U+10FFFF, which has none higher).
    Past a prefix of U+10FFFF alone, a BLOB: SQLite sorts every BLOB after every text.
    """
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return b"\xff"
    code = ord(stem[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # surrogates are no characters: the next one is U+E000
        code = 0xE000
    return stem[:-1] + chr(code)


def matches(rows: Iterable[Sequence[Any]]) -> RunMatches:
    """`SQL`'s rows as `RunMatches` (no rows: no run starts with the prefix)."""
    found = tuple(rows)
    runs = tuple(RunMatch(row[0], row[1], row[2]) for row in found)
    return RunMatches(runs, int(found[0][3]) if found else 0)

"""Run ids by prefix on PostgreSQL: one range of an index, never a ``LIKE``.

SQLite compares text as UTF-8 bytes; a PostgreSQL database compares it by its collation
(``en_US.UTF-8`` sorts ``a-b`` near ``ab``), under which a range is not a prefix. So the
range is compared ``COLLATE "C"`` (bytes, the code points' order, as SQLite), read from
the index of ``run_id``, a column of that collation (schema migration 3): finding the runs
of a short prefix among a million reads a few index entries, in SQLite's order.
No psycopg here: the same SQL serves the reader and the CLI's synchronous commands.
"""

from __future__ import annotations

from typing import Any

from ..decoding import run_matches, text_after

_RANGE = 'run_id COLLATE "C" >= %(prefix)s AND run_id COLLATE "C" < %(past)s'
_FROM = 'run_id COLLATE "C" >= %(prefix)s'


def sql(prefix: str) -> str | None:
    """The query of the runs whose id starts with `prefix` (None: no run id can).

    Its rows are the first ``%(limit)s`` runs of the range, by id, each with how many the
    range holds in all (an uncorrelated subquery: counted once, on the index alone).
    """
    if "\x00" in prefix:
        return None  # PostgreSQL text holds no NUL: no run id has one
    where = _RANGE if past(prefix) is not None else _FROM
    return (
        f"SELECT run_id, workflow_id, status, (SELECT count(*) FROM runs WHERE {where})"
        f' FROM runs WHERE {where} ORDER BY run_id COLLATE "C" LIMIT %(limit)s'
    )


def params(prefix: str, limit: int) -> dict[str, Any]:
    """The parameters of `sql` for the runs whose id starts with `prefix`."""
    return {"prefix": prefix, "past": past(prefix), "limit": limit}


def past(prefix: str) -> str | None:
    """The least text above every text that starts with `prefix` (None: no text is)."""
    return text_after(prefix)


matches = run_matches  # `sql`'s rows as `RunMatches`

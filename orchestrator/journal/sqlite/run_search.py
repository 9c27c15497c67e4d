"""The dashboard's run list on a journal of a million runs: counts and search by index.

Counts come from ``run_counts`` (migration 18: kept by triggers in each write's own
transaction), never from a scan of the runs.

A search matches the runs whose id starts with the text, or whose workflow, trigger, error
or error code contains it (ASCII case-insensitive, as SQL LIKE). Each part is read through
an index: the run id's, the small ``run_counts`` table for the workflows and triggers whose
name matches (and how many runs each has), the partial index of runs with an error. When
the matched workflows and triggers hold many runs, matches are dense and a page is found by
reading runs in the list's order until it is full; otherwise the page is taken from the
matches' ids alone. Either way the total is counted by index.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from ..view_records import RunFilter
from .reader import JournalReader

# Runs of matched workflows and triggers past which a page is read in order (they are dense).
DENSE: Final = 5_000
# Matched pairs read one index range each at most (a UNION has at most 500 terms).
_MAX_PAIRS: Final = 100
_ESC = "ESCAPE '\\'"
_PREFIX_END = "\U0010ffff"  # sorts after every character a run id may continue with


def like(text: str) -> str:
    """A LIKE pattern that finds `text` literally anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def total(reader: JournalReader, status: str | None, workflow: str | None) -> int:
    """How many runs of `status` and `workflow` (None: any) the journal has."""
    rows = await reader.fetch(
        "SELECT coalesce(sum(n), 0) FROM run_counts"
        " WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow_id = ?2)",
        [status, workflow],
    )
    return int(rows[0][0])


async def status_counts(reader: JournalReader, workflow: str | None) -> dict[str, int]:
    """How many runs are in each status (of one workflow, or all); statuses with none left out."""
    rows = await reader.fetch(
        "SELECT status, sum(n) FROM run_counts WHERE ?1 IS NULL OR workflow_id = ?1"
        " GROUP BY status HAVING sum(n) > 0",
        [workflow],
    )
    return {str(row[0]): int(row[1]) for row in rows}


async def search(
    reader: JournalReader,
    wanted: RunFilter,
    *,
    select: str,
    where: str,
    params: list[Any],
    order: str,
    offset: int,
    limit: int,
) -> tuple[list[sqlite3.Row], int]:
    """One page of the runs `wanted.search` matches among those `where` selects, and how many.

    `select` is the column list over ``runs r``; `where` and `params` say `wanted`'s status
    and workflow filters over ``runs r``.
    """
    text = wanted.search.strip()
    pattern = like(text)
    # Matched (workflow, trigger) pairs, with their runs of the filters' status and workflow.
    pairs = await reader.fetch(
        "SELECT workflow_id, trigger_id, sum(n) FROM run_counts"
        f" WHERE n > 0 AND (workflow_id LIKE ?1 {_ESC} OR trigger_id LIKE ?1 {_ESC})"
        " AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR workflow_id = ?3)"
        " GROUP BY workflow_id, trigger_id",
        [pattern, wanted.status, wanted.workflow],
    )
    # Ids that start with the text (as typed, and in lower case: generated ids are), and
    # runs with an error that matches (the partial index `runs_errors`).
    starts = sorted({text, text.lower()})
    sparse = [
        *(
            ("SELECT id FROM runs WHERE run_id >= ? AND run_id < ?", [s, s + _PREFIX_END])
            for s in starts
        ),
        (
            "SELECT id FROM runs WHERE error IS NOT NULL"
            f" AND (error LIKE ? {_ESC} OR error_code LIKE ? {_ESC})",
            [pattern, pattern],
        ),
    ]
    in_pairs = ", ".join("(?, ?)" for _ in pairs)
    pair_params = [value for pair in pairs for value in pair[:2]]
    matched = sum(int(pair[2]) for pair in pairs)
    if matched <= DENSE and len(pairs) <= _MAX_PAIRS:
        parts = sparse + [
            ("SELECT id FROM runs WHERE workflow_id = ? AND trigger_id = ?", list(pair[:2]))
            for pair in pairs
        ]
        ids = " UNION ".join(sql for sql, _ in parts)
        ids_params = [value for _, part in parts for value in part]
        chosen = f"r.id IN ({ids}) AND {where}"
        rows = await reader.fetch(
            f"SELECT {select} FROM runs r WHERE {chosen} ORDER BY {order} LIMIT ? OFFSET ?",
            [*ids_params, *params, limit, offset],
        )
        counted = await reader.fetch(
            f"SELECT count(*) FROM runs r WHERE {chosen}", [*ids_params, *params]
        )
        return rows, int(counted[0][0])
    # Dense: read in order until the page is full; count the pairs' runs from run_counts.
    predicate = " OR ".join(
        [
            *("(r.run_id >= ? AND r.run_id < ?)" for _ in starts),
            f"r.workflow_id LIKE ? {_ESC}",
            f"r.trigger_id LIKE ? {_ESC}",
            f"r.error LIKE ? {_ESC}",
            f"r.error_code LIKE ? {_ESC}",
        ]
    )
    predicate_params = [*(v for s in starts for v in (s, s + _PREFIX_END)), *[pattern] * 4]
    rows = await reader.fetch(
        f"SELECT {select} FROM runs r WHERE ({predicate}) AND {where}"
        f" ORDER BY {order} LIMIT ? OFFSET ?",
        [*predicate_params, *params, limit, offset],
    )
    # The total: the pairs' runs, and the other matches outside those pairs.
    ids = " UNION ".join(sql for sql, _ in sparse)
    ids_params = [value for _, part in sparse for value in part]
    others = await reader.fetch(
        f"SELECT count(*) FROM runs r WHERE r.id IN ({ids}) AND {where}"
        f" AND (r.workflow_id, r.trigger_id) NOT IN (VALUES {in_pairs})",
        [*ids_params, *params, *pair_params],
    )
    return rows, matched + int(others[0][0])

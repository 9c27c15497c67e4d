"""The dashboard's run list on PostgreSQL: counts from ``run_counts``, search by index.

The same plan as SQLite's (``sqlite/run_search.py``): counts come from ``run_counts``,
kept by the ``runs_changed()`` trigger in each write's own transaction; a search matches
the runs whose id starts with the text, or whose workflow, trigger, error or error code
contains it. The matched workflows and triggers are found in the small ``run_counts``
table; when they hold many runs the page is read in the list's order until it is full,
otherwise it is taken from the matches' ids alone.

Text is compared as SQLite compares it, whatever the database's locale:

- "contains" is ASCII case-insensitive, as SQLite's LIKE: ``ILIKE`` under ``COLLATE
  "C"``, whose case folding is ASCII's only. Under the database's own collation ``ILIKE``
  would also fold ``É`` and ``é`` (most locales, ICU); ``translate`` of A-Z on both sides
  is as exact but five times slower (measured: 420 ms against 85 ms over the 25,000
  errors of a journal of 1,000,000 runs);
- an id prefix is a range in byte order (``COLLATE "C"``: SQLite's BINARY), so a
  database whose default collation is a language's still finds exactly the ids that
  start with the text. The ``run_id`` index serves that range where the column sorts in
  byte order already (a database in libc's C or C.UTF-8, or the column declared ``COLLATE
  "C"``): no COLLATE is written then; elsewhere the range is a scan of the runs
  (docs/POSTGRES.md, "The dashboard's views").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..view_records import RunFilter

if TYPE_CHECKING:
    from .reader import PostgresReader, Row

# Runs of matched workflows and triggers past which a page is read in order (they are dense).
DENSE: Final = 5_000
# Matched pairs read one index range each at most.
_MAX_PAIRS: Final = 100
_PREFIX_END = "\U0010ffff"  # sorts after every character a run id may continue with
# The conditions of the partial indexes of errors (schema migration 3), word for word: an
# error that fits in a btree entry beside its code, and one that does not.
_ERROR_BYTES = "octet_length(error) + coalesce(octet_length(error_code), 0)"
_ERROR_SIZES = (f"{_ERROR_BYTES} <= 2000", f"{_ERROR_BYTES} > 2000")


def contains(column: str) -> str:
    """SQL: `column` contains the pattern bound next (made by `like`), ASCII case-insensitive."""
    return f"{column} COLLATE \"C\" ILIKE %s ESCAPE '\\'"


def like(text: str) -> str:
    """The pattern `contains` binds: `text` anywhere, literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def prefix(column: str, collate: str) -> str:
    """SQL: `column` starts with the text whose two bounds (`bounds`) are bound next.

    `collate` makes `column` compare in byte order (nothing if it does already).
    """
    return f"({column}{collate} >= %s AND {column}{collate} < %s)"


def bounds(text: str) -> list[str]:
    """The range of ids that start with `text`, in byte order."""
    return [text, text + _PREFIX_END]


async def total(reader: PostgresReader, status: str | None, workflow: str | None) -> int:
    """How many runs of `status` and `workflow` (None: any) the journal has."""
    rows = await reader.fetch(
        "SELECT coalesce(sum(n), 0) FROM run_counts"
        " WHERE (%s::text IS NULL OR status = %s) AND (%s::text IS NULL OR workflow_id = %s)",
        [status, status, workflow, workflow],
    )
    return int(rows[0][0])


async def status_counts(reader: PostgresReader, workflow: str | None) -> dict[str, int]:
    """How many runs are in each status (of one workflow, or all); statuses with none left out."""
    rows = await reader.fetch(
        "SELECT status, sum(n) FROM run_counts WHERE %s::text IS NULL OR workflow_id = %s"
        ' GROUP BY status HAVING sum(n) > 0 ORDER BY status COLLATE "C"',
        [workflow, workflow],
    )
    return {str(row[0]): int(row[1]) for row in rows}


def _limit(limit: int) -> int | None:
    """SQLite's LIMIT: a negative one means no limit (PostgreSQL's ``LIMIT NULL``)."""
    return None if limit < 0 else limit


async def search(
    reader: PostgresReader,
    wanted: RunFilter,
    *,
    select: str,
    where: str,
    params: list[Any],
    order: str,
    offset: int,
    limit: int,
    collate: str,
) -> tuple[list[Row], int]:
    """One page of the runs `wanted.search` matches among those `where` selects, and how many.

    `select` is the column list over ``runs r``; `where` and `params` say `wanted`'s status
    and workflow filters over ``runs r``; `collate` makes run ids compare in byte order.
    """
    text = wanted.search.strip()
    if "\x00" in text:  # PostgreSQL's text holds no NUL (`journal copy` refuses one): no match
        return [], 0
    pattern = like(text)
    # Matched (workflow, trigger) pairs, with their runs of the filters' status and workflow.
    pairs = await reader.fetch(
        "SELECT workflow_id, trigger_id, sum(n) FROM run_counts"
        f" WHERE n > 0 AND ({contains('workflow_id')} OR {contains('trigger_id')})"
        " AND (%s::text IS NULL OR status = %s) AND (%s::text IS NULL OR workflow_id = %s)"
        " GROUP BY workflow_id, trigger_id",
        [pattern, pattern, wanted.status, wanted.status, wanted.workflow, wanted.workflow],
    )
    # Ids that start with the text (as typed, and in lower case: generated ids are), and
    # runs with an error that matches (the partial indexes `runs_errors_short`, read alone,
    # and `runs_errors_long`).
    starts = sorted({text, text.lower()})
    sparse: list[tuple[str, list[Any]]] = [
        *((f"SELECT id FROM runs WHERE {prefix('run_id', collate)}", bounds(s)) for s in starts),
        *(
            (
                f"SELECT id FROM runs WHERE error IS NOT NULL AND {size}"
                f" AND ({contains('error')} OR {contains('error_code')})",
                [pattern, pattern],
            )
            for size in _ERROR_SIZES
        ),
    ]
    pair_params = [value for pair in pairs for value in pair[:2]]
    matched = sum(int(pair[2]) for pair in pairs)
    if matched <= DENSE and len(pairs) <= _MAX_PAIRS:
        parts = sparse + [
            ("SELECT id FROM runs WHERE workflow_id = %s AND trigger_id = %s", list(pair[:2]))
            for pair in pairs
        ]
        ids = " UNION ".join(sql for sql, _ in parts)
        ids_params = [value for _, part in parts for value in part]
        chosen = f"r.id IN ({ids}) AND {where}"
        # The page and the total in one reading of the matches (SQLite reads them twice).
        rows = await reader.fetch(
            f"SELECT {select}, count(*) OVER () AS matched FROM runs r WHERE {chosen}"
            f" ORDER BY {order} LIMIT %s OFFSET %s",
            [*ids_params, *params, _limit(limit), offset],
        )
        if rows:
            return rows, int(rows[0]["matched"])
        if not offset and limit:  # the first page is empty: nothing matches
            return rows, 0
        counted = await reader.fetch(  # a page past the end: the total alone
            f"SELECT count(*) FROM runs r WHERE {chosen}", [*ids_params, *params]
        )
        return rows, int(counted[0][0])
    # Dense: read in order until the page is full; count the pairs' runs from run_counts.
    predicate = " OR ".join(
        [
            *(prefix("r.run_id", collate) for _ in starts),
            contains("r.workflow_id"),
            contains("r.trigger_id"),
            contains("r.error"),
            contains("r.error_code"),
        ]
    )
    predicate_params = [*(v for s in starts for v in bounds(s)), *[pattern] * 4]
    rows = await reader.fetch(
        f"SELECT {select} FROM runs r WHERE ({predicate}) AND {where}"
        f" ORDER BY {order} LIMIT %s OFFSET %s",
        [*predicate_params, *params, _limit(limit), offset],
    )
    # The total: the pairs' runs, and the other matches outside those pairs.
    ids = " UNION ".join(sql for sql, _ in sparse)
    ids_params = [value for _, part in sparse for value in part]
    in_pairs = ", ".join("(%s::text, %s::text)" for _ in pairs)
    others = await reader.fetch(
        f"SELECT count(*) FROM runs r WHERE r.id IN ({ids}) AND {where}"
        f" AND (r.workflow_id, r.trigger_id) NOT IN (VALUES {in_pairs})",
        [*ids_params, *params, *pair_params],
    )
    return rows, matched + int(others[0][0])

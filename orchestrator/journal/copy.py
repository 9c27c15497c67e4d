"""`journal copy SRC DST`: a SQLite journal moved into an empty PostgreSQL one, ids kept.

The source is read under its write lock and never changed (`sqlite.export`); the
destination is written in one transaction (`postgres.load`), so it ends with every row or
none. Runs, events, commands and waits keep their ids, so a run id a user noted, a paused
run's wait and a pending command all carry over: a daemon started on the destination goes
on where the last one on the source stopped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import JournalError, ValidationError
from .backends import is_postgres_url, postgres_url

# Every table a journal holds, in the order the destination's foreign keys need.
COPIED = (
    "workflow_versions",
    "runs",
    "checkpoints",
    "snapshots",
    "timeline",
    "events",
    "event_routes",
    "waits",
    "wait_buffer",
    "schedule_state",
    "inbox",
    "workflows",
    "load_errors",
    "files_seen",
    "recoveries",
    "idempotency_keys",
    "switches",
    "prune_marks",
    "children",
)
# SQLite tables not copied, and why.
LEFT_BEHIND = {
    "lease": "which process runs the file; PostgreSQL records its daemons itself",
    "run_counts": "recounted by the destination's trigger as the runs go in",
}


@dataclass(frozen=True)
class CopyReport:
    """What a copy moved: where from, where to (no password), rows per table, how long."""

    source: str
    destination: str
    rows: dict[str, int]
    seconds: float


async def copy_journal(source: str | os.PathLike[str], destination: str) -> CopyReport:
    """Copy the SQLite journal `source` into the empty PostgreSQL journal `destination`.

    Raises:
        ValidationError: `source` is not a file path or `destination` not a postgresql:// URL.
        JournalLocked: A daemon runs on `source`.
        JournalError: `source` is no journal, `destination` holds one already, or a row
            cannot be stored as it is (nothing is written then).
        JournalUnreachable: `destination` cannot be reached.
    """
    if is_postgres_url(source):
        raise ValidationError("journal copy reads a SQLite journal: SRC is a file path")
    if not is_postgres_url(destination):
        raise ValidationError(
            "journal copy writes a PostgreSQL journal: DST is a postgresql:// URL"
        )
    from .postgres.connection import describe
    from .postgres.load import TableRows, columns_of, load
    from .sqlite.export import check_source, exported

    began = time.monotonic()
    url = postgres_url(destination)
    check_source(Path(os.fspath(source)))  # bad input here, before the server is reached
    target = await columns_of(url)  # migrates the destination first
    with exported(Path(os.fspath(source))) as export:
        present = export.tables()
        unknown = ", ".join(sorted(present - set(COPIED) - set(LEFT_BEHIND)))
        if unknown:
            raise JournalError(
                f"{source} holds tables this orchestrator does not know ({unknown}): "
                "it was written by a newer version; copy it with that version"
            )
        tables = []
        for name in COPIED:
            if name not in present:
                continue
            columns = export.columns(name)
            lost = [c for c in columns if c not in target.get(name, ())]
            if lost:
                raise JournalError(
                    f"table {name} has columns the PostgreSQL journal lacks ({', '.join(lost)}); "
                    "nothing was copied: upgrade the orchestrator"
                )
            tables.append(TableRows(name, columns, export.rows(name, columns)))
        rows = await load(url, tables)
    return CopyReport(str(source), describe(url), rows, time.monotonic() - began)

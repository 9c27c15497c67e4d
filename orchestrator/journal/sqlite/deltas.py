"""Checkpoints as deltas on SQLite: the SQL that reads them (`state_of`) and keeps snapshots.

The rows and the patches are the backend-neutral `journal.deltas` (re-exported here):
reading any checkpoint is one snapshot and one patch, in SQL (`state_of`, SQLite's
``json_patch``): no chain of deltas, so `show`, the dashboard, recovery, retry and fork read
a checkpoint at once, and every reader shares one expression.
"""

from __future__ import annotations

from ..deltas import (
    CACHE_CHARS,
    MAX_DELTA_CHARS,
    MAX_DELTA_RATIO,
    MIN_DELTA_CHARS,
    SPAN,
    SPILL_CHARS,
    Deltas,
    merge_patch,
    snapshot_id,
)

__all__ = [
    "CACHE_CHARS",
    "MAX_DELTA_CHARS",
    "MAX_DELTA_RATIO",
    "MIN_DELTA_CHARS",
    "SNAPSHOT_SQL",
    "SPILL_CHARS",
    "Deltas",
    "merge_patch",
    "snapshot_id",
    "state_of",
]

# What a checkpoint whose snapshot is missing or damaged reads as: not JSON, so readers
# show it as unreadable instead of failing.
_UNREADABLE = "'unreadable: a delta checkpoint whose snapshot is missing or damaged'"

SNAPSHOT_SQL = "INSERT OR REPLACE INTO snapshots (id, state) VALUES (?, ?)"


def _whole(alias: str) -> str:
    """The whole state of `alias`, a checkpoint row known to be a snapshot."""
    return (
        f"CASE WHEN {alias}.base IS NULL THEN {alias}.state ELSE (SELECT s.state FROM"
        f" snapshots s WHERE s.id = {alias}.run * {SPAN} + {alias}.position) END"
    )


def state_of(alias: str) -> str:
    """The SQL expression of the whole state of checkpoint row `alias` (snapshot or patch)."""
    return (
        f"CASE WHEN {alias}.base IS NULL THEN {alias}.state"
        f" WHEN {alias}.base = {alias}.position THEN coalesce(({_whole(alias)}), {_UNREADABLE})"
        " ELSE coalesce((SELECT CASE WHEN json_valid(w.state) AND"
        f" json_valid({alias}.state) THEN json_patch(w.state, {alias}.state) END"
        f" FROM (SELECT {_whole('b')} AS state FROM checkpoints b"
        f" WHERE b.run = {alias}.run AND b.position = {alias}.base"
        " AND (b.base IS NULL OR b.base = b.position)) w),"
        f" {_UNREADABLE}) END"
    )

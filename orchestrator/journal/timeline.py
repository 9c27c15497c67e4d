"""A run's timeline, assembled from what the journal already holds.

Step and run lifecycle entries are not stored twice: each committed checkpoint says when
its step started and ended, and the run row says when the run began, where it is now and
how it ended. Only what has no other home (logs, retries, recoveries, ...) is a timeline
row. This module merges the three into one ordered list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from ..clock import to_datetime
from ..records import FINAL_STATUSES, RunStatus, TimelineEntry

_END = 1 << 30  # position of entries that come after every step
# Rank breaks ties between entries with the same timestamp and position.
_STARTED, _ROW, _COMPLETED, _FINAL = 0, 1, 2, 3
SortKey = tuple[int, int, int, int]
# Rows that say how a run was admitted when it did not simply start: queued (its own
# run.started row comes when its turn does), refused, or started in another's place.
_ADMITTED_OTHERWISE = frozenset({"run.started", "run.queued", "run.dropped", "run.rejected"})


class Row(Protocol):
    """A row whose columns are read by name (a backend's row type, e.g. ``sqlite3.Row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


def assemble_timeline(
    run: Row, checkpoints: Sequence[Row], rows: Sequence[Row]
) -> list[TimelineEntry]:
    """Merge a run row, its checkpoints (position > 0) and its timeline rows, in order."""
    keyed: list[tuple[SortKey, TimelineEntry]] = []
    # A retried run: how it was admitted is its first attempt's; how it ended, its last's.
    retries = [seq for seq, row in enumerate(rows) if row["kind"] == "run.retried"]
    first = rows[: retries[0]] if retries else rows
    recorded = {row["kind"] for row in (rows[retries[-1] + 1 :] if retries else rows)}
    if not {row["kind"] for row in first} & _ADMITTED_OTHERWISE:  # it started as created
        keyed.append(
            ((run["created_at"], -1, _STARTED, 0), _entry(run["created_at"], "run.started"))
        )
    for ckpt in checkpoints:
        index, name = ckpt["position"] - 1, ckpt["step"]
        duration_ms = (ckpt["ended_at"] - ckpt["started_at"]) / 1000
        keyed.append(
            (
                (ckpt["started_at"], index, _STARTED, 0),
                _entry(ckpt["started_at"], "step.started", step=name),
            )
        )
        keyed.append(
            (
                (ckpt["ended_at"], index, _COMPLETED, 0),
                _entry(
                    ckpt["ended_at"], "step.completed", step=name, data={"duration_ms": duration_ms}
                ),
            )
        )
    if _step_began(run, rows):
        at = run["step_started_at"]
        keyed.append(
            ((at, run["position"], _STARTED, 0), _entry(at, "step.started", step=run["step"]))
        )
    for seq, row in enumerate(rows):
        position = row["position"] if row["position"] is not None else _END
        keyed.append(((row["at"], position, _ROW, seq), row_entry(row)))
    if run["status"] in FINAL_STATUSES and f"run.{run['status']}" not in recorded:
        at = run["updated_at"]
        data = {"code": run["error_code"]} if run["error_code"] else None
        keyed.append(
            (
                (at, _END, _FINAL, 0),
                _entry(at, f"run.{run['status']}", message=run["error"], data=data),
            )
        )
    keyed.sort(key=lambda pair: pair[0])
    return [entry for _, entry in keyed]


def _step_began(run: Row, rows: Sequence[Row]) -> bool:
    """Whether the run's current step began and has no checkpoint: it runs, or it failed."""
    if run["step"] is None or not run["step_started_at"]:
        return False
    if run["status"] == RunStatus.RUNNING:
        return True
    return any(row["kind"] == "step.failed" and row["position"] == run["position"] for row in rows)


def _entry(
    at: int,
    kind: str,
    *,
    step: str | None = None,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> TimelineEntry:
    return TimelineEntry(
        at=to_datetime(at), source="runtime", kind=kind, message=message, data=data, step=step
    )


def row_entry(row: Row) -> TimelineEntry:
    """A stored timeline row as an entry (its data decoded)."""
    data = loads_or_text(row["data"])
    return TimelineEntry(
        at=to_datetime(row["at"]),
        source=row["source"],
        kind=row["kind"],
        message=row["message"],
        data=data,
        step=row["step"],
    )


def loads_or_text(text: Any) -> Any:
    """JSON text decoded; anything else (None), or text that does not decode, as it is.

    For what is shown: a row no process should have written is shown as its text.
    """
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text

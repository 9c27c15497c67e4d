"""Dashboard rows decoded into `view_records`: the same Python for every backend.

A backend's views select the columns; these helpers turn its rows (read by position or by
column name, as ``sqlite3.Row`` and the PostgreSQL reader's rows are) into records,
defensively: a timestamp that is not a number comes back as ``None``, a status or code
that is not one of the enums as its text, JSON that does not parse as its text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from ..clock import to_datetime
from ..records import RunCode, RunStatus
from .timeline import loads_or_text
from .view_records import (
    EventView,
    RouteView,
    RunRow,
    WaitView,
    WorkflowFigures,
    WorkflowView,
)

_Member = TypeVar("_Member", bound=StrEnum)


class Row(Protocol):
    """A row whose columns are read by position or by name."""

    def __getitem__(self, key: Any, /) -> Any: ...


def when(value: Any) -> datetime | None:
    """A journal timestamp as a datetime, or None when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return to_datetime(int(value))
    except (ValueError, OverflowError, OSError):
        return None


def member(vocabulary: type[_Member], value: Any) -> _Member | str:
    """`value` as a member of `vocabulary`, or as text if it is not one of its values."""
    try:
        return vocabulary(value)
    except ValueError:
        return str(value)


def run_row(row: Row) -> RunRow:
    """A run of the list, from the columns run_id ... updated_at, read by name."""
    return RunRow(
        run_id=str(row["run_id"]),
        workflow_id=str(row["workflow_id"]),
        trigger_id=str(row["trigger_id"]),
        status=member(RunStatus, str(row["status"])),
        step=row["step"],
        error=row["error"],
        error_code=None if row["error_code"] is None else member(RunCode, row["error_code"]),
        version=str(row["version"]),
        created_at=when(row["created_at"]),
        updated_at=when(row["updated_at"]),
    )


def event_view(row: Row) -> EventView:
    """An event from (event_id, type, data, source, created_at, routed_at), no routes."""
    return EventView(
        event_id=str(row[0]),
        type=str(row[1]),
        data=loads_or_text(row[2]),
        source=str(row[3]),
        created_at=when(row[4]),
        routed_at=when(row[5]),
    )


def workflow_view(row: Row, off: dict[str, dict[str, int]]) -> WorkflowView:
    """A workflow from (workflow_id, version, file, triggers, mode, loaded_at).

    `off` is what is disabled, by workflow (key ``""``: the whole workflow), since when.
    """
    disabled = dict(off.get(str(row[0]), {}))
    since = disabled.pop("", None)
    return WorkflowView(
        workflow_id=str(row[0]),
        version=str(row[1]),
        file=row[2],
        triggers=loads_or_text(row[3]),
        mode=str(row[4]),
        loaded_at=when(row[5]),
        disabled_at=None if since is None else when(since),
        disabled_triggers=frozenset(disabled),
    )


def workflow_figures(row: Row) -> WorkflowFigures:
    """Figures from (workflow_id, runs, failed, durations, next_tick).

    `durations` is a JSON list as text, or a list already decoded (microseconds).
    """
    workflow_id, runs, failed, next_tick = row[0], row[1], row[2], row[4]
    taken = loads_or_text(row[3])
    return WorkflowFigures(
        workflow_id=str(workflow_id),
        runs=int(runs),
        failed=int(failed),
        durations=tuple(
            max(0.0, d / 1_000_000)
            for d in (taken if isinstance(taken, list) else [])
            if isinstance(d, int | float) and not isinstance(d, bool)
        ),
        next_fire=when(next_tick),
    )


def wait_view(row: Row, recent: list[EventView]) -> WaitView:
    """A live wait, with the `recent` events of its type.

    Its columns: id, event_type, conditions, status, into_key, timeout_at, on_timeout,
    created_at, and how many events it buffered.
    """
    return WaitView(
        wait_id=int(row[0]),
        event_type=row[1],
        conditions=loads_or_text(row[2]),
        status=str(row[3]),
        into=row[4],
        timeout_at=when(row[5]),
        on_timeout=str(row[6]),
        created_at=when(row[7]),
        buffered=int(row[8]),
        recent=recent,
    )


def routes_by_event(rows: Iterable[Row]) -> dict[str, list[RouteView]]:
    """Rows (event_id, run_id, workflow_id, action) grouped by event, in their order."""
    routes: dict[str, list[RouteView]] = {}
    for row in rows:
        routes.setdefault(row[0], []).append(RouteView(row[1], row[2], row[3]))
    return routes


def with_routes(events: list[EventView], routes: dict[str, list[RouteView]]) -> list[EventView]:
    """`events`, each with what it did to runs."""
    return [dataclasses.replace(e, routes=routes.get(e.event_id, [])) for e in events]

"""A run's timeline as table rows, with each step's time drawn as a text Gantt bar.

Pure: entries (as the journal layer assembles them) in, rows of literal `Text` out. Times
are offsets from the run's start; a step's bar spans its start to its end on a scale where
the whole run (up to now, while it is not final) fills `GANTT_WIDTH` cells.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Final

from rich.text import Text

from orchestrator.records import FINAL_STATUSES, TimelineEntry

from .format import (
    EVENT_STYLE,
    LEVEL_STYLES,
    RETRIED_STYLE,
    compact_json,
    duration,
    kind_style,
    literal,
)

GANTT_WIDTH: Final = 24
COLUMNS: Final = ("at", "kind", "step", "gantt", "message")
_FINAL_KINDS: Final = frozenset(f"run.{status}" for status in FINAL_STATUSES)


def timeline_rows(entries: list[TimelineEntry], now: datetime) -> list[tuple[str, list[Text]]]:
    """(key, cells) per entry, in order; cells follow `COLUMNS`."""
    if not entries:
        return []
    start = entries[0].at
    ended = entries[-1].kind in _FINAL_KINDS
    end = entries[-1].at if ended else max(entries[-1].at, now)
    bars = _bars(entries, _Scale(start, end), end, ended=ended)
    rows = []
    for index, entry in enumerate(entries):
        offset = (entry.at - start).total_seconds()
        cells = [
            literal(f"+{duration(offset)}", "grey50", single_line=True),
            _kind(entry),
            literal(entry.step or "", single_line=True, limit=30),
            Text(bars.get(index, "").ljust(GANTT_WIDTH), style="cyan", no_wrap=True),
            _message(entry),
        ]
        rows.append((str(index), cells))
    return rows


class _Scale:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1e-6)

    def cell(self, when: datetime) -> float:
        return (when - self.start).total_seconds() / self.span * GANTT_WIDTH

    def bar(self, begin: datetime, end: datetime, char: str = "█") -> str:
        left = min(GANTT_WIDTH - 1, max(0, math.floor(self.cell(begin))))
        right = min(GANTT_WIDTH, max(left + 1, math.ceil(self.cell(end))))
        return " " * left + char * (right - left)


def _bars(
    entries: list[TimelineEntry], scale: _Scale, end: datetime, *, ended: bool
) -> dict[int, str]:
    """Bars on completed and failed steps, and on a step still running (to `end`)."""
    bars: dict[int, str] = {}
    started: dict[str | None, tuple[int, datetime]] = {}
    for index, entry in enumerate(entries):
        if entry.kind == "step.started":
            started[entry.step] = (index, entry.at)
        elif entry.kind == "step.completed":
            begin = started.pop(entry.step, (index, entry.at))[1]
            millis = _duration_ms(entry.data)
            if millis is not None:
                begin = entry.at - timedelta(milliseconds=millis)
            bars[index] = scale.bar(begin, entry.at)
        elif _failed_for_good(entry) and entry.step in started:
            bars[index] = scale.bar(started.pop(entry.step)[1], entry.at)
    if not ended:
        for index, begin in started.values():
            bars[index] = scale.bar(begin, end, "▒")
    return bars


def _failed_for_good(entry: TimelineEntry) -> bool:
    """A step's last failure (not an attempt to be retried)."""
    return entry.kind == "step.failed" and not (entry.data or {}).get("retry")


def _kind(entry: TimelineEntry) -> Text:
    if entry.source == "logger":
        style = LEVEL_STYLES.get(entry.kind, "")
    elif entry.source == "event":
        style = EVENT_STYLE
    elif entry.kind == "step.failed" and (entry.data or {}).get("retry"):
        style = RETRIED_STYLE
    else:
        style = kind_style(entry.kind)
    return literal(entry.kind, style, single_line=True, limit=20)


def _message(entry: TimelineEntry) -> Text:
    if entry.kind == "step.completed":
        millis = _duration_ms(entry.data)
        return literal(duration(millis / 1000) if millis is not None else "", "grey50")
    if entry.message:
        text = entry.message
        code = entry.data.get("code") if isinstance(entry.data, dict) else None
        if code:
            text = f"{code}: {text}"
        return literal(text, single_line=True, limit=300)
    if entry.data is not None:
        return literal(compact_json(entry.data, 300), "grey50", single_line=True)
    return Text("")


def _duration_ms(data: Any) -> float | None:
    value = data.get("duration_ms") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

"""How the CLI prints runs: the stable JSON documented in the README, and plain tables.

JSON timestamps are ISO-8601 UTC strings; field names never change once released.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .records import RunInfo, TimelineEntry


def run_summary(info: RunInfo) -> dict[str, Any]:
    """The fields `runs --json` prints for each run."""
    return {
        "run_id": info.run_id,
        "workflow_id": info.workflow_id,
        "trigger_id": info.trigger_id,
        "status": info.status,
        "step": info.step,
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
        "error": info.error,
    }


def runs_json(runs: Sequence[RunInfo]) -> str:
    """`runs --json`: a list, newest first."""
    return json.dumps([run_summary(info) for info in runs], indent=2, ensure_ascii=False)


def run_json(info: RunInfo, timeline: Sequence[TimelineEntry]) -> str:
    """`show --json`: the summary plus state, version, error code and timeline."""
    document = {
        **run_summary(info),
        "error_code": info.error_code,
        "version": info.version,
        "state": info.state,
        "timeline": [_entry_json(entry) for entry in timeline],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _entry_json(entry: TimelineEntry) -> dict[str, Any]:
    return {
        "at": _iso(entry.at),
        "source": entry.source,
        "kind": entry.kind,
        "step": entry.step,
        "message": entry.message,
        "data": entry.data,
    }


def runs_table(runs: Sequence[RunInfo]) -> str:
    """`runs`: one line a run."""
    if not runs:
        return "no runs"
    header = ("RUN ID", "WORKFLOW", "TRIGGER", "STATUS", "STEP", "CREATED", "DURATION")
    rows = [header] + [
        (
            info.run_id,
            info.workflow_id,
            info.trigger_id,
            info.status,
            info.step or "-",
            _local(info.created_at),
            _duration(info),
        )
        for info in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run_text(info: RunInfo, timeline: Sequence[TimelineEntry]) -> str:
    """`show`: the run, its state and its timeline."""
    lines = [
        f"run       {info.run_id}",
        f"workflow  {info.workflow_id} (trigger {info.trigger_id}, version {info.version})",
        f"status    {info.status}" + (f" at step {info.step}" if info.step else ""),
        f"created   {_local(info.created_at)}   updated {_local(info.updated_at)}",
    ]
    if info.error:
        lines.append(
            f"error     {info.error}" + (f" [{info.error_code}]" if info.error_code else "")
        )
    lines += ["", "state", json.dumps(info.state, indent=2, ensure_ascii=False), "", "timeline"]
    for entry in timeline:
        step = f" [{entry.step}]" if entry.step else ""
        message = f" {entry.message}" if entry.message else ""
        data = f" {json.dumps(entry.data, ensure_ascii=False)}" if entry.data else ""
        lines.append(
            f"  {_local(entry.at, ms=True)}  {entry.source:<8} {entry.kind}{step}{message}{data}"
        )
    return "\n".join(lines)


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local(at: datetime, *, ms: bool = False) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f" if ms else "%Y-%m-%d %H:%M:%S")[
        : 23 if ms else 19
    ]


def _duration(info: RunInfo) -> str:
    seconds = (info.updated_at - info.created_at).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"

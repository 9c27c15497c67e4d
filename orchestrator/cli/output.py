r"""How the CLI prints runs: the stable JSON documented in the README, and plain tables.

JSON timestamps are ISO-8601 UTC strings; field names never change once released.

Human output (tables, `show`, `workflows`, error lines) goes through `escape`: text from
the journal (log lines, errors, state, ids, file paths) is written by steps, workflow files
and other processes, and a raw ESC, BEL or carriage return in it would drive the user's
terminal (retitle it, clear it, hide lines). Such characters are printed as visible escapes
(``\x1b``) instead. JSON output stays exact: `json.dumps` escapes what JSON must.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..clock import to_datetime, to_iso
from ..journal import DaemonRecord, LoadErrorRecord, LogEntry, StandbyRecord, WorkflowRecord
from ..records import FINAL_STATUSES, RunInfo, TimelineEntry

# C0 and C1 controls, DEL, lone surrogates (undecodable bytes), and the Unicode line
# separators and bidirectional overrides that reorder or split what a terminal shows.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    r"\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    r"""`text` as one safe line for a terminal: each control character as a visible escape.

    Newlines and tabs are escaped too (``\n``, ``\t``): a value never splits a line or
    shifts a column. Every human printer (and the CLI's error lines) goes through here.
    """
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _text(lines: Sequence[str]) -> str:
    """Human output made of `lines`: each escaped, then joined (the only newlines kept)."""
    return "\n".join(escape(line) for line in lines)


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


def run_json(info: RunInfo, timeline: Sequence[TimelineEntry], children: Sequence[str] = ()) -> str:
    """`show --json`: the summary plus state, version, error code, family and timeline."""
    document = {
        **run_summary(info),
        "error_code": info.error_code,
        "version": info.version,
        "forked_from": info.forked_from,
        "parent": info.parent,
        "children": list(children),
        "state": info.state,
        "timeline": [_entry_json(entry) for entry in timeline],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _children_lines(children: Sequence[tuple[str, str | None]]) -> list[str]:
    """A fan-out's progress, then its first children with their statuses."""
    counts: dict[str, int] = {}
    for _, status in children:
        counts[status or "not started"] = counts.get(status or "not started", 0) + 1
    final = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"children  {len(children)}, {final} of them final ({parts})"]
    for run_id, status in children[:SHOWN_CHILDREN]:
        lines.append(f"  {run_id}  {status or 'not started'}")
    if len(children) > SHOWN_CHILDREN:
        lines.append(f"  ... and {len(children) - SHOWN_CHILDREN} more (show --json lists all)")
    return lines


def _entry_json(entry: TimelineEntry) -> dict[str, Any]:
    return {
        "at": _iso(entry.at),
        "source": entry.source,
        "kind": entry.kind,
        "step": entry.step,
        "message": entry.message,
        "data": entry.data,
    }


def runs_table(runs: Sequence[RunInfo], now: datetime | None = None) -> str:
    """`runs`: one line a run; a run not final yet shows how long it has been going."""
    if not runs:
        return "no runs"
    now = datetime.now(UTC) if now is None else now
    header = ("RUN ID", "WORKFLOW", "TRIGGER", "STATUS", "STEP", "CREATED", "DURATION")
    rows = [header] + [
        (
            info.run_id,
            info.workflow_id,
            info.trigger_id,
            info.status,
            info.step or "-",
            _local(info.created_at),
            _duration(info, now),
        )
        for info in runs
    ]
    cells = [[escape(cell) for cell in row] for row in rows]  # widths of what is shown
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


SHOWN_CHILDREN = 20  # children listed by `show`; the rest are counted


def _at_step(info: RunInfo) -> str:
    """How a run's step reads after its status: a paused run waits *in* its step."""
    return "in step" if info.status == "paused" else "at step"


def run_text(
    info: RunInfo,
    timeline: Sequence[TimelineEntry],
    children: Sequence[tuple[str, str | None]] = (),
) -> str:
    """`show`: the run, its parent and children, its state and its timeline."""
    lines = [
        f"run       {info.run_id}",
        f"workflow  {info.workflow_id} (trigger {info.trigger_id}, version {info.version or '-'})",
        f"status    {info.status}" + (f" {_at_step(info)} {info.step}" if info.step else ""),
        f"created   {_local(info.created_at)}   updated {_local(info.updated_at)}",
    ]
    if info.forked_from is not None:
        origin = info.forked_from
        lines.append(f"forked    from run {origin['run_id']} at step {origin['step']}")
    if info.parent is not None:
        lines.append(f"parent    run {info.parent}")
    if children:
        lines += _children_lines(children)
    if info.error:
        lines.append(
            f"error     {info.error}" + (f" [{info.error_code}]" if info.error_code else "")
        )
    # json.dumps escapes newlines inside strings: the lines it makes are the layout's own.
    state = json.dumps(info.state, indent=2, ensure_ascii=False).split("\n")
    lines += ["", "state", *state, "", "timeline", *_entry_lines(timeline)]
    return _text(lines)


def _entry_lines(timeline: Sequence[TimelineEntry]) -> list[str]:
    return [line for entry in timeline for line in (_entry_line(entry), *traceback_lines(entry))]


def _entry_line(entry: TimelineEntry) -> str:
    step = f" [{entry.step}]" if entry.step else ""
    message = f" {entry.message}" if entry.message else ""
    shown = {k: v for k, v in (entry.data or {}).items() if k != "traceback"}
    data = f" {json.dumps(shown, ensure_ascii=False)}" if shown else ""
    return f"  {_local(entry.at, ms=True)}  {entry.source:<8} {entry.kind}{step}{message}{data}"


def traceback_of(entry: TimelineEntry) -> str | None:
    """The traceback a failed step's entry carries (``data["traceback"]``), if any."""
    trace = (entry.data or {}).get("traceback")
    return trace if isinstance(trace, str) and trace else None


def traceback_lines(entry: TimelineEntry, indent: str = "      ") -> list[str]:
    """The entry's traceback, one indented line a line (each escaped when printed)."""
    trace = traceback_of(entry)
    return [] if trace is None else [f"{indent}{line}" for line in trace.rstrip("\n").split("\n")]


def log_lines(entries: Sequence[LogEntry]) -> list[str]:
    """`logs`: one line an entry (time, short run id, kind, step, message), tracebacks under."""
    lines: list[str] = []
    for item in entries:
        entry = item.entry
        run = (item.run_id or "-")[:8]
        step = f" [{entry.step}]" if entry.step else ""
        message = f" {entry.message}" if entry.message else ""
        lines.append(f"{_local(entry.at, ms=True)}  {run:<8}  {entry.kind}{step}{message}")
        lines += traceback_lines(entry, "    ")
    return [escape(line) for line in lines]


def log_json_lines(entries: Sequence[LogEntry]) -> list[str]:
    """`logs --json`: one JSON object a line, `show --json`'s timeline entry plus ids."""
    return [
        json.dumps(
            {"id": item.id, "run_id": item.run_id, **_entry_json(item.entry)},
            ensure_ascii=False,
        )
        for item in entries
    ]


def trial_text(info: RunInfo, timeline: Sequence[TimelineEntry], ending: Sequence[str]) -> str:
    """`try`: the run's timeline, one line an entry, then `ending` and the final state."""
    head = f"run {info.run_id} of {info.workflow_id} (trigger {info.trigger_id}), timeline:"
    state = json.dumps(info.state, indent=2, ensure_ascii=False).split("\n")
    return _text([head, *_entry_lines(timeline), "", *ending, "state", *state])


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local(at: datetime, *, ms: bool = False) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f" if ms else "%Y-%m-%d %H:%M:%S")[
        : 23 if ms else 19
    ]


def _duration(info: RunInfo, now: datetime) -> str:
    end = info.updated_at if info.status in FINAL_STATUSES else now
    seconds = max(0.0, (end - info.created_at).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def workflows_document(
    loaded: Sequence[WorkflowRecord],
    errors: Sequence[LoadErrorRecord],
    daemon: DaemonRecord | None,
    standbys: Sequence[StandbyRecord] = (),
) -> dict[str, Any]:
    """`workflows --json`: what the daemon has loaded, what failed, the daemon, its standbys."""
    return {
        "workflows": [
            {
                "workflow_id": w.workflow_id,
                "file": w.file,
                "version": w.version,
                "triggers": [_trigger_object(w, t) for t in w.triggers],
                "mode": w.mode,
                "enabled": w.enabled(),
            }
            for w in loaded
        ],
        "errors": [{"file": e.file, "line": e.line, "message": e.message} for e in errors],
        "daemon": None
        if daemon is None
        else {
            "pid": daemon.pid,
            "started_at": to_iso(daemon.started_at),
            "ready": daemon.ready,
            "degraded": daemon.degraded,
        },
        "standbys": [
            {"pid": s.pid, "host": s.host, "since": to_iso(s.started_at), "running": s.running}
            for s in standbys
        ],
    }


def _trigger_object(workflow: WorkflowRecord, trigger: dict[str, Any]) -> dict[str, Any]:
    """A trigger as journaled, with ``enabled`` (and a schedule's ``next_fire_at``)."""
    trigger_id = str(trigger.get("trigger_id"))
    enabled = workflow.enabled(trigger_id)
    shown = {**trigger, "enabled": enabled}
    if trigger.get("type") == "schedule":
        tick = workflow.next_ticks.get(trigger_id) if enabled else None
        shown["next_fire_at"] = None if tick is None else to_iso(tick)
    return shown


def workflows_json(
    loaded: Sequence[WorkflowRecord],
    errors: Sequence[LoadErrorRecord],
    daemon: DaemonRecord | None,
    standbys: Sequence[StandbyRecord] = (),
) -> str:
    """`workflows --json` as text."""
    document = workflows_document(loaded, errors, daemon, standbys)
    return json.dumps(document, indent=2, ensure_ascii=False)


def workflows_text(
    loaded: Sequence[WorkflowRecord],
    errors: Sequence[LoadErrorRecord],
    daemon: DaemonRecord | None,
    standbys: Sequence[StandbyRecord] = (),
) -> str:
    """`workflows`: the daemon and its standbys, one line a workflow, then load errors."""
    lines = []
    if daemon is None:
        lines.append("daemon: none running (this is what the last one had loaded)")
    else:
        state = "ready" if daemon.ready else "starting"
        lines.append(f"daemon: pid {daemon.pid} on {daemon.host}, {state}")
        if daemon.degraded is not None:
            lines.append(f"daemon: journal writes failing, retrying: {daemon.degraded}")
    for standby in standbys:
        since = _local(to_datetime(standby.started_at))
        running = f", running {standby.running} steps" if standby.running else ""
        lines.append(f"standby: pid {standby.pid} on {standby.host}, since {since}{running}")
    if not loaded:
        lines.append("no workflows loaded")
    for w in loaded:
        triggers = ", ".join(_trigger_text(_trigger_object(w, t)) for t in w.triggers)
        lines.append(f"{w.workflow_id}  {w.version}  {w.file or '(registered in code)'}")
        if w.disabled_at is not None:
            lines.append(f"    DISABLED since {_local(to_datetime(w.disabled_at))}")
        lines.append(f"    mode {w.mode}; triggers: {triggers}")
    for e in errors:
        where = f"{e.file}:{e.line}" if e.line else e.file
        lines.append(f"error: {where}: {e.message}")
    return _text(lines)


def _trigger_text(trigger: dict[str, Any]) -> str:
    kind = trigger.get("type")
    detail = {
        "event": f"event {trigger.get('event')}",
        "schedule": f"cron {trigger.get('cron')!r}",
        "file": f"new {trigger.get('glob')} in {trigger.get('dir')}",
    }.get(str(kind), "invoke only")
    if not trigger.get("enabled", True):
        detail += ", disabled"
    elif trigger.get("next_fire_at"):
        detail += f", next {trigger['next_fire_at']}"
    return f"{trigger.get('trigger_id')} ({detail})"

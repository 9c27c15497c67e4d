"""Why a paused run is still waiting: its wait, and each recent event checked clause by clause.

Pure: `WaitView`s (the wait as journaled and the latest events of its type since it was
registered) in, literal `Text` out. Matching is `orchestrator.conditions`, the same code
the dispatcher runs, so the explanation cannot disagree with the daemon.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from orchestrator.define.conditions import MISSING, ClauseCheck, Conditions
from orchestrator.errors import DefinitionError
from orchestrator.journal import EventView, WaitView
from orchestrator.records import RunStatus

from .format import compact_json, join, literal, short_id, status_style, timestamp


def explain_waits(waits: list[WaitView], status: str, now: datetime) -> Text:
    """What the run waits for and why no event has matched, or why there is no wait."""
    if not waits:
        if status == RunStatus.PAUSED:
            return literal("paused, but no live wait is journaled for this run", "yellow")
        return literal(f"not waiting: the run is {status}", "grey50")
    return Text("\n\n").join(explain_wait(wait, now) for wait in waits)


def explain_wait(wait: WaitView, now: datetime) -> Text:
    """One wait: what it matches, its timeout, and how the latest candidate events fared."""
    if wait.event_type is None:
        until = timestamp(wait.timeout_at, now) if wait.timeout_at else "?"
        paused = status_style(RunStatus.PAUSED)
        return literal(f"sleeping until {until} (wait #{wait.wait_id})", paused)
    try:
        conditions = Conditions.from_json(wait.conditions, label=f"wait #{wait.wait_id}")
    except DefinitionError as exc:
        return literal(f"wait #{wait.wait_id}: conditions cannot be read: {exc}", "red")
    lines = [_header(wait, conditions, now)]
    since = timestamp(wait.created_at, now)
    if not wait.recent:
        lines.append(literal(f"no {wait.event_type} event since {since}", "grey50"))
    else:
        count = len(wait.recent)
        lines.append(literal(f"latest {count} {wait.event_type} event(s) since {since}:"))
        lines.extend(_event_line(event, conditions, now) for event in wait.recent)
    return Text("\n").join(lines)


def _header(wait: WaitView, conditions: Conditions, now: datetime) -> Text:
    state = "waiting" if wait.status == "parked" else "registered (not paused yet)"
    timeout = "none"
    if wait.timeout_at is not None:
        timeout = f"{timestamp(wait.timeout_at, now)}, then {wait.on_timeout}"
    parts = [
        literal(f"{state}: ", status_style(RunStatus.PAUSED)),
        literal(f"{wait.event_type} where {conditions.describe()}", "bold"),
        literal(f"\ninto {wait.into!r} · timeout {timeout} · wait #{wait.wait_id}", "grey50"),
    ]
    if wait.buffered:
        parts.append(literal(f" · {wait.buffered} event(s) buffered", "yellow"))
    return join(*parts)


def _event_line(event: EventView, conditions: Conditions, now: datetime) -> Text:
    where = f"  event {short_id(event.event_id)} at {timestamp(event.created_at, now)}: "
    failed = [check for check in conditions.explain(event.data) if not check.matched]
    if not failed:
        return join(literal(where), literal("matches", "green"))
    reasons = "; ".join(_failure(check) for check in failed)
    return join(literal(where), literal(reasons, "red"))


def _failure(check: ClauseCheck) -> str:
    clause = check.clause
    if clause.op == "exists":
        wanted = f"{clause.path} {'exists' if clause.operand else 'does not exist'}"
    else:
        wanted = f"{clause.path} {clause.op} {compact_json(clause.operand, 60)}"
    actual = "missing" if check.actual is MISSING else compact_json(check.actual, 60)
    return f"{wanted} failed: actual {actual} ({check.reason})"

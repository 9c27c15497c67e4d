"""Turning journal values into literal, styled text: statuses, times, durations, JSON.

Every piece of text that comes from the journal (ids, logs, state, errors) reaches the
screen through `literal`, as a `rich.text.Text` built from the plain string: markup such as
``[bold]`` or ``[link=...]`` is shown as typed, and control characters (ANSI escapes
included) are replaced by visible escapes, so journal text can never restyle the screen.
It also masks every secret this process knows (`orchestrator.redaction.SECRETS`: under
``orchestrator up``, the daemon's), state included: the screen may be shared even when the
journal is not.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Final

from rich.text import Text

from orchestrator.records import FINAL_STATUSES, RunStatus
from orchestrator.redaction import SECRETS

# The one mapping from meaning to colour: every screen (runs, run detail, timeline, children,
# workflows, the help's legend) styles a status or a timeline kind through these.
STATUS_STYLES: Final[dict[str, str]] = {
    RunStatus.QUEUED: "cyan",
    RunStatus.RUNNING: "bold dodger_blue1",
    RunStatus.PAUSED: "bold yellow",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.ABORTED: "dark_orange",
    RunStatus.DROPPED: "grey50",
    RunStatus.REJECTED: "plum3",
}
STATUS_MEANINGS: Final[dict[str, str]] = {
    RunStatus.QUEUED: "waits for a slot",
    RunStatus.RUNNING: "executing a step",
    RunStatus.PAUSED: "waits for an event, a resume or a timer",
    RunStatus.COMPLETED: "every step ran",
    RunStatus.FAILED: "a step failed",
    RunStatus.ABORTED: "ended by abort",
    RunStatus.DROPPED: "not run: its workflow was busy",
    RunStatus.REJECTED: "refused: its workflow was busy",
}
RETRIED_STYLE: Final = "yellow"  # a failed attempt that will be retried: not the failure yet
EVENT_STYLE: Final = "blue"
# Timeline kinds that are not ``run.<status>``, by the status whose colour they take.
_KIND_AS_STATUS: Final[dict[str, str]] = {
    "run.started": RunStatus.RUNNING,
    "run.resumed": RunStatus.RUNNING,
    "run.retried": RunStatus.RUNNING,
    "run.signalled": RunStatus.RUNNING,
    "run.recovered": RunStatus.RUNNING,
    "run.forked": RunStatus.QUEUED,
    "run.crash_loop": RunStatus.FAILED,
    "step.completed": RunStatus.COMPLETED,
    "step.failed": RunStatus.FAILED,
}
LEVEL_STYLES: Final = {"debug": "grey50", "info": "", "warning": "yellow", "error": "bold red"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NEWLINES = re.compile(r"\r\n|\r|\n")


def clean(text: str, *, single_line: bool = False) -> str:
    """Secrets masked, control characters escaped (and newlines as ⏎ if single-line)."""
    text = SECRETS.redact(text)
    if single_line:
        text = _NEWLINES.sub(" ⏎ ", text).replace("\t", " ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def literal(
    value: object, style: str = "", *, single_line: bool = False, limit: int | None = None
) -> Text:
    """`value` as text shown exactly as written (no markup), optionally one line and cut."""
    text = clean(value if isinstance(value, str) else str(value), single_line=single_line)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return Text(text, style=style, no_wrap=single_line, end="")


def join(*parts: Text | str, sep: str = "") -> Text:
    """Concatenate texts; plain `str` parts are taken literally too."""
    return Text(sep).join(p if isinstance(p, Text) else Text(p) for p in parts)


def status_style(status: str) -> str:
    """The colour of a run status (white for one this dashboard does not know)."""
    return STATUS_STYLES.get(status, "white")


def kind_style(kind: str) -> str:
    """The colour of a timeline kind, by meaning (others, such as ``step.started``, plain).

    ``run.<status>`` takes that status's colour; failures are red, completions green,
    resumptions and retries the colour of running.
    """
    if kind.startswith("run.") and kind[4:] in STATUS_STYLES:
        return STATUS_STYLES[kind[4:]]
    if kind.startswith("event."):
        return EVENT_STYLE
    status = _KIND_AS_STATUS.get(kind)
    return STATUS_STYLES[status] if status is not None else ""


def status_legend() -> Text:
    """Each status in its colour, with what it means (the help's legend)."""
    lines = [
        join(literal(f"● {status:<10}", status_style(status)), literal(meaning))
        for status, meaning in STATUS_MEANINGS.items()
    ]
    return Text("\n").join(lines)


def status_text(status: str) -> Text:
    """A run status, coloured, with a dot."""
    return literal(f"● {status}", status_style(status), single_line=True)


def short_id(ident: str) -> str:
    """The first 8 characters of a run or event id (enough to tell runs apart).

    The CLI takes a run's as a prefix (`orchestrator show 3f9a61c2`): it needs 4 or more.
    """
    return ident[:8]


def duration(seconds: float) -> str:
    """A compact duration: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def run_duration(
    created: datetime | None, updated: datetime | None, status: str, now: datetime
) -> str:
    """How long a run took (final) or has been going (not final)."""
    if created is None:
        return "?"
    end = updated if status in FINAL_STATUSES and updated is not None else now
    return duration((end - created).total_seconds())


def timestamp(when: datetime | None, now: datetime) -> str:
    """Local time: ``14:03:07`` today, ``11-20 14:03`` another day; ``-`` if unknown."""
    if when is None:
        return "-"
    local, today = when.astimezone(), now.astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%m-%d %H:%M")


def compact_json(value: Any, limit: int | None = None) -> str:
    """`value` as one line of JSON (anything else by its repr), optionally cut."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr, separators=(", ", ": "))
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text

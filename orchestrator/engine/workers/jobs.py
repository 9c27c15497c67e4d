"""What daemons say through the journal's step jobs: an offered step, and how it went.

The daemon running a run offers one attempt of an isolated step as a request (which
workflow, pipeline and step; the step's ctx; its time limit) beside the state and the
digest of the file the step is in. A standby runs it in a worker of its own and replies
with the worker's outcome, the lines the step logged and what it started and emitted.
Neither side sends env values or file text: the standby has its own copy of the folder.

A reply is one of ``{"ok": state}``, ``{"pause": ...}``, ``{"invalid": message}``,
``{"raised": type, "message", "traceback"}``, ``{"crashed": message}`` or
``{"timeout": true}``, with ``"logs"`` (``[level, text]`` pairs), ``"outbox"`` and ``"by"``
(which daemon ran it) beside it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...define.outbox import Emit, Outbox, Start, checked_data, checked_key, checked_name
from ...define.waits import PauseRequest, join_request, pause_request, sleep_request
from ...errors import DefinitionError, RemoteError
from ...state import EncodedState, Unencodable, parse_payload
from ..context import StepContext, StepLogger
from . import wire
from .pool import StepRef, WorkerCrashed, context_spec

# Lines of `ctx.log` one served step sends back at most, and their characters in all.
MAX_LOG_LINES = 1_000
MAX_LOG_CHARS = 1_000_000
_ID = re.compile("[0-9a-f]{32}")  # a run's or an event's id (`clock.new_id`, `keyed_id`)


def request_of(step: StepRef, ctx: StepContext | None, time_limit: float | None) -> dict[str, Any]:
    """The request for one attempt of a file's isolated step (`step.load` is a file's)."""
    return {
        "workflow": step.ref["workflow"],
        "trigger": step.ref["trigger"],
        "step": step.ref["step"],
        "file": Path(step.load["path"]).name,  # for messages only
        "takes_ctx": step.takes_ctx,
        "is_async": step.is_async,
        "ctx": None if ctx is None else context_spec(ctx),
        "time_limit": time_limit,
    }


def servable(step: StepRef) -> bool:
    """Whether a standby can run `step`: one from a workflow file (it has its own copy)."""
    return step.load.get("kind") == "file"


class CollectedLog(StepLogger):
    """``ctx.log`` of a served step: its lines, kept for the reply (bounded)."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = []
        self._chars = 0
        self.dropped = 0

    def line(self, level: str, text: str) -> None:
        """Keep one line, unless the step logged too much already (then count it)."""
        if len(self.lines) >= MAX_LOG_LINES or self._chars + len(text) > MAX_LOG_CHARS:
            self.dropped += 1
            return
        self._chars += len(text)
        self.lines.append([level, text])

    def reported(self) -> list[list[str]]:
        """The lines kept, with one saying how many were left out."""
        if not self.dropped:
            return self.lines
        note = f"{self.dropped} more lines were logged; a served step sends {MAX_LOG_LINES} at most"
        return [*self.lines, ["warning", note]]


def reply_of(outcome: object) -> dict[str, Any]:
    """A worker's outcome (what `WorkerPool.call` returned or raised) as a reply."""
    if isinstance(outcome, EncodedState):
        return {"ok": outcome.text}
    if isinstance(outcome, PauseRequest):
        return {"pause": wire.pause_to_json(outcome)}
    if isinstance(outcome, Unencodable):
        return {"invalid": outcome.message}
    if isinstance(outcome, RemoteError):
        return {"raised": outcome.type_name, "message": outcome.message, "traceback": outcome.trace}
    if isinstance(outcome, WorkerCrashed):
        return {"crashed": str(outcome)}
    if isinstance(outcome, TimeoutError):
        return {"timeout": True}
    return {"crashed": f"its serving daemon failed: {outcome!r}"}


def outcome_of(reply: dict[str, Any], ctx: StepContext | None) -> object:
    """What a local worker would have given: the new state (encoded) or a pause.

    The lines the step logged go to `ctx.log` and what it sent to `ctx.outbox` first, as
    a local worker relays them.

    Raises:
        RemoteError: The step raised.
        WorkerCrashed: Its worker (or the daemon serving it) died; or the reply is not one
            (a pause, a state or an outbox that a step could not have made, say).
        TimeoutError: The step ran past its time limit.
    """
    try:
        return _outcome(reply, ctx)
    except (KeyError, TypeError, ValueError, AttributeError, DefinitionError) as exc:
        raise WorkerCrashed(
            f"the daemon that ran it sent a reply that cannot be read ({exc!r})"
        ) from None


def _outcome(reply: dict[str, Any], ctx: StepContext | None) -> object:
    by = f" (on the daemon {reply['by']})" if isinstance(reply.get("by"), str) else ""
    if ctx is not None:
        for level, text in reply.get("logs") or ():
            ctx.log.line(str(level), str(text))
        if reply.get("outbox"):
            ctx.outbox = _outbox(reply["outbox"])
    if "ok" in reply:
        text = _text(reply["ok"])
        parse_payload(text)  # journaled as it is: a row something else wrote is checked
        return EncodedState(text)
    if "pause" in reply:
        return checked_pause(reply["pause"])
    if "invalid" in reply:
        return Unencodable(_text(reply["invalid"]))
    if "raised" in reply:
        raise RemoteError(
            _text(reply["raised"]), _text(reply["message"]), _text(reply["traceback"])
        )
    if "crashed" in reply:
        raise WorkerCrashed(_text(reply["crashed"]) + by)
    if reply.get("timeout") is True:
        raise TimeoutError
    raise ValueError(f"no outcome in {sorted(reply)}")


def checked_pause(value: Any) -> PauseRequest:
    """A reply's pause, checked as `ctx.pause`, `ctx.sleep` or `ctx.join` checks one.

    It is parked as it is: a row something else wrote (a timeout that is not seconds)
    would otherwise stop its run in the middle of parking.
    """
    pause = wire.pause_from_json(value)
    label = "a served step's pause"
    if pause.joins is not None:
        join_request(
            list(pause.joins),
            into=pause.into,
            timeout=pause.timeout,
            on_timeout=pause.on_timeout,
            label=label,
        )
    elif pause.event is None:  # a sleep: its seconds are its timeout
        if pause.into is not None or pause.timeout is None:
            raise ValueError("a sleep with a state key or without seconds")
        sleep_request(pause.timeout, label=label)
    else:
        pause_request(
            event=pause.event,
            where=None,  # its conditions were checked as they were read
            into=pause.into,
            timeout=pause.timeout,
            on_timeout=pause.on_timeout,
            wait=None,
            label=label,
        )
    return pause


def _outbox(value: object) -> Outbox:
    """The starts and emits a reply carries, checked as `ctx.start` and `ctx.emit` check theirs.

    They are journaled as they are, in the batch of the step's checkpoint: a field no step
    could have made (a lone surrogate, a NUL) would fail that batch, and with it the writer.
    """
    outbox = Outbox.from_json(value)
    label = "a served step's outbox"
    starts = [
        Start(
            _id(start.run_id),
            _name(start.workflow, "the workflow id", label),
            _name(start.trigger, "the trigger id", label),
            checked_data(start.data, label),
            checked_key(start.key, label),
        )
        for start in outbox.starts
    ]
    emits = [
        Emit(
            _id(emit.event_id),
            _name(emit.type, "the event type", label),
            checked_data(emit.data, label),
            checked_key(emit.key, label),
        )
        for emit in outbox.emits
    ]
    return Outbox(starts, emits)


def _id(value: object) -> str:
    """A run's or an event's id as `new_id` and `keyed_id` make them: 32 hex digits."""
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise ValueError(f"not a run or event id: {value!r}")
    return value


def _name(value: object, what: str, label: str) -> str:
    """A workflow id, trigger id or event type a PostgreSQL journal can keep (no NUL)."""
    name = checked_name(value, what, label)
    if "\x00" in name:
        raise ValueError(f"{label}: {what} holds a NUL character: {name!r}")
    return name


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value

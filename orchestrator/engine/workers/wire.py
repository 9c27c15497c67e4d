"""What the daemon and a worker process say to each other, and how it is framed.

A message is one line of JSON (its header); a header with ``size`` is followed by that
many bytes of UTF-8 text, a run's state, sent as is rather than escaped inside the JSON.

Daemon to worker: ``{"ref", "takes_ctx", "is_async", "ctx"?, "load"?, "env"?, "size"}``
and the state. Worker to daemon: ``{"ready": pid}`` once; for each step ``{"accepted"}``
first (a worker that dies before it died idle: the step runs in another), any number
of ``{"log", "text"}``; then one of ``{"ok", "size"}`` and the new state, ``{"pause"}``
(each with the step's ``outbox``, what it started and emitted, if anything),
``{"invalid"}`` (the step returned what is not a state) or ``{"raised", "message",
"traceback", "memory"}``; each of these carries the worker's ``rss`` in bytes and
``spent``: whether the step left the worker unfit for more steps.
"""

from __future__ import annotations

import json
from typing import Any

from ...define.conditions import Conditions
from ...define.waits import OnTimeout, PauseRequest

EXIT_OUT_OF_MEMORY = 86  # a worker that hit its memory limit reports it, then exits so
EXIT_PIPES_LOST = 87  # a worker whose step closed (or replaced) its pipes to the daemon


def frame(header: dict[str, Any], payload: str | None = None) -> bytes:
    """One message: its header line, then its payload if any."""
    if payload is None:
        return json.dumps(header, separators=(",", ":")).encode() + b"\n"
    body = payload.encode("utf-8")
    line = json.dumps({**header, "size": len(body)}, separators=(",", ":")).encode()
    return line + b"\n" + body


def parse_header(line: bytes) -> dict[str, Any]:
    """A header line as a dict; `ValueError` if it is not one."""
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError(f"not a message header: {line[:80]!r}")
    return header


def pause_to_json(request: PauseRequest) -> dict[str, Any]:
    """A step's `PauseRequest` as JSON (a worker has no waits registered ahead)."""
    return {
        "event": request.event,
        "conditions": request.conditions.to_json(),
        "into": request.into,
        "timeout": request.timeout,
        "on_timeout": request.on_timeout,
        "joins": None if request.joins is None else list(request.joins),
    }


def pause_from_json(value: dict[str, Any]) -> PauseRequest:
    """The `PauseRequest` a worker's step returned."""
    label = "an isolated step's pause"
    on_timeout: OnTimeout = "fail" if value["on_timeout"] == "fail" else "continue"
    return PauseRequest(
        value["event"],
        Conditions.from_json(value["conditions"], label=label),
        value["into"],
        value["timeout"],
        on_timeout,
        joins=None if value.get("joins") is None else tuple(map(str, value["joins"])),
    )

"""What a step starts and emits: its outbox, journaled in the commit of its checkpoint.

``ctx.start`` and ``ctx.emit`` choose an id at once and only note what to do. When the
step completes, the executor turns the outbox into journal writes (an ``invoke`` command
and an unrouted event, the way another process writes them) in the same batch as the
step's checkpoint; the daemon's inbox then applies each once. A failed attempt's outbox
is dropped with it, and a step that crashed before its checkpoint committed left nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import DefinitionError, ValidationError
from ..journal import ops
from ..state import StateEncodingError, copy_state


@dataclass(frozen=True)
class Start:
    """A child run to start: its id, workflow, trigger, input and idempotency key."""

    run_id: str
    workflow: str
    trigger: str
    data: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True)
class Emit:
    """An event to emit: its id, type, data and idempotency key."""

    event_id: str
    type: str
    data: dict[str, Any]
    key: str | None = None


@dataclass
class Outbox:
    """The starts and emits of one attempt of one step, in call order."""

    starts: list[Start] = field(default_factory=list)
    emits: list[Emit] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.starts or self.emits)

    def writes(self, parent: str, at: int) -> list[ops.Op]:
        """The journal writes of this outbox, for the batch of the step's checkpoint."""
        writes: list[ops.Op] = []
        for n, start in enumerate(self.starts):
            payload = json.dumps({"data": start.data, "parent": parent}, ensure_ascii=False)
            writes += ops.outbox_invoke(
                start.run_id, start.workflow, start.trigger, payload, at, key=start.key
            )
            writes.append(ops.add_child(start.run_id, parent, at, n, key=start.key))
        for emit in self.emits:
            data = json.dumps(emit.data, separators=(",", ":"), ensure_ascii=False)
            writes += ops.outbox_event(emit.event_id, emit.type, data, at, key=emit.key)
        return writes

    def to_json(self) -> dict[str, Any]:
        """As JSON, for the worker wire."""
        return {
            "starts": [[s.run_id, s.workflow, s.trigger, s.data, s.key] for s in self.starts],
            "emits": [[e.event_id, e.type, e.data, e.key] for e in self.emits],
        }

    @classmethod
    def from_json(cls, value: Any) -> Outbox:
        """What `to_json` wrote (an isolated step's outbox)."""
        if not isinstance(value, dict):
            return cls()
        return cls(
            [Start(*item) for item in value.get("starts", [])],
            [Emit(*item) for item in value.get("emits", [])],
        )


def keyed_id(kind: str, key: str) -> str:
    """The id a key names when no process can tell of an earlier one (32 hex digits).

    The same in every process (a worker cannot look keys up), so a step that runs again,
    here or elsewhere, names the same run or event; the journal keeps the first.
    """
    return hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()[:32]


def checked_name(value: Any, what: str, label: str) -> str:
    """A workflow id, trigger id or event type: a non-empty string, valid Unicode.

    A lone surrogate cannot be encoded: it would fail the journal batch of the step's
    checkpoint, and with it the writer.
    """
    if not isinstance(value, str) or not value.strip():
        raise DefinitionError(f"{label}: {what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise DefinitionError(
            f"{label}: {what} must not hold a NUL character (a journal cannot key on it),"
            f" got {value!r}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DefinitionError(
                f"{label}: {what} must be valid Unicode (no lone surrogates), got {value!r}"
            ) from None
    return value


def checked_data(value: Any, label: str) -> dict[str, Any]:
    """A child's input or an event's data: a JSON object (copied)."""
    try:
        data = copy_state({} if value is None else value)
    except StateEncodingError as exc:
        raise DefinitionError(f"{label}: data must be a JSON object: {exc}") from exc
    return data


def checked_key(value: Any, label: str) -> str | None:
    """An idempotency key, or None."""
    if value is None:
        return None
    try:
        return ops.checked_key(value)
    except ValidationError as exc:
        raise DefinitionError(f"{label}: {exc}") from exc

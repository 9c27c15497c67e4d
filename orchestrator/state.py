"""Run state as JSON: the one encoding used for checkpoints and for isolation.

A step receives a fresh object decoded from the previous step's checkpoint text, so
nothing a step mutates can reach what an earlier step returned or what a checkpoint holds.
Every payload the journal stores passes `encode_state`, so what it accepts the journal can
always write: a JSON object, nested at most `MAX_DEPTH` levels, its strings valid Unicode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

State = dict[str, Any]

MAX_DEPTH = 64  # levels of objects and lists in a state or event data, the top object included
_CONTAINERS = (dict, list, tuple)


@dataclass(frozen=True)
class EncodedState:
    """A step's new state, already encoded (by `encode_state`, in a worker process)."""

    text: str


@dataclass(frozen=True)
class Unencodable:
    """A step returned what `encode_state` refuses (found in a worker process): why."""

    message: str


class StateEncodingError(ValueError):
    """The value is not a JSON object; the message says what is wrong."""


class StateBoundsError(StateEncodingError):
    """The value nests deeper than `MAX_DEPTH`, or holds a string that is not valid Unicode."""


def encode_state(value: object) -> str:
    """Encode a state to compact JSON text, refusing anything that is not a JSON object."""
    if not isinstance(value, dict):
        raise StateEncodingError(f"state must be a JSON object (dict), got {type(value).__name__}")
    try:
        _check_shape(value)  # before json.dumps, whose recursion a deep value would exhaust
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except StateEncodingError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateEncodingError(f"state is not JSON-serializable: {exc}") from exc
    except Exception as exc:  # a key whose repr raises, a dict that cannot be read
        raise StateEncodingError(f"state could not be read: {_name(exc)}") from exc
    if not text.isascii():
        _check_unicode(text)
    return text


def _name(exc: Exception) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - its message cannot be read either
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_shape(value: dict[Any, Any]) -> None:
    # Depth first, without recursion: a value of any depth is refused without exhausting
    # the stack, and a cycle within MAX_DEPTH steps (level by level, a cycle through two
    # keys would double each level). json.dumps turns 1, None and True keys into strings
    # silently (and may merge two keys into one): refuse them instead of handing the next
    # step a different object.
    # Invariant: depths[i] is the depth of the container pending[i].
    pending: list[Any] = [value]
    depths = [1]
    while pending:
        container, depth = pending.pop(), depths.pop()
        if depth > MAX_DEPTH:
            raise StateBoundsError(
                f"state nests deeper than {MAX_DEPTH} levels of objects and lists"
            )
        if isinstance(container, dict):
            for key in container:
                if not isinstance(key, str):
                    raise StateEncodingError(
                        f"state is not JSON: key {key!r} is a {type(key).__name__}, "
                        "JSON object keys must be strings"
                    )
            container = container.values()
        for item in container:
            if isinstance(item, _CONTAINERS):
                pending.append(item)
                depths.append(depth + 1)


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise StateBoundsError(
            f"state is not valid Unicode: a string holds the lone surrogate {bad!r}"
        ) from None


def decode_state(text: str) -> State:
    """Decode checkpoint text to a new, unshared state object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StateEncodingError(f"checkpoint holds {type(value).__name__}, not an object")
    return value


def copy_state(value: object) -> State:
    """An isolated deep copy of a state, validated as a JSON object."""
    return decode_state(encode_state(value))

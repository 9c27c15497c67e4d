"""Run state as JSON: the one encoding used for checkpoints and for isolation.

A step receives a fresh object decoded from the previous step's checkpoint text, so
nothing a step mutates can reach what an earlier step returned or what a checkpoint holds.
"""

from __future__ import annotations

import json
from typing import Any

State = dict[str, Any]


class StateEncodingError(ValueError):
    """The value is not a JSON object; the message says what is wrong."""


def encode_state(value: object) -> str:
    """Encode a state to compact JSON text, refusing anything that is not a JSON object."""
    if not isinstance(value, dict):
        raise StateEncodingError(f"state must be a JSON object (dict), got {type(value).__name__}")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateEncodingError(f"state is not JSON-serializable: {exc}") from exc
    _check_keys(value, "state")
    return text


def _check_keys(value: object, path: str) -> None:
    # json.dumps turns 1, None and True keys into strings silently (and may merge two keys
    # into one): refuse them instead of handing the next step a different object.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateEncodingError(
                    f"state is not JSON: key {key!r} at {path} is a {type(key).__name__}, "
                    "JSON object keys must be strings"
                )
            _check_keys(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_keys(item, f"{path}[{index}]")


def decode_state(text: str) -> State:
    """Decode checkpoint text to a new, unshared state object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StateEncodingError(f"checkpoint holds {type(value).__name__}, not an object")
    return value


def copy_state(value: object) -> State:
    """An isolated deep copy of a state, validated as a JSON object."""
    return decode_state(encode_state(value))

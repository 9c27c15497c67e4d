"""Run state as JSON: the one encoding used for checkpoints and for isolation.

A step receives a fresh object decoded from the previous step's checkpoint text, so
nothing a step mutates can reach what an earlier step returned or what a checkpoint holds.
Every payload the journal stores passes `encode_state`, so what it accepts the journal can
always write and every process can read back: a JSON object, nested at most `MAX_DEPTH`
levels, at most `MAX_PAYLOAD_BYTES` encoded, its strings valid Unicode, its integers within
64 bits. `parse_payload` applies the same bounds to text that comes from outside or from a
journal row no process should have written.
"""

from __future__ import annotations

import json
import json.scanner
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

State = dict[str, Any]

MAX_DEPTH = 64  # levels of objects and lists in a state or event data, the top object included
PAYLOAD_BYTES_VARIABLE = "ORCHESTRATOR_MAX_PAYLOAD_BYTES"
_DEFAULT_PAYLOAD_BYTES = 16 * 1024 * 1024
_CONTAINERS = (dict, list, tuple)
_INT_BOUND = 2**63  # integers in [-2**63, 2**63): what SQLite's JSON and most readers keep
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _max_payload_bytes() -> int:
    """The size bound: `ORCHESTRATOR_MAX_PAYLOAD_BYTES` (read once at import), else 16 MiB."""
    text = os.environ.get(PAYLOAD_BYTES_VARIABLE, "").strip()
    try:
        value = int(text) if text else _DEFAULT_PAYLOAD_BYTES
    except ValueError:
        value = _DEFAULT_PAYLOAD_BYTES
    return value if value > 0 else _DEFAULT_PAYLOAD_BYTES


# Bytes of one encoded state or event data at most. Every process that writes or reads a
# journal should agree on it (set the variable for all, or for none).
MAX_PAYLOAD_BYTES = _max_payload_bytes()


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
    """The value is out of bounds: too deep, too big, not valid Unicode, or a huge integer."""


# One encoder for every state (`json.dumps` with options builds one per call), one decoder.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()
# Its scanner alone (what `decode` calls between two regex matches). The stub wants a
# scanner as the context; the decoder holds the very attributes it reads.
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
# Its C core, made once (`JSONEncoder.encode` makes it again on every call). No check for
# cycles (`markers` None): `_check_shape` has refused any value nested too deep, cycles too.
_MAKE_ENCODER: Callable[..., Callable[[object, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_ENCODE_CHUNKS = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def _encode(value: dict[Any, Any]) -> str:
    if _ENCODE_CHUNKS is None:  # an interpreter without the C accelerator
        return _ENCODER.encode(value)
    return "".join(_ENCODE_CHUNKS(value, 0))


def encode_state(value: object) -> str:
    """Encode a state to compact JSON text, refusing anything that is not a JSON object."""
    if not isinstance(value, dict):
        raise StateEncodingError(f"state must be a JSON object (dict), got {type(value).__name__}")
    try:
        _check_shape(value)  # before json.dumps, whose recursion a deep value would exhaust
        text = _encode(value)
    except StateEncodingError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateEncodingError(f"state is not JSON-serializable: {exc}") from exc
    except Exception as exc:  # a key whose repr raises, a dict that cannot be read
        raise StateEncodingError(f"state could not be read: {_name(exc)}") from exc
    _check_size(len(text) if text.isascii() else _utf8_size(text))
    return text


def parse_payload(text: str) -> State:
    """Decode JSON text from outside (or a journal row) under the bounds `encode_state` keeps.

    Raises:
        StateEncodingError: It is not JSON, or not an object (the message says why).
        StateBoundsError: It is too deep, too big, or holds a lone surrogate or an integer
            beyond 64 bits.
    """
    size = len(text) if text.isascii() else _utf8_size(text, lenient=True)
    _check_size(size)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise StateBoundsError(
            f"state nests deeper than {MAX_DEPTH} levels of objects and lists"
        ) from None
    except ValueError as exc:  # not JSON, or an integer of more digits than Python reads
        if "integer string conversion" in str(exc):
            raise StateBoundsError(_INT_MESSAGE) from None
        raise StateEncodingError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StateEncodingError(f"must be a JSON object, got {type(value).__name__}")
    _check_shape(value)
    if holds_lone_surrogate(text, value):  # an escaped lone surrogate decodes to one
        raise StateBoundsError("state is not valid Unicode: a string holds a lone surrogate")
    return value


def holds_lone_surrogate(text: str, value: object) -> bool:
    """Whether `value`, decoded from JSON `text`, holds a lone surrogate (text cannot)."""
    if not _SURROGATE_ESCAPE.search(text):
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or infinities)")


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def _check_size(size: int) -> None:
    if size > MAX_PAYLOAD_BYTES:
        raise StateBoundsError(
            f"state is {size:,} bytes as JSON, over the limit of {MAX_PAYLOAD_BYTES:,} bytes "
            f"(set {PAYLOAD_BYTES_VARIABLE} to change it, for every process using the journal)"
        )


_INT_MESSAGE = "state holds an integer beyond 64 bits (from -2**63 to 2**63 - 1): use a string"


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
            elif isinstance(item, int) and not -_INT_BOUND <= item < _INT_BOUND:
                raise StateBoundsError(_INT_MESSAGE)


def _utf8_size(text: str, *, lenient: bool = False) -> int:
    """Bytes of `text` as UTF-8; a lone surrogate is a `StateBoundsError` unless `lenient`."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        if lenient:
            return len(text.encode("utf-8", "surrogatepass"))
        bad = text[exc.start : exc.end]
        raise StateBoundsError(
            f"state is not valid Unicode: a string holds the lone surrogate {bad!r}"
        ) from None


def decode_state(text: str) -> State:
    """Decode checkpoint text to a new, unshared state object."""
    try:
        # The scanner alone when it reads the whole text (as any text `encode_state` made):
        # `decode` around it adds two regex matches and two Python frames, per step.
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:  # leading whitespace, or not JSON: `decode` says which
            end = -1
        if end != len(text):
            value = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # a row no process should have written
        raise StateEncodingError(f"checkpoint is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StateEncodingError(f"checkpoint holds {type(value).__name__}, not an object")
    return value


def copy_state(value: object) -> State:
    """An isolated deep copy of a state, validated as a JSON object."""
    return decode_state(encode_state(value))

"""Where-clauses: parse, validate, match.

Event triggers and pause waits filter events with ``where``: a dict from a dotted path into
the event data to an ``(operator, operand)`` pair, ``{"order_id": ("==", 7), "receipt":
("exists", True)}``. `Conditions.parse` checks it when the workflow is defined (a bad clause
is a `DefinitionError` naming its owner and path), `Conditions.matches` tests event data,
`Conditions.to_json` is the journal form. Frozen data and pure functions, no I/O.

Semantics:

- Clauses are ANDed; none (``None`` or ``{}``) match everything.
- Each path segment indexes an object by key, or an array by a non-negative decimal integer
  without leading zeros (``items.0.sku``). A path that cannot be followed is `MISSING`.
- JSON classes: null, boolean, number (int or finite float, never a bool), string, array
  (list or tuple), object (mapping). Anything else, NaN and infinities included, is in none.
- ``exists`` True matches a present path, whatever its value (null too); False a `MISSING` one.
- Every other operator needs value and operand in the same class, or does not match (never
  an exception). So ``{"status": ("!=", "paid")}`` does NOT match ``{"status": 5}``, nor
  ``{"status": None}``, nor data with no status; ``("exists", False)`` says "no status".
- ``==`` within a class: numbers by exact value (``1 == 1.0``; ``True`` is not ``1``),
  strings, booleans and null by value, arrays and objects deeply with the same class rule at
  every level (``[1] == [1.0]``, ``[1] != [True]``). Within a class ``!=`` is ``not ==``.
- ``>``, ``>=``, ``<``, ``<=`` compare two numbers, or two strings by code point; their
  operand must be a number or a string (a bool works with ``==`` and ``!=`` only).
- `Conditions.matches` never raises, whatever the data: not a dict, huge ints, NaN, cycles.
"""

from __future__ import annotations

import enum
import json
import math
import operator
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import DefinitionError

OPERATORS: Final = ("==", "!=", ">", ">=", "<", "<=", "exists")
_ORDERING: Final = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_CLASSES: Final[tuple[tuple[type, str], ...]] = (  # bool before int: a bool is no number
    (type(None), "null"),
    (bool, "boolean"),
    (int, "number"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (tuple, "array"),
    (Mapping, "object"),
)
_EXACT: Final = dict(_CLASSES[:-1]) | {dict: "object"}  # common types by one lookup
_SCALARS: Final = frozenset({"null", "boolean", "number", "string"})
_INDEX: Final = re.compile(r"0|[1-9][0-9]{0,17}")  # longer indexes exceed any list


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""What `lookup` returns, and `ClauseCheck.actual` holds, for a path that cannot be followed."""


@dataclass(frozen=True)
class Clause:
    """One ``path op operand`` test.

    Attributes:
        path: The dotted path as written, ``"customer.id"``.
        keys: The path's segments, ``("customer", "id")``.
        op: One of `OPERATORS`.
        operand: A plain JSON value (lists and dicts, never tuples).
    """

    path: str
    keys: tuple[str, ...]
    op: str
    operand: Any


@dataclass(frozen=True)
class ClauseCheck:
    """How one clause fared against some data.

    Attributes:
        clause: The clause checked.
        matched: Whether it matched.
        actual: The value at the clause's path, or `MISSING`.
        reason: A short word on why: ``"missing"``, ``"string, not number"``, ``"false"``...
    """

    clause: Clause
    matched: bool
    actual: Any
    reason: str


@dataclass(frozen=True)
class Conditions:
    """Clauses ANDed together; build with `parse` or `from_json`."""

    clauses: tuple[Clause, ...]

    @classmethod
    def parse(cls, where: Mapping[str, Any] | None, *, label: str) -> Conditions:
        """Check a ``where`` dict; a bad clause raises `DefinitionError` naming `label`."""
        if where is None:
            return cls(())
        if not isinstance(where, Mapping):
            raise DefinitionError(
                f"{label}: where must be a dict, got {_show(where)}; write {{path: (op, value)}}"
            )
        return cls(tuple(_parse_clause(path, spec, label) for path, spec in where.items()))

    @classmethod
    def from_json(cls, value: list[list[Any]], *, label: str) -> Conditions:
        """Rebuild conditions from `to_json`'s form, checked as `parse` checks them."""
        if not isinstance(value, list | tuple):
            raise DefinitionError(
                f"{label}: conditions must be a list, got {_show(value)}; use to_json()"
            )
        clauses = []
        for item in value:
            if not isinstance(item, list | tuple) or len(item) != 3:
                raise DefinitionError(
                    f"{label}: {_show(item)} is not a clause; write [path, op, value]"
                )
            clauses.append(_parse_clause(item[0], item[1:], label))
        return cls(tuple(clauses))

    def matches(self, data: Any) -> bool:
        """Whether every clause holds for `data`; never raises."""
        return all(_check(c, data)[0] for c in self.clauses)

    def explain(self, data: Any) -> list[ClauseCheck]:
        """Check each clause against `data` and say how it went."""
        return [ClauseCheck(c, *_check(c, data)) for c in self.clauses]

    def equality_keys(self) -> tuple[tuple[str, Hashable], ...]:
        """``(path, index_key(operand))`` for each ``==`` clause with a scalar operand."""
        return tuple(
            (c.path, key)
            for c in self.clauses
            if c.op == "==" and (key := index_key(c.operand)) is not None
        )

    def to_json(self) -> list[list[Any]]:
        """``[[path, op, operand], ...]``, for the journal."""
        return [[c.path, c.op, c.operand] for c in self.clauses]

    def describe(self) -> str:
        """One line for people: ``order_id == 7 and total > 0``; ``always`` when empty."""
        return " and ".join(map(_describe, self.clauses)) or "always"


def lookup(data: Any, keys: tuple[str, ...]) -> Any:
    """The value at `keys` in `data`, or `MISSING`; never raises for JSON-like data."""
    for key in keys:
        if isinstance(data, Mapping):
            if key not in data:
                return MISSING
            data = data[key]
        elif isinstance(data, list | tuple) and _INDEX.fullmatch(key) and int(key) < len(data):
            data = data[int(key)]
        else:
            return MISSING
    return data


def index_key(value: Any) -> Hashable | None:
    """A hash key for a JSON scalar: equal keys exactly when ``==`` matches; else ``None``."""
    kind = _kind(value)
    return (kind, value) if kind in _SCALARS else None


def _kind(value: object) -> str | None:
    kind = _EXACT.get(type(value)) or next((k for t, k in _CLASSES if isinstance(value, t)), None)
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON
    return kind


def _equal(left: Any, right: Any) -> bool:
    # Iterative, so deep data cannot overflow the stack; it walks in step with the operand,
    # which is finite and acyclic, so cycles in the data end too.
    pending = [(left, right)]
    while pending:
        a, b = pending.pop()
        kind = _kind(a)
        if kind is None or kind != _kind(b):
            return False
        if kind == "array":
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif kind == "object":
            if a.keys() != b.keys():
                return False
            pending.extend((a[key], b[key]) for key in a)
        elif a != b:
            return False
    return True


def _check(clause: Clause, data: Any) -> tuple[bool, Any, str]:
    """``(matched, actual, reason)`` for one clause."""
    actual = lookup(data, clause.keys)
    if clause.op == "exists":
        present = actual is not MISSING
        return present is clause.operand, actual, "present" if present else "missing"
    kind, wanted = _kind(actual), _kind(clause.operand)
    if actual is MISSING or kind is None:
        return False, actual, "missing" if actual is MISSING else "not a JSON value"
    if kind != wanted:
        return False, actual, f"{kind}, not {wanted}"
    if clause.op in ("==", "!="):
        matched = _equal(actual, clause.operand) is (clause.op == "==")
    else:
        matched = kind in ("number", "string") and _ORDERING[clause.op](actual, clause.operand)
    return matched, actual, "true" if matched else "false"


def _parse_clause(path: object, spec: object, label: str) -> Clause:
    if not isinstance(path, str):
        raise DefinitionError(
            f"{label}: where key {_show(path)} is not a string; write 'customer.id'"
        )
    keys = tuple(path.split("."))
    if "" in keys:
        what = "empty path" if not path else "empty path segment"
        raise DefinitionError(
            f"{_where(label, path)}: {what}; write dotted keys like 'customer.id'"
        )
    if not isinstance(spec, list | tuple) or len(spec) != 2:
        raise DefinitionError(
            f"{_where(label, path)}: {_show(spec)} is not a pair; write (op, value), like ('==', 7)"
        )
    op, operand = spec
    if not isinstance(op, str) or op not in OPERATORS:
        raise DefinitionError(
            f"{_where(label, path)}: unknown operator {_show(op)}; use {', '.join(OPERATORS)}"
        )
    if op == "exists" and not isinstance(operand, bool):
        raise DefinitionError(
            f"{_where(label, path)}: 'exists' takes True (present) or False, not {_show(operand)}"
        )
    operand = _plain(operand, label, path)
    if op in _ORDERING and _kind(operand) not in ("number", "string"):
        hint = "; a bool works with == and != only" if isinstance(operand, bool) else ""
        raise DefinitionError(
            f"{_where(label, path)}: use a number or a string with {op}, not {operand!r}{hint}"
        )
    return Clause(path, keys, op, operand)


def _where(label: str, path: str) -> str:
    """Where a clause is, for its errors (made only when one is raised)."""
    return f"{label}: where {path!r}"


# An int below this in size is plain JSON as it is (a huge one cannot be written as text).
_SMALL_INT = 2**63


def _plain(value: object, label: str, path: str) -> Any:
    """A plain JSON copy of an operand, or a `DefinitionError` saying what is not JSON."""
    # Most operands are plain as they are: no round trip through JSON text. Exact types:
    # a subclass (an enum) may be written otherwise.
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int and -_SMALL_INT < value < _SMALL_INT:  # type: ignore[operator]
        return value
    try:
        plain = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise DefinitionError(
            f"{_where(label, path)}: operand {_show(value)} is not JSON ({exc}); "
            "use None, a bool, a finite number, a string, a list or a dict"
        ) from None
    if not _equal(plain, value):  # json.dumps turned non-string keys into strings
        raise DefinitionError(
            f"{_where(label, path)}: operand {_show(value)} has a key that is not a string; "
            "use str keys"
        )
    return plain


# An operand as `describe` shows it (`json.dumps` with options builds an encoder per call).
_OPERAND = json.JSONEncoder(ensure_ascii=False)


def _describe(clause: Clause) -> str:
    if clause.op == "exists":
        return f"{clause.path} {'exists' if clause.operand else 'does not exist'}"
    return f"{clause.path} {clause.op} {_OPERAND.encode(clause.operand)}"


def _show(value: object) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int too long to print, or nested too deeply
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."

"""Where-clauses: examples for every operator, path and error, then properties.

The properties check `Conditions` against a reference model written here from the rules in
the module docstring, in a different way: values become tagged tuples (numbers as exact
`Fraction`s, non-JSON values as fresh objects equal to nothing), and equality is tuple
equality.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from fractions import Fraction
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from orchestrator.define.conditions import (
    MISSING,
    OPERATORS,
    Clause,
    ClauseCheck,
    Conditions,
    index_key,
    lookup,
)
from orchestrator.errors import DefinitionError

LABEL = "workflow 'orders' trigger 'new'"


def matches(where: dict[str, Any], data: Any) -> bool:
    return Conditions.parse(where, label=LABEL).matches(data)


def error(where: Any) -> str:
    with pytest.raises(DefinitionError) as info:
        Conditions.parse(where, label=LABEL)
    assert info.value.code == "INVALID_DEFINITION"
    return str(info.value)


# --- operators ------------------------------------------------------------------------------

ORDER = {"id": 7, "total": 12.5, "status": "paid", "note": None, "tags": ["a", "b"]}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"id": ("==", 7)}, True),
        ({"id": ("==", 7.0)}, True),
        ({"id": ("==", 8)}, False),
        ({"status": ("==", "paid")}, True),
        ({"note": ("==", None)}, True),
        ({"tags": ("==", ["a", "b"])}, True),
        ({"tags": ("==", ["b", "a"])}, False),
        ({"id": ("!=", 8)}, True),
        ({"id": ("!=", 7)}, False),
        ({"status": ("!=", "open")}, True),
        ({"total": (">", 12)}, True),
        ({"total": (">", 12.5)}, False),
        ({"total": (">=", 12.5)}, True),
        ({"total": (">=", 13)}, False),
        ({"total": ("<", 13)}, True),
        ({"total": ("<", 12.5)}, False),
        ({"total": ("<=", 12.5)}, True),
        ({"total": ("<=", 12)}, False),
        ({"status": (">", "open")}, True),
        ({"status": ("<", "open")}, False),
        ({"status": ("exists", True)}, True),
        ({"note": ("exists", True)}, True),
        ({"receipt": ("exists", True)}, False),
        ({"receipt": ("exists", False)}, True),
        ({"note": ("exists", False)}, False),
        ({"id": ["==", 7]}, True),
    ],
)
def test_each_operator(where: dict[str, Any], expected: bool) -> None:
    assert matches(where, ORDER) is expected


def test_clauses_are_anded_and_none_matches_everything() -> None:
    assert matches({"id": ("==", 7), "total": (">", 10)}, ORDER)
    assert not matches({"id": ("==", 7), "total": (">", 20)}, ORDER)
    assert not matches({"id": ("==", 8), "total": (">", 10)}, ORDER)
    anything: list[Any] = [ORDER, None, 5, [], "x"]
    for empty in (None, dict[str, Any]()):
        conditions = Conditions.parse(empty, label=LABEL)
        assert conditions.clauses == ()
        assert all(conditions.matches(data) for data in anything)


# --- paths ----------------------------------------------------------------------------------

NESTED = {
    "customer": {"id": "c1", "address": {"city": "Oslo"}},
    "items": [{"sku": "x"}, {"sku": "y"}],
    "by_index": {"0": "zero"},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("customer.id", "c1"),
        ("customer.address.city", "Oslo"),
        ("items.0.sku", "x"),
        ("items.1", {"sku": "y"}),
        ("by_index.0", "zero"),
        ("items.2.sku", MISSING),
        ("items.-1", MISSING),
        ("items.01", MISSING),
        ("items.x", MISSING),
        ("items.99999999999999999999999", MISSING),
        ("customer.id.x", MISSING),
        ("customer.name", MISSING),
        ("nothing", MISSING),
    ],
)
def test_dotted_paths(path: str, value: Any) -> None:
    assert lookup(NESTED, tuple(path.split("."))) == value
    assert matches({path: ("exists", True)}, NESTED) is (value is not MISSING)
    if value is not MISSING:
        assert matches({path: ("==", value)}, NESTED)


def test_lookup_follows_tuples_and_stops_at_scalars_and_non_dicts() -> None:
    assert lookup({"a": (1, 2)}, ("a", "1")) == 2
    assert lookup("abc", ("0",)) is MISSING
    assert lookup(None, ("a",)) is MISSING
    assert lookup([5], ("0",)) == 5
    assert repr(MISSING) == "MISSING"


# --- type classes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "data"),
    [
        ({"status": ("!=", "paid")}, {"status": 5}),
        ({"status": ("!=", "paid")}, {}),
        ({"status": ("!=", "paid")}, {"status": None}),
        ({"n": ("!=", 1)}, {"n": True}),
        ({"n": ("==", 1)}, {"n": True}),
        ({"n": ("==", True)}, {"n": 1}),
        ({"n": ("==", 0)}, {"n": False}),
        ({"n": (">", 1)}, {"n": "2"}),
        ({"n": ("<", "b")}, {"n": 1}),
        ({"n": (">=", 0)}, {"n": True}),
        ({"n": ("<=", 5)}, {"n": None}),
        ({"n": ("<", 5)}, {"n": [1]}),
        ({"n": ("==", [1])}, {"n": [True]}),
        ({"n": ("==", {"a": 1})}, {"n": {"a": "1"}}),
        ({"n": ("==", None)}, {"n": []}),
        ({"n": ("==", "1")}, {"n": 1}),
    ],
)
def test_across_classes_nothing_matches_not_even_not_equal(
    where: dict[str, Any], data: Any
) -> None:
    assert not matches(where, data)


@pytest.mark.parametrize(
    ("operand", "value"),
    [
        (1, 1.0),
        (0, -0.0),
        ([1, {"a": [2]}], (1.0, {"a": [2.0]})),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        (10**400, 10**400),
        (True, True),
    ],
)
def test_equal_within_a_class(operand: Any, value: Any) -> None:
    assert matches({"v": ("==", operand)}, {"v": value})
    assert not matches({"v": ("!=", operand)}, {"v": value})


@pytest.mark.parametrize(
    ("operand", "value"),
    [
        ([1], [1, 1]),
        ({"a": 1}, {"a": 1, "b": 2}),
        ({"a": 1}, {1: 1}),
        ([1], [math.nan]),
        (2**53, float(2**53) + 2),
        (10**400, 1e308),
    ],
)
def test_not_equal_within_a_class(operand: Any, value: Any) -> None:
    assert not matches({"v": ("==", operand)}, {"v": value})
    assert matches({"v": ("!=", operand)}, {"v": value})


def test_huge_ints_order_exactly() -> None:
    assert matches({"v": (">", 1e308)}, {"v": 10**400})
    assert matches({"v": ("<", 10**400)}, {"v": 1e308})
    assert matches({"v": (">", 2**53)}, {"v": 2**53 + 1})
    assert not matches({"v": (">", 2**53)}, {"v": float(2**53)})


@pytest.mark.parametrize("odd", [math.nan, math.inf, -math.inf, {1, 2}, b"x", object()])
def test_non_json_values_in_data_match_no_comparison(odd: Any) -> None:
    for op in OPERATORS[:-1]:
        assert not matches({"v": (op, 0)}, {"v": odd})
        assert not matches({"v": (op, "a")}, {"v": odd})
    assert matches({"v": ("exists", True)}, {"v": odd})


@pytest.mark.parametrize("data", [None, 7, "text", [1, 2], (), math.nan, object()])
def test_non_dict_data_does_not_match(data: Any) -> None:
    conditions = Conditions.parse({"a": ("!=", 1), "b": ("exists", True)}, label=LABEL)
    assert not conditions.matches(data)
    assert Conditions.parse({"a": ("exists", False)}, label=LABEL).matches(data)


def test_cycles_and_deep_data_never_raise() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    assert matches({"self.self.self": ("exists", True)}, cycle)
    assert not matches({"self": ("==", {"self": {}})}, cycle)
    assert matches({"self": ("!=", {"self": {"self": 1}})}, cycle)
    assert not matches({"v": ("==", [[[1]]])}, {"v": nested(50_000)})


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_the_deepest_operand_json_allows_still_matches() -> None:
    low, high = 1, 100_000  # parse accepts an operand this deep, and rejects one that deep
    while high - low > 1:
        middle = (low + high) // 2
        try:
            Conditions.parse({"v": ("==", nested(middle))}, label=LABEL)
            low = middle
        except DefinitionError:
            high = middle
    conditions = Conditions.parse({"v": ("==", nested(low))}, label=LABEL)
    assert conditions.matches({"v": nested(low)})
    assert not conditions.matches({"v": nested(low + 1)})


# --- explain, keys, journal form, describe ---------------------------------------------------


def test_explain_says_how_each_clause_went() -> None:
    conditions = Conditions.parse(
        {"id": ("==", 7), "status": ("==", 5), "gone": ("!=", 1), "total": (">", 20)},
        label=LABEL,
    )
    checks = conditions.explain(ORDER)
    assert [(c.matched, c.actual, c.reason) for c in checks] == [
        (True, 7, "true"),
        (False, "paid", "string, not number"),
        (False, MISSING, "missing"),
        (False, 12.5, "false"),
    ]
    assert all(isinstance(c, ClauseCheck) for c in checks)
    assert [c.clause for c in checks] == list(conditions.clauses)
    odd = Conditions.parse({"v": ("==", 1), "w": ("exists", False)}, label=LABEL)
    assert [(c.matched, c.reason) for c in odd.explain({"v": math.nan, "w": 1})] == [
        (False, "not a JSON value"),
        (False, "present"),
    ]


def test_equality_keys_are_for_scalar_equality_only() -> None:
    conditions = Conditions.parse(
        {
            "a": ("==", 1),
            "b": ("==", 1.0),
            "c": ("==", True),
            "d": ("==", None),
            "e": ("==", [1]),
            "f": ("!=", 1),
            "g": (">", 1),
            "h": ("==", "x"),
        },
        label=LABEL,
    )
    keys = dict(conditions.equality_keys())
    assert list(keys) == ["a", "b", "c", "d", "h"]
    assert keys["a"] == keys["b"] == index_key(1.0)
    assert keys["c"] != keys["a"]
    assert keys["d"] == index_key(None)
    assert keys["h"] == index_key("x") != index_key(["x"])
    assert index_key([1]) is None
    assert index_key({}) is None
    assert index_key(math.nan) is None


def test_journal_form_and_description() -> None:
    conditions = Conditions.parse(
        {
            "order_id": ("==", 7),
            "total": (">", 0),
            "customer.name": ("==", "Åse"),
            "receipt": ("exists", True),
            "refund": ("exists", False),
            "items": ("==", (1, {"a": None})),
        },
        label=LABEL,
    )
    assert conditions.to_json() == [
        ["order_id", "==", 7],
        ["total", ">", 0],
        ["customer.name", "==", "Åse"],
        ["receipt", "exists", True],
        ["refund", "exists", False],
        ["items", "==", [1, {"a": None}]],
    ]
    assert Conditions.from_json(conditions.to_json(), label=LABEL) == conditions
    assert conditions.clauses[1] == Clause("total", ("total",), ">", 0)
    assert conditions.describe() == (
        'order_id == 7 and total > 0 and customer.name == "Åse" and receipt exists'
        ' and refund does not exist and items == [1, {"a": null}]'
    )
    assert Conditions.parse(None, label=LABEL).describe() == "always"


def test_operands_are_copied_not_shared() -> None:
    operand = [1, {"a": 2}]
    conditions = Conditions.parse({"v": ("==", operand)}, label=LABEL)
    operand[1]["a"] = 3  # type: ignore[index]
    assert conditions.matches({"v": [1, {"a": 2}]})
    assert type(conditions.clauses[0].operand) is list


# --- definition errors ----------------------------------------------------------------------


class Unprintable:
    def __repr__(self) -> str:
        raise ValueError("no")


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([("a", "==", 1)], "where must be a dict, got [('a', '==', 1)]; write {path: (op, value)}"),
        ({5: ("==", 1)}, "where key 5 is not a string; write 'customer.id'"),
        ({"": ("==", 1)}, "where '': empty path; write dotted keys like 'customer.id'"),
        ({"a..b": ("==", 1)}, "where 'a..b': empty path segment"),
        ({".a": ("==", 1)}, "where '.a': empty path segment"),
        ({"a.": ("==", 1)}, "where 'a.': empty path segment"),
        ({"a": 7}, "where 'a': 7 is not a pair; write (op, value), like ('==', 7)"),
        ({"a": "=="}, "'==' is not a pair"),
        ({"a": ("==",)}, "is not a pair"),
        ({"a": ("==", 1, 2)}, "is not a pair"),
        ({"a": {"==": 1}}, "is not a pair"),
        ({"a": ("=", 1)}, "where 'a': unknown operator '='; use ==, !=, >, >=, <, <=, exists"),
        ({"a": ("in", [1])}, "unknown operator 'in'"),
        ({"a": (None, 1)}, "unknown operator None"),
        ({"a": ("exists", 1)}, "where 'a': 'exists' takes True (present) or False, not 1"),
        ({"a": ("exists", None)}, "not None"),
        ({"a": ("exists", "yes")}, "not 'yes'"),
        ({"a": (">", None)}, "where 'a': use a number or a string with >, not None"),
        ({"a": (">=", [1])}, "with >=, not [1]"),
        ({"a": ("<", {"x": 1})}, "with <, not {'x': 1}"),
        ({"a": ("<=", True)}, "with <=, not True; a bool works with == and != only"),
        ({"a": ("==", math.nan)}, "where 'a': operand nan is not JSON (Out of range float"),
        ({"a": (">", math.inf)}, "operand inf is not JSON"),
        ({"a": ("!=", [-math.inf])}, "operand [-inf] is not JSON"),
        ({"a": ("==", {1, 2})}, "operand {1, 2} is not JSON (Object of type set"),
        ({"a": ("==", [b"x"])}, "operand [b'x'] is not JSON (Object of type bytes"),
        ({"a": ("==", datetime.date(2024, 1, 2))}, "is not JSON (Object of type date"),
        ({"a": ("==", Unprintable())}, "operand <Unprintable> is not JSON"),
        ({"a": ("==", 10**5000)}, "operand <int> is not JSON (Exceeds the limit"),
        (
            {"a": ("==", {1: "x"})},
            "where 'a': operand {1: 'x'} has a key that is not a string; use str keys",
        ),
        ({"a": ("==", {(1,): "x"})}, "is not JSON (keys must be str"),
    ],
)
def test_definition_errors(where: Any, expected: str) -> None:
    message = error(where)
    assert message.startswith(LABEL + ": ")
    assert expected in message
    assert re.search(r"\b(use|write)\b|\(present\) or False", message), "says how to fix it"
    if isinstance(where, dict) and isinstance(path := next(iter(where)), str):
        assert f"{LABEL}: where {path!r}: " in message


def test_definition_error_fixes_say_what_to_use() -> None:
    assert "use None, a bool, a finite number, a string, a list or a dict" in error(
        {"a": ("==", math.nan)}
    )
    assert "use None, a bool" in error({"a": ("==", {1, 2})})


def test_self_containing_and_too_deep_operands_are_errors() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert "Circular reference" in error({"a": ("==", loop)})
    assert "is not JSON (maximum recursion depth" in error({"a": ("==", nested(50_000))})


def test_bools_are_fine_for_equality() -> None:
    assert matches({"a": ("==", True), "b": ("!=", False)}, {"a": True, "b": True})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": ["==", 1]}, "conditions must be a list, got {'a': ['==', 1]}; use to_json()"),
        ([["a", "=="]], "['a', '=='] is not a clause; write [path, op, value]"),
        (["a == 1"], "'a == 1' is not a clause"),
        ([["a", "~", 1]], "where 'a': unknown operator '~'"),
        ([["a..b", "==", 1]], "where 'a..b': empty path segment"),
    ],
)
def test_from_json_errors(value: Any, expected: str) -> None:
    with pytest.raises(DefinitionError) as info:
        Conditions.from_json(value, label=LABEL)
    assert str(info.value).startswith(LABEL + ": ")
    assert expected in str(info.value)


# --- reference model ------------------------------------------------------------------------


def ref_class(value: Any) -> str | None:
    if type(value) is float and (value != value or value in (math.inf, -math.inf)):
        return None
    table = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}
    table |= {list: "array", tuple: "array", dict: "object"}
    return table.get(type(value))


def ref_valid(value: Any) -> bool:
    """Whether `value` is JSON all the way down (what an operand must be)."""
    kind = ref_class(value)
    if kind == "array":
        return all(map(ref_valid, value))
    if kind == "object":
        return all(isinstance(key, str) and ref_valid(item) for key, item in value.items())
    return kind is not None


def tag(value: Any) -> Any:
    """A hashable stand-in equal to another's exactly when the two values are JSON-equal."""
    kind = ref_class(value)
    if kind is None:
        return object()
    if kind == "number":
        return (kind, Fraction(value))
    if kind == "array":
        return (kind, tuple(tag(item) for item in value))
    if kind == "object":
        return (kind, frozenset((key, tag(item)) for key, item in value.items()))
    return (kind, value)


def ref_lookup(data: Any, path: str) -> tuple[bool, Any]:
    for segment in path.split("."):
        if type(data) is dict and segment in data:
            data = data[segment]
        elif (
            type(data) in (list, tuple)
            and segment.isascii()
            and segment.isdigit()
            and str(int(segment)) == segment
            and int(segment) < len(data)
        ):
            data = data[int(segment)]
        else:
            return False, None
    return True, data


def ref_clause(path: str, op: str, operand: Any, data: Any) -> bool:
    present, value = ref_lookup(data, path)
    if op == "exists":
        return present is operand
    kind = ref_class(value)
    if not present or kind is None or kind != ref_class(operand):
        return False
    if op in ("==", "!="):
        return (tag(value) == tag(operand)) is (op == "==")
    left: Any
    right: Any
    if kind == "number":
        left, right = Fraction(value), Fraction(operand)
    elif kind == "string":
        left, right = [ord(c) for c in value], [ord(c) for c in operand]
    else:
        return False
    return bool(
        {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]
    )


def ref_matches(where: dict[str, tuple[str, Any]], data: Any) -> bool:
    return all(ref_clause(path, op, operand, data) for path, (op, operand) in where.items())


# --- strategies -----------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "0", "1", "01"])
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
NUMBERS = (
    st.integers(-3, 3)
    | st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.0, 3.0, 2**53, float(2**53), 10**400, 1e308])
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
)
STRINGS = st.text(alphabet="ab1", max_size=2)
JSON_SCALARS = st.none() | st.booleans() | NUMBERS | STRINGS
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
ODD_SCALARS = st.sampled_from([b"a", frozenset(), datetime.date.min, object()])


def values(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(keys, inner, max_size=3)
        ),
        max_leaves=10,
    )


OPERANDS = values(JSON_SCALARS, KEYS)
DATA = values(JSON_SCALARS | NON_FINITE | ODD_SCALARS, KEYS | st.sampled_from([0, 1]))
EVENTS = st.dictionaries(KEYS, DATA, min_size=1, max_size=4)  # what events mostly carry


def parts(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) inside `value`, so clauses can aim at what is there."""
    found = [(prefix, value)] if prefix else []
    items: list[tuple[Any, Any]]
    if type(value) is dict:
        items = [(key, item) for key, item in value.items() if isinstance(key, str)]
    else:
        items = list(enumerate(value)) if type(value) in (list, tuple) else []
    for key, item in items:
        found += parts(item, f"{prefix}.{key}" if prefix else str(key))
    return found


def near(value: Any) -> list[Any]:
    """Operands that compare with `value` in interesting ways."""
    if ref_class(value) == "number":
        return [value, value + 1, value - 1, float(value) if abs(value) < 1e300 else value, True]
    if ref_class(value) == "string":
        return [value, value + "a", value[:-1], "b"]
    return [value] if ref_valid(value) else [0, 1.5, "a", None]


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, tuple[str, Any]], Any]:
    data = draw(EVENTS if draw(st.integers(0, 4)) else DATA)
    inside = parts(data)
    where: dict[str, tuple[str, Any]] = {}
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(OPERATORS))
        if op in ("==", "!=", "exists") or draw(st.booleans()):
            targets = inside
        else:
            targets = [(p, v) for p, v in inside if ref_class(v) in ("number", "string", None)]
        aimed = targets and draw(st.integers(0, 3)) > 0
        path, there = draw(st.sampled_from(targets)) if aimed else (draw(PATHS), None)
        near_misses = [path.replace("1", "01"), "0" + path, path + ".0"]
        path = draw(st.sampled_from([path] * 4 + near_misses))
        if op == "exists":
            operand: Any = draw(st.booleans())
        elif aimed and draw(st.booleans()):
            operand = draw(st.sampled_from(near(there)))
        else:
            operand = draw(OPERANDS if op in ("==", "!=") else NUMBERS | STRINGS)
        if op in ("==", "!=", "exists") or ref_class(operand) in ("number", "string"):
            where[path] = (op, operand)
    return where, data


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=400)
@given(cases())
def test_matches_agrees_with_the_reference_model(case: tuple[dict[str, Any], Any]) -> None:
    where, data = case
    conditions = Conditions.parse(where, label=LABEL)
    assert conditions.matches(data) == ref_matches(where, data)
    checks = conditions.explain(data)
    assert [c.matched for c in checks] == [ref_matches({p: w}, data) for p, w in where.items()]


@given(EVENTS | DATA)
def test_every_part_of_the_data_agrees_with_the_reference_model(data: Any) -> None:
    for path, value in parts(data):
        for variant in (path, path.replace("1", "01"), "0" + path, path + ".0"):
            present, expected = ref_lookup(data, variant)
            assert lookup(data, tuple(variant.split("."))) is (expected if present else MISSING)
        for op in OPERATORS[:-1]:
            for operand in near(value):
                if op in ("==", "!=") or ref_class(operand) in ("number", "string"):
                    where = {path: (op, operand)}
                    assert matches(where, data) == ref_matches(where, data), where


@given(cases(), DATA)
def test_matches_never_raises(case: tuple[dict[str, Any], Any], other: Any) -> None:
    conditions = Conditions.parse(case[0], label=LABEL)
    for data in (case[1], other, {"a": other, "0": other, "b": [other]}):
        assert isinstance(conditions.matches(data), bool)
        assert len(conditions.explain(data)) == len(conditions.clauses)


@given(cases())
def test_journal_form_round_trips(case: tuple[dict[str, Any], Any]) -> None:
    where, data = case
    conditions = Conditions.parse(where, label=LABEL)
    text = json.dumps(conditions.to_json())
    again = Conditions.from_json(json.loads(text), label=LABEL)
    assert again == conditions
    assert json.dumps(again.to_json()) == text
    assert again.matches(data) == conditions.matches(data)
    assert again.describe() == conditions.describe()


@given(cases(), cases())
def test_conditions_are_anded(
    first: tuple[dict[str, Any], Any], second: tuple[dict[str, Any], Any]
) -> None:
    one = Conditions.parse(first[0], label=LABEL)
    two = Conditions.parse(second[0], label=LABEL)
    both = Conditions(one.clauses + two.clauses)
    for data in (first[1], second[1]):
        assert both.matches(data) == (one.matches(data) and two.matches(data))


@settings(max_examples=400)
@given(JSON_SCALARS, JSON_SCALARS | NON_FINITE | ODD_SCALARS | OPERANDS)
def test_index_key_agrees_with_equality(operand: Any, value: Any) -> None:
    equal = Conditions.parse({"x": ("==", operand)}, label=LABEL).matches({"x": value})
    assert (index_key(operand) == index_key(value)) == equal
    assert index_key(operand) is not None
    assert (hash(index_key(operand)) == hash(index_key(value))) or not equal

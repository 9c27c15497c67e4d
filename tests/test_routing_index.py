"""The dispatcher's index routes exactly as a scan of every trigger and wait would.

`Dispatcher.route` looks at candidates only (`ConditionIndex`: entries filed by their
scalar ``==`` clauses). These properties build triggers and waits from random conditions,
replace and remove them at random, and compare each event's routing with a brute-force
evaluation of every live trigger and wait: values that are equal across types or not
(``1``, ``1.0``, ``True``, ``"1"``, ``None``, lists, objects), nested and missing paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings
from test_conditions import DATA, OPERANDS, cases

from orchestrator.define.conditions import OPERATORS, Conditions
from orchestrator.define.waits import Wait
from orchestrator.engine.dispatcher import ConditionIndex, Dispatcher

LABEL = "test"
TYPES = ("paid", "shipped")
WORKFLOWS = ("w0", "w1", "w2", "w3", "w4")
SOURCES = st.none() | st.sampled_from([frozenset({"api"}), frozenset({"file", "cli"})])
# Values that are equal across Python types or only look alike: the index must tell them
# apart exactly as `==` in conditions does.
TRICKY: st.SearchStrategy[Any] = st.sampled_from(
    [1, 1.0, True, "1", 0, 0.0, -0.0, False, "", None, 2**53, float(2**53), 2**53 + 1, [1], {}]
)
INDEXED_PATHS = st.sampled_from(["tenant", "a.b", "a.0", "items.1.sku", "0"])


@st.composite
def wheres(draw: st.DrawFn) -> dict[str, tuple[str, Any]]:
    """Mostly ``==`` on a few shared paths (so buckets collide), with other clauses."""
    if draw(st.integers(0, 3)) == 0:
        return draw(cases())[0]
    where: dict[str, tuple[str, Any]] = {}
    for _ in range(draw(st.integers(0, 3))):
        path = draw(INDEXED_PATHS)
        op = draw(st.sampled_from(["==", "==", "==", *OPERATORS]))
        if op == "exists":
            operand: Any = draw(st.booleans())
        elif op in ("==", "!="):
            operand = draw(TRICKY | OPERANDS)
        else:
            operand = draw(st.sampled_from([0, 1, 1.5, "1", "b"]))
        where[path] = (op, operand)
    return where


def nested(path: str, value: Any) -> Any:
    """Data holding `value` at `path` (digit segments become list indexes)."""
    for segment in reversed(path.split(".")):
        value = [None] * int(segment) + [value] if segment.isdigit() else {segment: value}
    return value


@st.composite
def events(draw: st.DrawFn) -> Any:
    """Event data: aimed at the indexed paths with tricky values, or anything at all."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(cases())[1]
    if choice == 1:
        return draw(DATA)
    data: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 3))):
        path = draw(INDEXED_PATHS)
        extra = nested(path, draw(TRICKY | DATA))
        if isinstance(extra, dict):
            data.update(extra)
    return data


@dataclass(frozen=True)
class SetTriggers:
    workflow_id: str
    triggers: dict[str, tuple[str, dict[str, Any], frozenset[str] | None]]


@dataclass(frozen=True)
class RemoveTriggers:
    workflow_id: str


@dataclass(frozen=True)
class AddWait:
    wait_id: int
    event_type: str
    where: dict[str, Any]


@dataclass(frozen=True)
class RemoveWait:
    wait_id: int


TRIGGERS = st.dictionaries(
    st.sampled_from(["t0", "t1", "t2"]),
    st.tuples(st.sampled_from(TYPES), wheres(), SOURCES),
    max_size=3,
)
ACTIONS = st.lists(
    st.one_of(
        st.builds(SetTriggers, st.sampled_from(WORKFLOWS), TRIGGERS),
        st.builds(RemoveTriggers, st.sampled_from(WORKFLOWS)),
        st.builds(AddWait, st.integers(1, 12), st.sampled_from(TYPES), wheres()),
        st.builds(RemoveWait, st.integers(1, 12)),
    ),
    max_size=25,
)


class BruteForce:
    """What routing means: every live trigger and wait, checked one by one."""

    def __init__(self) -> None:
        # (workflow, trigger) -> (event type, conditions, sources), in indexing order.
        self.triggers: dict[tuple[str, str], tuple[str, Conditions, frozenset[str] | None]] = {}
        self.waits: dict[int, Wait] = {}

    def route(
        self, event_type: str, data: Any, source: str, origin: str | None
    ) -> tuple[list[tuple[str, str]], list[int]]:
        starts = [
            key
            for key, (kind, conditions, sources) in self.triggers.items()
            if kind == event_type
            and (sources is None or source in sources)
            and key[0] != origin
            and conditions.matches(data)
        ]
        waits = sorted(
            wait.id
            for wait in self.waits.values()
            if wait.event_type == event_type and wait.conditions.matches(data)
        )
        return starts, waits

    def listens(self, event_type: str, origin: str | None) -> bool:
        triggered = any(
            kind == event_type and key[0] != origin for key, (kind, _, _) in self.triggers.items()
        )
        return triggered or any(w.event_type == event_type for w in self.waits.values())


def apply(action: object, dispatcher: Dispatcher, brute: BruteForce) -> None:
    if isinstance(action, SetTriggers):
        parsed = {
            tid: (kind, Conditions.parse(where, label=LABEL), sources)
            for tid, (kind, where, sources) in action.triggers.items()
        }
        dispatcher.set_triggers(action.workflow_id, parsed)
        for key in [key for key in brute.triggers if key[0] == action.workflow_id]:
            del brute.triggers[key]
        for tid, entry in parsed.items():
            brute.triggers[(action.workflow_id, tid)] = entry
    elif isinstance(action, RemoveTriggers):
        dispatcher.remove_triggers(action.workflow_id)
        for key in [key for key in brute.triggers if key[0] == action.workflow_id]:
            del brute.triggers[key]
    elif isinstance(action, AddWait):
        if action.wait_id in brute.waits:  # a wait id is used once; a new one replaces none
            return
        conditions = Conditions.parse(action.where, label=LABEL)
        wait = Wait(action.wait_id, 1, "run", action.event_type, conditions, persistent=False)
        dispatcher.add_wait(wait)
        brute.waits[wait.id] = wait
    elif isinstance(action, RemoveWait):
        removed = brute.waits.pop(action.wait_id, None)
        if removed is not None:
            dispatcher.remove_wait(removed)


@settings(max_examples=300, deadline=None)
@given(
    ACTIONS,
    st.lists(
        st.tuples(
            st.sampled_from(TYPES),
            events(),
            st.sampled_from(["api", "file"]),
            st.none() | st.sampled_from(WORKFLOWS),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_indexed_routing_equals_the_linear_scan(
    actions: list[object], emitted: list[tuple[str, Any, str, str | None]]
) -> None:
    dispatcher, brute = Dispatcher(), BruteForce()
    for action in actions:
        apply(action, dispatcher, brute)
    for event_type, data, source, origin in emitted:
        routing = dispatcher.route(event_type, data, source, origin)
        starts = [(entry.workflow_id, entry.trigger_id) for entry in routing.starts]
        assert (starts, [wait.id for wait in routing.waits]) == brute.route(
            event_type, data, source, origin
        ), (event_type, data)
        assert dispatcher.listens(event_type, origin) == brute.listens(event_type, origin)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), wheres()), max_size=15), events())
def test_the_index_returns_every_match_once_and_keeps_no_empty_bucket(
    items: list[tuple[int, dict[str, Any]]], data: Any
) -> None:
    index: ConditionIndex[int, int] = ConditionIndex()
    live: dict[int, Conditions] = {}
    for key, where in items:
        conditions = Conditions.parse(where, label=LABEL)
        index.add(key, conditions, key)
        live[key] = conditions
    candidates = list(index.candidates(data))
    assert len(candidates) == len(set(candidates))
    assert {k for k, c in live.items() if c.matches(data)} <= set(candidates)
    for key in list(live):
        index.remove(key)
    assert not index
    assert list(index.candidates(data)) == []
    assert not index._groups


def test_many_tenants_route_by_lookup_not_by_scan() -> None:
    """1,000 workflows on one event type, one per tenant: an event finds its one trigger."""
    dispatcher = Dispatcher()
    for k in range(1_000):
        where = Conditions.parse({"tenant": ("==", k), "amount": (">", 0)}, label=LABEL)
        dispatcher.set_triggers(f"tenant_{k}", {"paid": ("paid", where, None)})
    index = dispatcher._triggers["paid"]
    assert len(list(index.candidates({"tenant": 7, "amount": 1}))) == 1
    assert len(list(index.candidates({"tenant": "7", "amount": 1}))) == 0
    routing = dispatcher.route("paid", {"tenant": 7.0, "amount": 1}, "api")
    assert [entry.workflow_id for entry in routing.starts] == ["tenant_7"]
    assert dispatcher.route("paid", {"tenant": True, "amount": 1}, "api").starts == []


def test_starts_keep_the_order_triggers_were_indexed_in() -> None:
    """Keyed or not, in whichever bucket: the order of indexing; a replaced one goes last."""
    dispatcher = Dispatcher()
    keyed = Conditions.parse({"tenant": ("==", 1)}, label=LABEL)
    nested_key = Conditions.parse({"a.b": ("==", "x"), "tenant": ("==", 1.0)}, label=LABEL)
    always = Conditions.parse(None, label=LABEL)
    dispatcher.set_triggers("w0", {"t": ("paid", keyed, None)})
    dispatcher.set_triggers("w1", {"t": ("paid", always, None)})
    dispatcher.set_triggers("w2", {"t": ("paid", nested_key, None)})
    dispatcher.set_triggers("w3", {"t": ("paid", keyed, None)})
    data = {"tenant": 1, "a": {"b": "x"}}

    def order() -> list[str]:
        return [entry.workflow_id for entry in dispatcher.route("paid", data, "api").starts]

    assert order() == ["w0", "w1", "w2", "w3"]
    dispatcher.set_triggers("w0", {"t": ("paid", keyed, None)})
    assert order() == ["w1", "w2", "w3", "w0"]
    dispatcher.remove_triggers("w2")
    assert order() == ["w1", "w3", "w0"]

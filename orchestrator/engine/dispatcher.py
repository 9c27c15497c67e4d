"""Events -> the triggers they start and the waits they match, through an index.

Triggers and waits can both be many: 1,000 workflows (one per tenant) listening to the
same event types, each for its own ``tenant``; 10,000 runs parked on one event type, each
for its own ``order_id``. So each one with ``==`` clauses on scalars is filed under those
clauses' paths and values (`ConditionIndex`); an event looks up, per distinct set of such
paths, the one bucket its values select, and only the entries without such a clause are
scanned. The candidates' full conditions are then checked, so the outcome is the linear
scan's (a property test compares them): the cost of routing an event does not grow with
the triggers and waits that cannot match it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..define.conditions import Conditions, index_key, lookup
from ..define.waits import Wait
from ..journal import DormantRow

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class TriggerEntry:
    """A workflow trigger listening to one event type."""

    workflow_id: str
    trigger_id: str
    conditions: Conditions
    # The sources whose events it takes; None: any.
    sources: frozenset[str] | None = None
    # When it was indexed: routing lists triggers in this order.
    seq: int = 0


@dataclass(frozen=True)
class Routing:
    """What one event matches: triggers to start and waits (in registration order)."""

    starts: list[TriggerEntry]
    waits: list[Wait]


@dataclass
class _Group:
    """The entries whose scalar ``==`` clauses are on one tuple of paths."""

    keys: tuple[tuple[str, ...], ...]  # each path's segments
    # Each bucket: its items by key, or while it holds one item that (key, item) pair:
    # 100,000 waits each on its own key are then tuples, which the garbage collector stops
    # tracking (a dict stays tracked until a full collection, which it makes come sooner).
    by_values: dict[tuple[Hashable, ...], dict[Any, Any] | tuple[Any, Any]] = field(
        default_factory=dict
    )


class ConditionIndex(Generic[K, T]):
    """Items under conditions, so that an event's candidates are found without a scan.

    An item whose conditions have ``==`` clauses with scalar operands is filed under all of
    them: its group is the sorted tuple of their paths, its bucket the tuple of their
    `index_key`s. An event's candidates are the items of no such clause, and for each group
    the one bucket of the event's own values there (none when a value is missing or not a
    scalar: no ``==`` on a scalar can match it). Every item that matches an event is a
    candidate (equal index keys exactly when ``==`` matches); the caller checks the rest.

    Invariant: `_filed` holds each item's key with the group and bucket it is in (None:
    in `_unkeyed`), and no group or bucket is left empty.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], _Group] = {}
        self._unkeyed: dict[K, T] = {}
        self._filed: dict[K, tuple[tuple[str, ...], tuple[Hashable, ...]] | None] = {}

    def __bool__(self) -> bool:
        return bool(self._filed)

    def __len__(self) -> int:
        return len(self._filed)

    def add(self, key: K, conditions: Conditions, item: T) -> None:
        """File `item` under `key` (replacing what `key` held)."""
        self.add_keyed(key, conditions.equality_keys(), item)

    def add_keyed(self, key: K, equality_keys: Sequence[tuple[str, Hashable]], item: T) -> None:
        """File `item` under `key`, given its conditions' `equality_keys` (not the conditions)."""
        if key in self._filed:
            self.remove(key)
        clauses = (
            equality_keys
            if len(equality_keys) < 2
            else sorted(equality_keys, key=lambda clause: clause[0])
        )
        if not clauses:
            self._unkeyed[key] = item
            self._filed[key] = None
            return
        paths: tuple[str, ...]
        values: tuple[Hashable, ...]
        if len(clauses) == 1:  # the common case, without building generators
            paths, values = (clauses[0][0],), (clauses[0][1],)
        else:
            paths = tuple(path for path, _ in clauses)
            values = tuple(index for _, index in clauses)
        group = self._groups.get(paths)
        if group is None:  # a clause's keys are its path split at dots
            group = self._groups[paths] = _Group(tuple(tuple(p.split(".")) for p in paths))
        bucket = group.by_values.get(values)
        if bucket is None:
            group.by_values[values] = (key, item)
        elif isinstance(bucket, dict):
            bucket[key] = item
        else:
            group.by_values[values] = {bucket[0]: bucket[1], key: item}
        self._filed[key] = (paths, values)

    def remove(self, key: K) -> None:
        """Stop filing whatever `key` held (nothing if it held nothing)."""
        if key not in self._filed:
            return
        filed = self._filed.pop(key)
        if filed is None:
            del self._unkeyed[key]
            return
        paths, values = filed
        group = self._groups[paths]
        bucket = group.by_values[values]
        if isinstance(bucket, dict):
            del bucket[key]
            if bucket:
                return
        del group.by_values[values]  # it held `key` alone
        if not group.by_values:
            del self._groups[paths]

    def candidates(self, data: Any) -> Iterator[T]:
        """Every item that could match `data`: the unkeyed ones, then the selected buckets."""
        yield from self._unkeyed.values()
        for group in self._groups.values():
            values = []
            for keys in group.keys:
                index = index_key(lookup(data, keys))
                if index is None:
                    break
                values.append(index)
            else:
                bucket = group.by_values.get(tuple(values))
                if isinstance(bucket, dict):
                    yield from bucket.values()
                elif bucket is not None:
                    yield bucket[1]


class Dispatcher:
    """The trigger and wait index of this process."""

    def __init__(self) -> None:
        self._triggers: dict[str, ConditionIndex[tuple[str, str], TriggerEntry]] = {}
        # Invariant: where each workflow's entries are in `_triggers` (event type and key),
        # so replacing one workflow's triggers costs its own triggers, not everyone's.
        self._entries_of: dict[str, list[tuple[str, tuple[str, str]]]] = {}
        # Waits by event type; a `DormantRow` stands for a wait armed lazily (`Parking`),
        # made a `Wait` by `materialize` when an event is a candidate for it.
        self._waits: dict[str, ConditionIndex[int, Wait | DormantRow]] = {}
        self._seq = 0
        # None: the run was failed instead (its state cannot be read).
        self.materialize: Callable[[DormantRow], Wait | None] | None = None

    def set_triggers(
        self,
        workflow_id: str,
        entries: dict[str, tuple[str, Conditions, frozenset[str] | None]],
    ) -> None:
        """Replace a workflow's event triggers.

        `entries`: trigger id -> (event type, conditions, the sources it takes or None).
        """
        self.remove_triggers(workflow_id)
        for trigger_id, (event_type, conditions, sources) in entries.items():
            self._seq += 1
            entry = TriggerEntry(workflow_id, trigger_id, conditions, sources, self._seq)
            key = (workflow_id, trigger_id)
            self._triggers.setdefault(event_type, ConditionIndex()).add(key, conditions, entry)
            self._entries_of.setdefault(workflow_id, []).append((event_type, key))

    def remove_triggers(self, workflow_id: str) -> None:
        """Stop routing events to a workflow's triggers."""
        for event_type, key in self._entries_of.pop(workflow_id, ()):
            index = self._triggers[event_type]
            index.remove(key)
            if not index:
                del self._triggers[event_type]

    def add_wait(self, wait: Wait) -> None:
        """Start matching events against `wait` (a sleep matches none)."""
        if wait.event_type is not None:
            self._wait_index(wait.event_type).add(wait.id, wait.conditions, wait)

    def add_dormant(
        self, dormant: DormantRow, equality_keys: Sequence[tuple[str, Hashable]]
    ) -> None:
        """Start matching events against a lazily armed wait, filed by its `equality_keys`."""
        # By its event type, under its wait id.
        self._wait_index(dormant[9]).add_keyed(dormant[0], equality_keys, dormant)

    def _wait_index(self, event_type: str) -> ConditionIndex[int, Wait | DormantRow]:
        """The waits on `event_type` (no index made per call, as `setdefault` would)."""
        index = self._waits.get(event_type)
        if index is None:
            index = self._waits[event_type] = ConditionIndex()
        return index

    def remove_wait(self, wait: Wait | DormantRow) -> None:
        """Stop matching events against `wait`."""
        event_type, wait_id = (
            (wait.event_type or "", wait.id) if isinstance(wait, Wait) else (wait[9], wait[0])
        )
        index = self._waits.get(event_type)
        if index is not None:
            index.remove(wait_id)
            if not index:
                del self._waits[event_type]

    def listens(self, event_type: str, origin: str | None = None) -> bool:
        """Whether a trigger or wait could match an event of `event_type` (its data aside).

        `origin`: as for `route`, a workflow whose own triggers do not count.
        """
        if event_type in self._waits:
            return True
        triggers = self._triggers.get(event_type)
        if triggers is None:
            return False
        if origin is None:
            return True
        own = sum(1 for event, _ in self._entries_of.get(origin, ()) if event == event_type)
        return len(triggers) > own

    def route(self, event_type: str, data: Any, source: str, origin: str | None = None) -> Routing:
        """The triggers and waits an event from `source` matches.

        `origin`: the workflow a system event is about; none of its own triggers match it
        (a workflow never triggers itself through its runs' ends; its waits still match).
        """
        triggers = self._triggers.get(event_type)
        starts = (
            []
            if triggers is None
            else [
                entry
                for entry in triggers.candidates(data)
                if (entry.sources is None or source in entry.sources)
                and entry.workflow_id != origin
                and entry.conditions.matches(data)
            ]
        )
        starts.sort(key=lambda entry: entry.seq)
        index = self._waits.get(event_type)
        waits = [] if index is None else self._woken(list(index.candidates(data)))
        waits = [w for w in waits if w.conditions.matches(data)]
        waits.sort(key=lambda wait: wait.id)
        return Routing(starts, waits)

    def _woken(self, candidates: list[Wait | DormantRow]) -> list[Wait]:
        """The candidates, each dormant one made a `Wait` (it is then filed as one)."""
        if self.materialize is None:
            return [w for w in candidates if isinstance(w, Wait)]
        materialize = self.materialize
        woken = [w if isinstance(w, Wait) else materialize(w) for w in candidates]
        return [w for w in woken if w is not None]

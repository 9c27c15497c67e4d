"""Events -> the triggers they start and the waits they match, through an index.

Triggers are few and kept per event type. Waits can be many (10,000 runs parked on one
event type, each for its own ``order_id``), so each wait with an ``==`` condition is filed
under that condition's (path, value); an event looks up, per distinct path, the one bucket
its value selects, and only waits without an ``==`` condition are scanned. The cost of
routing an event does not grow with the number of parked runs that cannot match it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..define.conditions import MISSING, Conditions, index_key, lookup
from ..define.waits import Wait


@dataclass(frozen=True)
class TriggerEntry:
    """A workflow trigger listening to one event type."""

    workflow_id: str
    trigger_id: str
    conditions: Conditions
    # The sources whose events it takes; None: any.
    sources: frozenset[str] | None = None


@dataclass(frozen=True)
class Routing:
    """What one event matches: triggers to start and waits (in registration order)."""

    starts: list[TriggerEntry]
    waits: list[Wait]


@dataclass
class _WaitIndex:
    by_key: dict[tuple[str, Hashable], dict[int, Wait]] = field(default_factory=dict)
    paths: Counter[str] = field(default_factory=Counter)
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unkeyed: dict[int, Wait] = field(default_factory=dict)

    def add(self, wait: Wait) -> None:
        bucket = _bucket(wait)
        if bucket is None:
            self.unkeyed[wait.id] = wait
            return
        self.by_key.setdefault(bucket, {})[wait.id] = wait
        self.paths[bucket[0]] += 1
        self.keys.setdefault(bucket[0], _clause_keys(wait, bucket[0]))

    def remove(self, wait: Wait) -> None:
        bucket = _bucket(wait)
        if bucket is None:
            self.unkeyed.pop(wait.id, None)
            return
        waits = self.by_key.get(bucket)
        if waits is None or waits.pop(wait.id, None) is None:
            return
        if not waits:
            del self.by_key[bucket]
        self.paths[bucket[0]] -= 1
        if not self.paths[bucket[0]]:
            del self.paths[bucket[0]]
            del self.keys[bucket[0]]

    def candidates(self, data: Any) -> Iterator[Wait]:
        yield from self.unkeyed.values()
        for path in self.paths:
            value = lookup(data, self.keys[path])
            key = None if value is MISSING else index_key(value)
            if key is not None:
                yield from self.by_key.get((path, key), {}).values()


def _bucket(wait: Wait) -> tuple[str, Hashable] | None:
    keys = wait.conditions.equality_keys()
    return keys[0] if keys else None


def _clause_keys(wait: Wait, path: str) -> tuple[str, ...]:
    return next(clause.keys for clause in wait.conditions.clauses if clause.path == path)


class Dispatcher:
    """The trigger and wait index of this process."""

    def __init__(self) -> None:
        self._triggers: dict[str, dict[tuple[str, str], TriggerEntry]] = {}
        # Invariant: where each workflow's entries are in `_triggers` (event type and key),
        # so replacing one workflow's triggers costs its own triggers, not everyone's.
        self._entries_of: dict[str, list[tuple[str, tuple[str, str]]]] = {}
        self._waits: dict[str, _WaitIndex] = {}

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
            entry = TriggerEntry(workflow_id, trigger_id, conditions, sources)
            self._triggers.setdefault(event_type, {})[(workflow_id, trigger_id)] = entry
            self._entries_of.setdefault(workflow_id, []).append(
                (event_type, (workflow_id, trigger_id))
            )

    def remove_triggers(self, workflow_id: str) -> None:
        """Stop routing events to a workflow's triggers."""
        for event_type, key in self._entries_of.pop(workflow_id, ()):
            by_id = self._triggers[event_type]
            del by_id[key]
            if not by_id:
                del self._triggers[event_type]

    def add_wait(self, wait: Wait) -> None:
        """Start matching events against `wait` (a sleep matches none)."""
        if wait.event_type is not None:
            self._waits.setdefault(wait.event_type, _WaitIndex()).add(wait)

    def remove_wait(self, wait: Wait) -> None:
        """Stop matching events against `wait`."""
        index = self._waits.get(wait.event_type or "")
        if index is not None:
            index.remove(wait)

    def listens(self, event_type: str, origin: str | None = None) -> bool:
        """Whether a trigger or wait could match an event of `event_type` (its data aside).

        `origin`: as for `route`, a workflow whose own triggers do not count.
        """
        triggers = self._triggers.get(event_type, {})
        if any(workflow_id != origin for workflow_id, _ in triggers):
            return True
        index = self._waits.get(event_type)
        return index is not None and bool(index.unkeyed or index.by_key)

    def route(self, event_type: str, data: Any, source: str, origin: str | None = None) -> Routing:
        """The triggers and waits an event from `source` matches.

        `origin`: the workflow a system event is about; none of its own triggers match it
        (a workflow never triggers itself through its runs' ends; its waits still match).
        """
        starts = [
            entry
            for entry in self._triggers.get(event_type, {}).values()
            if (entry.sources is None or source in entry.sources)
            and entry.workflow_id != origin
            and entry.conditions.matches(data)
        ]
        index = self._waits.get(event_type)
        waits = (
            []
            if index is None
            else [w for w in index.candidates(data) if w.conditions.matches(data)]
        )
        waits.sort(key=lambda wait: wait.id)
        return Routing(starts, waits)

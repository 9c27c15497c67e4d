"""What the CLI's writing commands check and write, the same on every backend (no SQL here).

Which statuses allow which command, the checks of a switch and of a fork's step against
what the journal last saw, how a payload and a queued run's input are kept, and the event
triggers of a journaled workflow. `sqlite/commands.py` and `postgres/commands.py` run the
same rules with their own SQL; `SharedRoutingReads` is what `emit` reads of its event, each
backend's `routing.py` giving its SQL as a `RoutingSQL` table.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import StepNotFound, TriggerNotFound, ValidationError
from ..records import RunStatus, id_problem
from ..state import StateEncodingError, encode_state
from .records import EventListeners, EventRoute, EventRouting

_UNFINISHED = {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED}
ALLOWED = {
    "resume": ({RunStatus.PAUSED}, "only a paused run can be resumed"),
    "signal": (_UNFINISHED, "only an active run can be signalled"),
    "abort": (_UNFINISHED, "only an unfinished run can be aborted"),
    "retry": ({RunStatus.FAILED, RunStatus.ABORTED}, "only a failed or aborted run can be retried"),
}
"""Per run command: the statuses it applies to, and the rule to quote otherwise."""
SWITCHES = ("disable", "enable")
ABORTED_UNAPPLIED = "aborted by request (before a daemon applied its invoke)"
QUEUED_MESSAGE = "queued while no daemon runs: it starts when a daemon applies its invoke"


def check_switch(command: str, workflow_id: str, trigger_id: str | None) -> None:
    """A switch command's arguments (`ValidationError` if they cannot be one)."""
    if command not in SWITCHES:
        raise ValidationError(f"a switch is 'disable' or 'enable', got {command!r}")
    for value, what in ((workflow_id, "workflow"), (trigger_id, "trigger")):
        problem = None if value is None else id_problem(value, what)
        if problem is not None:
            raise ValidationError(problem)


def check_invoke(workflow_id: str, trigger_id: str) -> None:
    """An invoke's workflow and trigger ids (`ValidationError` if no workflow could have them).

    Checked before the run is queued: with no daemon running, it would wait for one that
    can only fail it.
    """
    for value, what in ((workflow_id, "workflow"), (trigger_id, "trigger")):
        problem = id_problem(value, what)
        if problem is not None:
            raise ValidationError(problem)


def check_trigger(triggers: str | None, workflow_id: str, trigger_id: str) -> None:
    """`TriggerNotFound` unless the loaded workflow (its `triggers` JSON) has `trigger_id`.

    None (not loaded yet) or a list that cannot be read takes any trigger id at its word.
    """
    if triggers is None:
        return
    try:
        known = [str(t.get("trigger_id")) for t in json.loads(triggers) if isinstance(t, dict)]
    except (ValueError, TypeError, AttributeError):
        return
    if trigger_id not in known:
        raise TriggerNotFound(
            f"workflow {workflow_id!r} has no trigger {trigger_id!r} (it has: "
            f"{', '.join(known) or 'none'})"
        )


def check_fork_step(
    from_step: str | None, definition: str | None, workflow_id: str, trigger_id: str
) -> None:
    """`StepNotFound` if the journaled pipeline (`definition`) has no step `from_step`."""
    if from_step is None:
        return
    steps = pipeline_steps(definition, trigger_id)
    if steps is not None and from_step not in steps:
        raise StepNotFound.unknown(from_step, workflow_id, trigger_id, steps)


def pipeline_steps(definition: str | None, trigger_id: str) -> list[str] | None:
    """The step names of one pipeline in a journaled definition; None if it does not say."""
    try:
        steps = json.loads(definition or "null")["pipelines"][trigger_id]
    except (ValueError, TypeError, KeyError):
        return None
    return [str(step) for step in steps] if isinstance(steps, list) else None


def queued_state(data: Any) -> str:
    """A queued run's input as its first checkpoint (what the daemon will refuse, as text)."""
    try:
        return encode_state({} if data is None else data)
    except StateEncodingError:
        return json.dumps(data, default=repr)


def payload_text(payload: Any) -> str | None:
    """A command's payload as the inbox keeps it."""
    return None if payload is None else json.dumps(payload, ensure_ascii=False)


def routing_of(
    event_id: str, found: Sequence[Any], routes: Iterable[Sequence[Any]]
) -> EventRouting:
    """An event's routing from its row (type, routed_at) and its routes' rows (in order)."""
    return EventRouting(
        event_id=event_id,
        event_type=str(found[0]),
        routed=found[1] is not None,
        routes=[
            EventRoute(action=row[0], run_id=row[1], workflow_id=row[2], trigger_id=row[3])
            for row in routes
        ],
    )


def listeners_of(
    off: Iterable[Sequence[Any]],
    workflows: Iterable[Sequence[Any]],
    waited: Iterable[Sequence[Any]],
) -> EventListeners:
    """What listens to events, from rows: switches off, present workflows, waited types.

    `off` holds (workflow, trigger) of the switches that are off, `workflows` (id, triggers
    JSON) of the present workflows by id, `waited` (event type, runs) of the live waits.
    """
    switched_off = {(row[0], row[1]) for row in off}
    listeners = EventListeners()
    for workflow_id, triggers in workflows:
        for trigger_id, event_type in event_triggers(triggers):
            disabled = {(workflow_id, ""), (workflow_id, trigger_id)} & switched_off
            into = listeners.disabled if disabled else listeners.triggers
            into.setdefault(event_type, []).append(f"{workflow_id}/{trigger_id}")
    for event_type, runs in waited:
        listeners.waits[str(event_type)] = int(runs)
    return listeners


def event_triggers(text: object) -> list[tuple[str, str]]:
    """(trigger id, event type) of each event trigger in a `workflows.triggers` JSON list."""
    try:
        triggers = json.loads(str(text))
    except ValueError:  # a damaged row: no triggers, not a failed command
        return []
    if not isinstance(triggers, list):
        return []
    return [
        (str(t.get("trigger_id")), str(t["event"]))
        for t in triggers
        if isinstance(t, dict) and t.get("type") == "event" and "event" in t
    ]


@dataclass(frozen=True, slots=True)
class RoutingSQL:
    """One dialect's statements for `SharedRoutingReads`."""

    event: str  # (type, routed_at) of the event bound
    routes: str  # (action, run_id, workflow_id, trigger_id) of the event bound
    switched_off: str
    workflows: str
    waited: str


class SharedRoutingReads(ABC):
    """What `RoutingReads` reads the same way on every backend, with its dialect's SQL."""

    _sql: ClassVar[RoutingSQL]

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query (blocking)."""

    def event_routing(self, event_id: str) -> EventRouting | None:
        """The event's type, whether it is routed, and its routes (by run row, then action)."""
        found = self._rows(self._sql.event, (event_id,))
        if not found:
            return None
        return routing_of(event_id, found[0], self._rows(self._sql.routes, (event_id,)))

    def event_listeners(self) -> EventListeners:
        """The registered workflows' event triggers (split by switch) and the waited types."""
        return listeners_of(
            self._rows(self._sql.switched_off),
            self._rows(self._sql.workflows),
            self._rows(self._sql.waited),
        )

"""The event bus: accept an event and route it, in one batch with everything it causes.

An event is journaled together with its routing outcome (runs it started, runs it resumed,
events it buffered for which waits), so a crash either loses both (an in-process `emit`
that never returned) or keeps both; an event written by another process is marked routed
in the same batch as its effects, so after a crash it is routed again once, never twice.
A disabled workflow or trigger (`Switches`) starts no run: its event is journaled all the
same, and never starts one later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..journal import JournalWriter, ops
from ..records import EventSource
from ..state import encode_state
from .admission import CONSEQUENCES, Admission
from .dispatcher import Dispatcher
from .parking import Parking
from .registry import RegisteredWorkflow
from .switches import Switches


class EventBus:
    """Routes events to triggers (new runs) and to waits (resume or buffer)."""

    def __init__(
        self,
        writer: JournalWriter,
        clock: Clock,
        dispatcher: Dispatcher,
        parking: Parking,
        admission: Admission,
        lookup: Callable[[str], RegisteredWorkflow | None],
        switches: Switches,
    ) -> None:
        self._writer, self._clock = writer, clock
        self._dispatcher, self._parking, self._admission = dispatcher, parking, admission
        self._lookup, self._switches = lookup, switches

    def accept(
        self,
        event_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str,
        external: bool = False,
    ) -> list[str]:
        """Route one event and enqueue it with its effects; returns the started run ids.

        Invariant: the event and every write it causes join the same batch (the writer
        holds it back until they are all enqueued): a crash keeps all or none of them.
        """
        with self._writer.together():
            return self._route(event_id, event_type, data, source=source, external=external)

    def skip(self, event_id: str) -> None:
        """Mark an event from another process routed without routing it (it is unreadable)."""
        self._writer.submit([ops.mark_routed(event_id, self._clock.now_us())])

    def _route(
        self,
        event_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str,
        external: bool,
    ) -> list[str]:
        now = self._clock.now_us()
        writes = [
            ops.mark_routed(event_id, now)
            if external
            else ops.add_event(event_id, event_type, encode_state(data), source, now)
        ]
        # A system event never starts a run of the workflow whose run it tells of.
        origin = data.get("workflow_id") if source == EventSource.SYSTEM else None
        routing = self._dispatcher.route(event_type, data, source, origin)
        started = []
        for entry in routing.starts:
            registered = self._lookup(entry.workflow_id)
            if registered is None or not self._switches.enabled(
                entry.workflow_id, entry.trigger_id
            ):
                continue
            dispatched = self._admission.dispatch(registered, entry.trigger_id, data)
            action = CONSEQUENCES[dispatched.decision.action].route
            started.append(dispatched.run_id)
            writes.append(ops.add_route(event_id, dispatched.row, action))
            writes.append(
                ops.add_timeline(
                    dispatched.row,
                    now,
                    "event",
                    "event.received",
                    position=0,
                    message=f"{event_type} event {event_id}: {action} (trigger {entry.trigger_id})",
                    data={"event_id": event_id, "type": event_type, "source": source},
                )
            )
        for wait in routing.waits:
            writes += self._parking.deliver(wait, event_id, data)
        self._writer.submit(writes)
        return started

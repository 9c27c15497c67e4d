"""System events: ``run.completed``, ``run.failed`` and ``run.aborted``, one per run end.

When a run ends, an event telling of it (`records.system_event_data`) is journaled with
source ``system`` in the same batch as the run's end, and routed like any event: triggers
of other workflows start runs, waits of paused runs match. Two rules keep it cheap and
loop-free:

- It is journaled only when a trigger of another workflow, or any wait, listens to its
  type at that moment (an event never starts runs later, so one nothing could match
  changes nothing); a workflow registered or reloaded later hears the ends after that.
- It never starts a run of the workflow whose run ended (`Dispatcher.route`'s origin), so
  a workflow cannot trigger itself; chains across workflows (A's failure starts B, B's
  failure starts A) are possible, each hop a new run of another workflow.

Every path that ends a run calls `SystemEvents.ended` inside the writer's `together`
block that enqueues the end, so both commit in one batch. Dropped and rejected runs never
began and emit none.
"""

from __future__ import annotations

from collections.abc import Callable

from ..clock import new_id
from ..records import SYSTEM_EVENTS, EventSource, RunCode, RunStatus, system_event_data
from .dispatcher import Dispatcher
from .events import EventBus


class SystemEvents:
    """Emits the system event of each run end that something listens to."""

    def __init__(self, dispatcher: Dispatcher, bus: EventBus) -> None:
        self._dispatcher, self._bus = dispatcher, bus
        # Told of every run end first, listened to or not (joins, a parent's children).
        self.on_end: list[Callable[[str, RunStatus], None]] = []

    def ended(
        self,
        run_id: str,
        workflow_id: str,
        trigger_id: str,
        status: RunStatus,
        error: str | None = None,
        code: RunCode | None = None,
    ) -> str | None:
        """Journal and route the event of a run's end, if anything listens; its id or None.

        Call inside the `together` block that enqueues the run's end (never awaits).
        """
        for hook in self.on_end:
            hook(run_id, status)
        event_type = SYSTEM_EVENTS.get(status)
        if event_type is None or not self._dispatcher.listens(event_type, workflow_id):
            return None
        event_id = new_id()
        data = system_event_data(run_id, workflow_id, trigger_id, status, error, code)
        self._bus.accept(event_id, event_type, data, source=EventSource.SYSTEM)
        return event_id

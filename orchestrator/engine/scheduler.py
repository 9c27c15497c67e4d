"""Cron triggers: fire each tick once, catch up after downtime, keep going.

A schedule's last fired tick is journaled with the run each tick starts (same batch), so
a tick fires once even across crashes. When a workflow is registered, the ticks missed
since its last one fire at once (the latest only, or each with ``catch_up=True``), then
the next tick is armed in the timers (and journaled, for `orchestrator workflows`).

A disabled schedule (`Switches`) is not armed; once enabled again it counts from when it
was enabled, so the ticks it missed meanwhile are skipped, never caught up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..define import schedules
from ..define.model import Schedule
from ..journal import JournalWriter, ops
from .registry import RegisteredWorkflow
from .switches import Switches
from .timers import Timers

StartRun = Callable[[RegisteredWorkflow, str, dict[str, Any]], object]
Key = tuple[str, str]


class Scheduler:
    """The armed schedules of the registered workflows."""

    def __init__(
        self,
        writer: JournalWriter,
        clock: Clock,
        timers: Timers,
        start_run: StartRun,
        last_ticks: dict[Key, int],
        switches: Switches,
    ) -> None:
        self._writer, self._clock, self._timers = writer, clock, timers
        self._switches = switches
        self._start_run = start_run
        # Invariant: mirrors the journal's schedule_state (plus what is enqueued).
        self._last = dict(last_ticks)
        self._armed: set[Key] = set()
        self._armed_of: dict[str, set[str]] = {}  # workflow id -> its armed trigger ids

    def arm(self, registered: RegisteredWorkflow) -> None:
        """Fire what a workflow's enabled schedules missed, then arm their next ticks."""
        self.disarm(registered.id)
        for trigger_id, trigger in registered.workflow.triggers.items():
            if isinstance(trigger, Schedule):
                self._arm_one(registered, trigger_id, trigger)

    def disarm(self, workflow_id: str) -> None:
        """Stop a workflow's schedules (its last ticks stay journaled)."""
        for trigger_id in self._armed_of.pop(workflow_id, ()):
            self._timers.cancel(("schedule", workflow_id, trigger_id))
            self._armed.discard((workflow_id, trigger_id))
            self._writer.submit([ops.schedule_next(workflow_id, trigger_id, None)])

    def _arm_one(self, registered: RegisteredWorkflow, trigger_id: str, trigger: Schedule) -> None:
        key = (registered.id, trigger_id)
        if not self._switches.enabled(*key):
            self._writer.submit([ops.schedule_next(*key, None)])
            return
        now = self._clock.now_us()
        if key not in self._last:
            self._last[key] = now
            self._writer.submit([ops.arm_schedule(registered.id, trigger_id, now)])
        since = self._switches.enabled_since(*key)
        if since > self._last[key]:  # enabled again: what it missed while disabled is skipped
            self._last[key] = since
            self._writer.submit([ops.schedule_fired(registered.id, trigger_id, since)])
        missed = schedules.due_ticks_us(
            trigger.cron, trigger.tz, last_us=self._last[key], now_us=now, catch_up=trigger.catch_up
        )
        for tick in missed:
            self._fire(registered, trigger_id, trigger, tick)
        self._armed.add(key)
        self._armed_of.setdefault(registered.id, set()).add(trigger_id)
        self._arm_next(registered, trigger_id, trigger)

    def _arm_next(self, registered: RegisteredWorkflow, trigger_id: str, trigger: Schedule) -> None:
        key = (registered.id, trigger_id)
        # From the last tick, not from now: a tick that fell due while this process was
        # busy is overdue and fires at once (downtime is handled by `_arm_one`).
        due = schedules.next_tick_us(trigger.cron, trigger.tz, self._last[key])
        self._writer.submit([ops.schedule_next(*key, due)])
        self._timers.set(
            ("schedule", *key), due, lambda: self._on_tick(registered, trigger_id, trigger, due)
        )

    def _on_tick(
        self, registered: RegisteredWorkflow, trigger_id: str, trigger: Schedule, tick: int
    ) -> None:
        if (registered.id, trigger_id) not in self._armed:
            return
        self._fire(registered, trigger_id, trigger, tick)
        self._arm_next(registered, trigger_id, trigger)

    def _fire(
        self, registered: RegisteredWorkflow, trigger_id: str, trigger: Schedule, tick: int
    ) -> None:
        now = self._clock.now_us()
        data = {
            "scheduled_for": schedules.to_iso(tick, trigger.tz),
            "fired_at": schedules.to_iso(now, trigger.tz),
        }
        # Invariant: the run's creation and the tick's record join the same batch.
        with self._writer.together():
            self._start_run(registered, trigger_id, data)
            self._writer.submit([ops.schedule_fired(registered.id, trigger_id, tick)])
        self._last[(registered.id, trigger_id)] = tick

"""Disable and enable: which workflows and triggers may start runs, as the journal says.

A switch is keyed by workflow id and, optionally, one trigger id; it is journaled (the
``switches`` rows) when the daemon applies the command, so it survives restarts and reloads
of the workflow's file, and may name a workflow that is not loaded yet. This module only
keeps the switches in memory and answers questions about them; `Control` applies the
commands, and routing, schedules and `invoke` ask before they start anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..journal import SwitchRecord

Key = tuple[str, str]  # (workflow id, trigger id or "" for the whole workflow)


class Switches:
    """The disabled workflows and triggers of this process, and when each was enabled."""

    def __init__(self, records: Iterable[SwitchRecord] = ()) -> None:
        # Invariant: mirrors the journal's switches rows (plus what is enqueued).
        self._off: set[Key] = set()
        self._enabled_at: dict[Key, int] = {}
        for record in records:
            key = (record.workflow_id, record.trigger_id or "")
            if record.enabled:
                self._enabled_at[key] = record.changed_at
            else:
                self._off.add(key)

    def set(self, workflow_id: str, trigger_id: str | None, enabled: bool, at: int) -> bool:
        """Record a switch; returns whether it changed anything."""
        key = (workflow_id, trigger_id or "")
        if enabled == (key not in self._off):
            return False
        if enabled:
            self._off.discard(key)
            self._enabled_at[key] = at
        else:
            self._off.add(key)
        return True

    def enabled(self, workflow_id: str, trigger_id: str | None = None) -> bool:
        """Whether the workflow (and, given one, that trigger of it) may start runs."""
        if (workflow_id, "") in self._off:
            return False
        return trigger_id is None or (workflow_id, trigger_id) not in self._off

    def enabled_since(self, workflow_id: str, trigger_id: str) -> int:
        """When the trigger (or its workflow) was last enabled again (µs), or 0 if never.

        A schedule counts its ticks from no earlier than this: ticks missed while it was
        disabled are skipped, not caught up.
        """
        return max(
            self._enabled_at.get((workflow_id, ""), 0),
            self._enabled_at.get((workflow_id, trigger_id), 0),
        )

    def why(self, workflow_id: str, trigger_id: str) -> str | None:
        """Why a trigger may not start runs, or None if it may."""
        if (workflow_id, "") in self._off:
            return f"workflow {workflow_id!r} is disabled; `orchestrator enable {workflow_id}`"
        if (workflow_id, trigger_id) in self._off:
            return (
                f"trigger {trigger_id!r} of workflow {workflow_id!r} is disabled; "
                f"`orchestrator enable {workflow_id} {trigger_id}`"
            )
        return None

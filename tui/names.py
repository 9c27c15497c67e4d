"""The names the Invoke and Emit dialogs complete and check: what the daemon loaded.

No Textual here. The workflows are the journal's workflows table (what the process holding
the journal registered, its triggers as journaled JSON); the event types are those of the
loaded workflows' event triggers and those armed or parked waits of runs wait for. While
the journal has no workflows (no daemon ever loaded one), nothing can be checked and
nothing is refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.journal import WorkflowView

from .dialogs import Problem, Values

SUGGESTED = 3  # near names offered for an unknown one


class Names:
    """Workflow, trigger and event type names, for completion and for checks."""

    def __init__(self, workflows: Sequence[WorkflowView], waited: Sequence[str]) -> None:
        self.workflows = {w.workflow_id: w for w in workflows}
        types = {t for w in workflows for t in _event_types(w.triggers)} | set(waited)
        self.event_types: list[str] = sorted(types)

    def triggers(self, workflow_id: str) -> list[str]:
        """The trigger ids of a loaded workflow, in its order (none if it is unknown)."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None or not isinstance(workflow.triggers, list):
            return []
        return [
            str(t["trigger_id"])
            for t in workflow.triggers
            if isinstance(t, dict) and isinstance(t.get("trigger_id"), str)
        ]

    def invoke_completions(self, values: Values) -> Mapping[str, Sequence[str]]:
        """Workflow ids, and the trigger ids of the workflow typed."""
        return {
            "workflow": sorted(self.workflows),
            "trigger": self.triggers(values.get("workflow", "")),
        }

    def check_invoke(self, values: Values) -> Problem | None:
        """Refuse a workflow or trigger the daemon did not load, or one disabled."""
        if not self.workflows:
            return None
        workflow_id, trigger_id = values.get("workflow", ""), values.get("trigger", "")
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            return Problem(
                f"no workflow {workflow_id!r} is loaded{_near(workflow_id, self.workflows)}"
                f" Loaded: {', '.join(sorted(self.workflows))}."
            )
        triggers = self.triggers(workflow_id)
        if trigger_id not in triggers:
            return Problem(
                f"workflow {workflow_id!r} has no trigger {trigger_id!r}"
                f"{_near(trigger_id, triggers)} It has: {', '.join(triggers) or 'none'}."
            )
        if workflow.disabled_at is not None:
            return Problem(
                f"workflow {workflow_id!r} is disabled: it starts no runs"
                " (enable it on the Workflows screen with d)"
            )
        if trigger_id in workflow.disabled_triggers:
            return Problem(
                f"trigger {trigger_id!r} of workflow {workflow_id!r} is disabled: it starts no runs"
            )
        return None

    def check_emit(self, values: Values) -> Problem | None:
        """Warn about an event type no loaded trigger and no waiting run listens to."""
        event_type = values.get("type", "")
        if event_type in self.event_types:
            return None
        return Problem(
            f"no trigger or waiting run listens to {event_type!r}"
            f"{_near(event_type, self.event_types)} Emit anyway (ctrl+s) sends it as typed.",
            refused=False,
        )


def _event_types(triggers: Any) -> list[str]:
    if not isinstance(triggers, list):
        return []
    return [
        str(t["event"])
        for t in triggers
        if isinstance(t, dict) and t.get("type") == "event" and isinstance(t.get("event"), str)
    ]


def _near(name: str, known: Sequence[str] | Mapping[str, object]) -> str:
    """``; did you mean 'x'?`` (or 'x' or 'y'), or ``.`` when no known name is close."""
    close = difflib.get_close_matches(name, list(known), n=SUGGESTED, cutoff=0.6)
    if not close:
        return "."
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"

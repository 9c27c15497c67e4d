"""The run vocabulary: its values are what the journal stores and the CLI prints."""

from __future__ import annotations

import json

from orchestrator import RunCode, RunStatus
from orchestrator.engine.admission import CONSEQUENCES
from orchestrator.engine.gate import Action
from orchestrator.records import FINAL_STATUSES, STATUSES


def test_statuses_keep_their_values_and_order() -> None:
    # The order is that of `runs --status` choices and the dashboard's counts.
    assert [status.value for status in STATUSES] == [
        "queued",
        "running",
        "paused",
        "completed",
        "failed",
        "aborted",
        "dropped",
        "rejected",
    ]
    assert sorted(FINAL_STATUSES) == ["aborted", "completed", "dropped", "failed", "rejected"]


def test_members_are_their_strings() -> None:
    assert RunStatus.PAUSED == "paused" and f"{RunStatus.PAUSED}" == "paused"
    assert json.dumps({"error_code": RunCode.STEP_FAILED}) == '{"error_code": "STEP_FAILED"}'
    assert all(code.value == code.name for code in RunCode)


def test_every_gate_action_has_its_consequences() -> None:
    assert set(CONSEQUENCES) == set(Action)
    for consequence in CONSEQUENCES.values():
        refused = consequence.status in FINAL_STATUSES
        assert (consequence.code is not None) == refused

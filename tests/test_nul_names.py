"""Names the journal keys on (event types, workflow and trigger ids) hold no NUL.

PostgreSQL's text cannot hold one; SQLite could, but a type no CLI argument can spell
would match no trigger anyone can write. Refused where the name is given, on both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import Runtime, StepContext, ValidationError, Workflow

pytestmark = pytest.mark.both_backends


def emits_a_nul_type(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    ctx.emit("order\x00created", {})
    return state


def starts_a_nul_workflow(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    ctx.start("child\x00", "go", {})
    return state


async def test_an_event_type_with_a_nul_is_refused_by_emit(db: Path) -> None:
    async with Runtime(db) as rt:
        with pytest.raises(ValidationError, match="NUL"):
            await rt.emit("order\x00created", {})
        assert await rt.emit("order.created", {})  # the runtime goes on


@pytest.mark.parametrize("step", [emits_a_nul_type, starts_a_nul_workflow])
async def test_a_step_naming_a_nul_fails_its_run_saying_so(db: Path, step: Any) -> None:
    flow = Workflow(id="flow", pipelines={"go": [step]})
    async with Runtime(db, workflows=[flow]) as rt:
        result = await rt.invoke("flow", "go", {})
        assert (result.status, result.error_code) == ("failed", "STEP_FAILED")
        assert result.error is not None and "NUL" in result.error
        again = await rt.invoke("flow", "go", {})  # the writer and the daemon go on
        assert again.status == "failed"

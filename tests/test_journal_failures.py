"""Journal writes that fail for a while (a full disk) are kept and retried, not lost.

Fault points make the next commits fail as a full disk would; the runtime keeps running,
what it acknowledged is in the journal, and nothing is acknowledged before it commits.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from procs import query

from orchestrator import Runtime, Step, Trigger, Workflow
from orchestrator.journal.faults import FaultPoints
from orchestrator.testing import eventually


def _bump(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


def _workflow() -> Workflow:
    return Workflow(
        id="counter",
        triggers={"go": Trigger(event="tick")},
        pipelines={"go": [Step(_bump, name="one"), Step(_bump, name="two")]},
    )


async def test_failing_commits_are_retried_and_nothing_acknowledged_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    faults = FaultPoints()
    db = tmp_path / "j.db"
    async with Runtime(db, workflows=[_workflow()], faults=faults) as rt:
        await rt.idle()
        faults.fail(6)  # about 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of retries
        emitted = asyncio.ensure_future(rt.emit("tick", {}))
        await asyncio.sleep(0)  # not a wait: lets the emit enqueue before the next check
        assert not emitted.done(), "an event was acknowledged before it committed"
        event_id = await emitted
        assert faults.failures_left == 0
        await rt.idle()
        result = await rt.invoke("counter", "go", {})
        assert result.ok and result.state == {"n": 2}
        assert rt.active_runs() == 0
    assert query(db, "SELECT count(*) FROM events WHERE event_id = ?", (event_id,)) == [(1,)]
    statuses = query(db, "SELECT status FROM runs ORDER BY id")
    assert statuses == [("completed",), ("completed",)]
    failing = [r for r in caplog.records if "journal writes failing" in r.getMessage()]
    recovered = [r for r in caplog.records if "journal writes recovered" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.ERROR
    assert len(recovered) == 1


async def test_the_writer_says_it_is_degraded_while_it_retries(tmp_path: Path) -> None:
    faults = FaultPoints()
    async with Runtime(tmp_path / "j.db", workflows=[_workflow()], faults=faults) as rt:
        await rt.idle()
        writer = rt._writer
        faults.fail(1_000_000)
        emitted = asyncio.ensure_future(rt.emit("tick", {}))
        reason = await eventually(lambda: writer.degraded, what="the writer to degrade")
        assert "database or disk is full" in reason
        assert writer.lease_fresh()  # the lease alone is still renewed
        faults.fail(0)
        await emitted
        assert writer.degraded is None
        await rt.idle()

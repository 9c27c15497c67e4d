"""Parking alone: waits, buffers, wake-ups, signals and timeouts, on a recording journal.

No SQLite, no runtime: the journal is a `RecordingJournal`, the timers fire when the test
says so, and the wake and end callbacks record what parking hands back to the supervisor.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from engine_doubles import ManualTimers, registered

from orchestrator import RunNotActive, Transient
from orchestrator.clock import FakeClock
from orchestrator.define.conditions import Conditions
from orchestrator.define.waits import pause_request
from orchestrator.engine.dispatcher import Dispatcher
from orchestrator.engine.executor import ActiveRun
from orchestrator.engine.parking import ParkedRun, Parking
from orchestrator.journal import RecordingJournal
from orchestrator.journal.ops import Stmt
from orchestrator.records import RunCode, RunResult, RunStatus


class Harness:
    """One `Parking` with its journal, clock and timers, and what it handed back."""

    def __init__(self) -> None:
        self.journal = RecordingJournal()
        self.clock = FakeClock()
        self.timers = ManualTimers(self.clock)
        self.woken: list[ParkedRun] = []
        self.ended: list[RunResult] = []
        self.dispatcher = Dispatcher()
        self.parking = Parking(
            self.journal,
            self.clock,
            self.dispatcher,
            self.timers,  # type: ignore[arg-type]
            wake=self._wake,
            ended=lambda parked, result: self.ended.append(result),
            max_wait_id=0,
            max_seq=0,
        )
        self.workflow = registered(Transient())

    def _wake(self, parked: ParkedRun) -> list[Any]:
        self.woken.append(parked)
        return []

    def run(self, order: int) -> ActiveRun:
        return ActiveRun(
            row=1,
            run_id="run-1",
            workflow=self.workflow,
            trigger_id="go",
            steps=self.workflow.steps("go"),
            step_index=0,
            position=1,
            state_text=f'{{"order": {order}}}',
            settled=asyncio.get_running_loop().create_future(),
        )

    def deliver(self, event_id: str, data: dict[str, Any]) -> None:
        """Route an event as the bus does: to every wait the dispatcher matches."""
        for wait in self.dispatcher.route("paid", data, "api").waits:
            self.journal.enqueue(self.parking.deliver(wait, event_id, data))


def paid(order: int, *, timeout: float | None = None, on_timeout: str = "continue") -> Any:
    return pause_request(
        event="paid",
        where={"order": ("==", order)},
        into="payment",
        timeout=timeout,
        on_timeout=on_timeout,
        wait=None,
        label="test",
    )


def routes(journal: RecordingJournal) -> list[tuple[str, str]]:
    return [(params[0], params[2]) for params in journal.ops_of(Stmt.ADD_ROUTE)]


async def test_an_event_for_a_parked_run_wakes_it_with_the_data_in_its_state() -> None:
    h = Harness()
    paused = h.parking.park_or_drain(h.run(7), paid(7))
    assert paused is not None and paused.waiting == "paid where order == 7"
    assert list(h.parking.paused) == ["run-1"]
    h.deliver("e-other", {"order": 8})
    assert h.woken == []
    h.deliver("e-1", {"order": 7, "amount": 12})
    assert [p.run_id for p in h.woken] == ["run-1"]
    assert json.loads(h.woken[0].state_text)["payment"] == {"order": 7, "amount": 12}
    assert routes(h.journal) == [("e-1", "resumed")]
    assert "run-1" not in h.parking.paused


async def test_a_registered_wait_buffers_an_early_event_and_the_pause_drains_it() -> None:
    h = Harness()
    wait = h.parking.register_wait(
        1, "run-1", "paid", Conditions.parse({"order": ("==", 7)}, label="test")
    )
    h.deliver("early", {"order": 7})
    assert routes(h.journal) == [("early", "buffered")]
    run = h.run(7)
    assert h.parking.park_or_drain(run, paid(7)) is None  # the run goes on at once
    assert run.position == 2
    assert json.loads(run.state_text) == {"order": 7, "payment": {"order": 7}}
    assert h.journal.ops_of(Stmt.DROP_BUFFERED) == [(wait.id, 1)]
    assert routes(h.journal)[-1] == ("early", "resumed")


async def test_a_timeout_that_fails_ends_the_parked_run_with_pause_timeout() -> None:
    h = Harness()
    h.parking.park_or_drain(h.run(7), paid(7, timeout=60, on_timeout="fail"))
    await h.clock.advance(59)
    h.timers.fire_due()
    assert h.ended == []
    await h.clock.advance(1)
    h.timers.fire_due()
    [result] = h.ended
    assert (result.status, result.error_code) == (RunStatus.FAILED, RunCode.PAUSE_TIMEOUT)
    assert h.journal.ops_of(Stmt.SET_STATUS)[-1][:3] == (
        RunStatus.FAILED,
        result.error,
        RunCode.PAUSE_TIMEOUT,
    )
    assert h.parking.paused == {}


async def test_a_timeout_that_continues_wakes_the_run_with_none() -> None:
    h = Harness()
    h.parking.park_or_drain(h.run(7), paid(7, timeout=60))
    await h.clock.advance(60)
    h.timers.fire_due()
    assert [p.run_id for p in h.woken] == ["run-1"]
    assert json.loads(h.woken[0].state_text) == {"order": 7, "payment": None}


async def test_a_signal_patches_a_parked_run_without_waking_it() -> None:
    h = Harness()
    h.parking.park_or_drain(h.run(7), paid(7))
    parked = h.parking.paused["run-1"]
    h.journal.enqueue(h.parking.signal(parked, {"note": "hi"}))
    assert h.woken == [] and h.parking.paused == {"run-1": parked}
    assert json.loads(parked.state_text) == {"order": 7, "note": "hi"}
    assert [p[4] for p in h.journal.ops_of(Stmt.ADD_TIMELINE)][-1] == "run.signalled"


async def test_the_wait_a_run_is_parked_on_cannot_be_cancelled() -> None:
    h = Harness()
    h.parking.park_or_drain(h.run(7), paid(7))
    parked = h.parking.paused["run-1"]
    with pytest.raises(RunNotActive, match="abort the run"):
        h.parking.cancel_wait(parked.wait)

"""An event and the runs it starts commit together; so do a schedule tick and its run.

If a crash fell between the two, the run would be kept but not the event's routing mark
(or the tick's record): after a restart the event would be routed again (the tick fired
again) and start a second run. "Nothing awaits in between" is not enough to keep them in
one commit: the writer thread takes whatever is pending whenever its 5 ms lazy flush is
due, and the loop thread can be preempted between two `enqueue` calls. These tests make
that preemption happen (the loop thread stalls right after a run's creation is enqueued)
and crash the writer right after the first commit holding a run (`SimulatedCrash`, the
journal's own power cut), then reopen the journal and count runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import checkpoint_chains, query

from orchestrator import JournalError, Runtime, Schedule, Trigger, Workflow
from orchestrator.journal.faults import SimulatedCrash
from orchestrator.journal.ops import Op, Stmt
from orchestrator.journal.sqlite.commands import emit_event
from orchestrator.journal.sqlite.writer import GroupCommitWriter, Rows
from orchestrator.testing import eventually


def step(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "done": True}


ORDERS = Workflow(
    id="orders", triggers={"new": Trigger(event="order.created")}, pipelines={"new": [step]}
)
TICKS = Workflow(
    id="ticks",
    triggers={"each": Schedule(cron="* * * * *", catch_up=True)},
    pipelines={"each": [step]},
)


def creates_a_run(ops: Iterable[Op]) -> bool:
    return any(stmt is Stmt.INSERT_RUN for stmt, _ in ops)


def preempt_then_crash(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Stall the loop thread after the first run's creation is enqueued; crash after its commit.

    Returns a list that holds one item once the crash has happened.
    """
    join, apply = GroupCommitWriter._join, GroupCommitWriter._apply
    crashed: list[bool] = []

    def stalling_join(self: GroupCommitWriter, ops: Iterable[Op], *args: Any, **kwargs: Any) -> Any:
        ops = list(ops)
        batch = join(self, ops, *args, **kwargs)
        if creates_a_run(ops) and not crashed:
            time.sleep(0.5)  # preempted: the writer's lazy flush comes due meanwhile
        return batch

    def crashing_apply(self: GroupCommitWriter, rows: Rows) -> None:
        apply(self, rows)
        if Stmt.INSERT_RUN in rows and not crashed:
            crashed.append(True)
            raise SimulatedCrash("right after the first commit that creates a run")

    monkeypatch.setattr(GroupCommitWriter, "_join", stalling_join)
    monkeypatch.setattr(GroupCommitWriter, "_apply", crashing_apply)
    return crashed


@contextlib.contextmanager
def unlogged() -> Iterator[None]:
    """Drop the orchestrator's log records: a record of the crash keeps the failed runs'
    frames alive, and with them futures whose exception nobody retrieved (see below)."""
    logger = logging.getLogger("orchestrator")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


async def crash_once(db: Path, monkeypatch: pytest.MonkeyPatch, workflow: Workflow) -> None:
    crashed = preempt_then_crash(monkeypatch)
    # A crash while the runtime starts (a schedule fires then) fails the start itself.
    with contextlib.suppress(JournalError), unlogged():
        async with Runtime(db, workflows=[workflow], shutdown_grace=0.1):
            await eventually(lambda: crashed, what="the simulated crash", timeout=5)
    monkeypatch.undo()
    assert crashed
    # The crashed runtime's runs hold futures whose exception nobody retrieved; collect them
    # now, not while pytest parses source for a report (CPython 3.11.7 then raises
    # "AST constructor recursion depth mismatch" when their __del__ logs mid-parse).
    gc.collect()


async def restart_and_settle(db: Path, workflow: Workflow) -> None:
    async with Runtime(db, workflows=[workflow]) as rt, asyncio.timeout(5):
        await rt.idle()  # every event routed (the inbox included), every run settled
        assert query(db, "SELECT count(*) FROM events WHERE routed_at IS NULL") == [(0,)]
        for run in await rt.list_all_runs():
            await rt.wait(run.run_id)


async def test_a_crash_never_splits_an_event_from_the_run_it_started(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emit_event(db, "order.created", {"order_id": 1})  # as the CLI writes it
    await crash_once(db, monkeypatch, ORDERS)
    await restart_and_settle(db, ORDERS)
    runs = query(db, "SELECT status FROM runs")
    assert runs == [("completed",)], f"one event, {len(runs)} runs"
    assert query(db, "SELECT action FROM event_routes") == [("started",)]


async def test_a_crash_never_splits_a_schedule_tick_from_its_run(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Runtime(db, workflows=[TICKS]):
        pass  # arms the schedule
    # As if down for 3 minutes (see test_event_crashes.py): three ticks are due on start.
    query(db, "UPDATE schedule_state SET last_tick = ?", (int((time.time() - 180) * 1e6),))
    await crash_once(db, monkeypatch, TICKS)
    await restart_and_settle(db, TICKS)
    ticks = collections.Counter(
        chain[0].state["scheduled_for"] for chain in checkpoint_chains(db).values()
    )
    assert len(ticks) >= 3
    assert set(ticks.values()) == {1}, f"ticks that fired more than once: {ticks}"

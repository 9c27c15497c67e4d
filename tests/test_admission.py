"""Admission alone: what each mode's decision journals and starts, on a recording journal.

No SQLite, no runtime: the supervisor is a recording `Launcher` and the journal a
`RecordingJournal`, so each test sees exactly which runs were made, started, replaced or
signalled, and which rows each decision wrote.
"""

from __future__ import annotations

from typing import Any

import pytest
from engine_doubles import Launcher, ManualTimers, registered

from orchestrator import Exclusive, RuntimeStopped, Serialized, SingletonLoop, Transient
from orchestrator.clock import FakeClock
from orchestrator.engine.admission import Admission
from orchestrator.engine.dispatcher import Dispatcher
from orchestrator.engine.gate import Action
from orchestrator.engine.parking import Parking
from orchestrator.journal import RecordingJournal
from orchestrator.journal.ops import Stmt
from orchestrator.records import RunCode, RunStatus


def admission_with(journal: RecordingJournal) -> tuple[Admission, Launcher]:
    clock = FakeClock()
    launcher = Launcher()
    parking = Parking(
        journal,
        clock,
        Dispatcher(),
        ManualTimers(clock),  # type: ignore[arg-type]
        wake=lambda parked: [],
        ended=lambda parked, result: None,
        max_wait_id=0,
        max_seq=0,
    )
    return Admission(journal, clock, launcher, parking), launcher


def timeline_kinds(journal: RecordingJournal) -> list[str]:
    return [params[4] for params in journal.ops_of(Stmt.ADD_TIMELINE)]


def statuses(journal: RecordingJournal) -> list[tuple[Any, ...]]:
    """(row, status, error_code) of each status change."""
    return [(p[-1], p[0], p[2]) for p in journal.ops_of(Stmt.SET_STATUS)]


async def test_serialized_queues_in_order_and_starts_the_next_when_a_slot_frees() -> None:
    journal = RecordingJournal()
    admission, launcher = admission_with(journal)
    jobs = registered(Serialized())
    first, second, third = (admission.dispatch(jobs, "go", {"n": n}) for n in range(3))
    assert [d.decision.action for d in (first, second, third)] == [
        Action.START,
        Action.QUEUE,
        Action.QUEUE,
    ]
    assert second.decision.holder == first.run_id
    assert timeline_kinds(journal) == ["run.queued", "run.queued"]
    assert launcher.created == [
        (first.run_id, RunStatus.RUNNING),
        (second.run_id, RunStatus.QUEUED),
        (third.run_id, RunStatus.QUEUED),
    ]
    admission.ended("jobs", first.run_id)
    assert launcher.started == [second.run_id]
    admission.ended("jobs", second.run_id)
    assert launcher.started == [second.run_id, third.run_id]


async def test_a_refused_dispatch_ends_with_its_status_and_code_in_the_same_batch() -> None:
    journal = RecordingJournal()
    admission, _ = admission_with(journal)
    jobs = registered(Exclusive(on_busy="reject"))
    holder = admission.dispatch(jobs, "go", {})
    rejected = admission.dispatch(jobs, "go", {})
    assert rejected.decision.action == Action.REJECT
    assert statuses(journal) == [(rejected.row, RunStatus.REJECTED, RunCode.REJECTED)]
    [batch] = [b for b in journal.batches if any(stmt is Stmt.SET_STATUS for stmt, _ in b)]
    assert {stmt for stmt, _ in batch} == {Stmt.ADD_TIMELINE, Stmt.SET_STATUS}
    result = rejected.settled.result()
    assert (result.ok, result.status, result.error_code) == (
        False,
        RunStatus.REJECTED,
        RunCode.REJECTED,
    )
    assert f"held by run {holder.run_id}" in (result.error or "")


async def test_queue_single_keeps_the_latest_and_drops_the_one_it_supersedes() -> None:
    journal = RecordingJournal()
    admission, launcher = admission_with(journal)
    jobs = registered(Exclusive(on_busy="queue_single"))
    holder = admission.dispatch(jobs, "go", {})
    older = admission.dispatch(jobs, "go", {})
    newer = admission.dispatch(jobs, "go", {})
    assert newer.decision.superseded == older.run_id
    assert statuses(journal) == [(older.row, RunStatus.DROPPED, RunCode.SUPERSEDED)]
    assert older.settled.result().status == RunStatus.DROPPED
    admission.ended("jobs", holder.run_id)
    assert launcher.started == [newer.run_id]


async def test_replace_asks_the_supervisor_to_abort_the_running_holder() -> None:
    journal = RecordingJournal()
    admission, launcher = admission_with(journal)
    jobs = registered(SingletonLoop(on_busy="replace"))
    holder = admission.dispatch(jobs, "go", {})
    new = admission.dispatch(jobs, "go", {})
    assert new.decision.action == Action.REPLACE
    assert launcher.replaced == [(holder.run_id, f"replaced by run {new.run_id}")]
    assert (new.run_id, RunStatus.RUNNING) in launcher.created


async def test_signal_merges_the_data_into_the_running_holder_and_makes_no_run() -> None:
    journal = RecordingJournal()
    admission, launcher = admission_with(journal)
    jobs = registered(SingletonLoop(on_busy="signal"))
    holder = admission.dispatch(jobs, "go", {})
    signal = admission.dispatch(jobs, "go", {"more": 1})
    assert signal.decision.action == Action.SIGNAL
    assert signal.run_id == holder.run_id
    assert launcher.signalled == [(holder.run_id, {"more": 1})]
    assert len(launcher.created) == 1
    assert signal.settled.result().status == RunStatus.RUNNING


async def test_a_transient_capacity_drops_beyond_it() -> None:
    journal = RecordingJournal()
    admission, _ = admission_with(journal)
    jobs = registered(Transient(concurrency=1, capacity=1))
    actions = [admission.dispatch(jobs, "go", {}).decision.action for _ in range(3)]
    assert actions == [Action.START, Action.QUEUE, Action.DROP]
    assert [code for _, _, code in statuses(journal)] == [RunCode.DROPPED]


async def test_after_stop_queued_runs_stay_queued_and_their_callers_learn_why() -> None:
    journal = RecordingJournal()
    admission, launcher = admission_with(journal)
    jobs = registered(Serialized())
    holder = admission.dispatch(jobs, "go", {})
    queued = admission.dispatch(jobs, "go", {})
    admission.stop()
    admission.ended("jobs", holder.run_id)
    assert launcher.started == []  # a slot freed while stopping starts nothing
    with pytest.raises(RuntimeStopped, match="stays queued"):
        queued.settled.result()
    assert statuses(journal) == []  # nothing journaled: it is still queued on disk


async def test_an_aborted_queued_run_leaves_the_queue_and_the_next_one_moves_up() -> None:
    journal = RecordingJournal()
    admission, launcher = admission_with(journal)
    jobs = registered(Serialized())
    holder = admission.dispatch(jobs, "go", {})
    aborted = admission.dispatch(jobs, "go", {})
    after = admission.dispatch(jobs, "go", {})
    assert admission.abort_queued(aborted.run_id)
    assert aborted.settled.result().error_code == RunCode.ABORTED
    admission.ended("jobs", holder.run_id)
    assert launcher.started == [after.run_id]

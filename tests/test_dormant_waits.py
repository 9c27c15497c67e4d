"""Paused runs re-armed lazily at start-up (`DormantWait`): as if they were armed eagerly.

A restart files each run parked on a plain event wait in the dispatcher from one journal
read, and builds its `Wait` and `ParkedRun` only when an event is a candidate for it or
something looks the run up. The property test compares that with the eager re-arming of
the same waits (`wait_from` + `parked_from`); the runtime tests restart real journals.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from engine_doubles import ManualTimers
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import Runtime, Workflow
from orchestrator.clock import FakeClock
from orchestrator.define.conditions import Conditions
from orchestrator.engine import recovery
from orchestrator.engine.dispatcher import Dispatcher
from orchestrator.engine.parking import ParkedRun, Parking
from orchestrator.journal import DormantWait, RecordingJournal, UnfinishedRun, WaitRecord
from orchestrator.records import RunStatus

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 1.5, -2.0]),
    st.sampled_from(["a", "b", "1", ""]),
)
PATHS = st.sampled_from(["k", "j", "n.k", "items.0"])
OPS = st.sampled_from(["==", "==", "==", "!=", ">", "exists"])


@st.composite
def where(draw: st.DrawFn) -> dict[str, Any]:
    clauses: dict[str, Any] = {}
    for path in draw(st.lists(PATHS, max_size=3, unique=True)):
        op = draw(OPS)
        if op == "exists":
            clauses[path] = (op, draw(st.booleans()))
        elif op == ">":
            clauses[path] = (op, draw(st.integers(-3, 3)))
        else:
            clauses[path] = (op, draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=2))))
    return clauses


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path in draw(st.lists(PATHS, max_size=4, unique=True)):
        value = draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=2)))
        if path == "n.k":
            data["n"] = {"k": value}
        elif path == "items.0":
            data["items"] = [value]
        else:
            data[path] = value
    return data


class Side:
    """One `Parking` and its dispatcher, with what it woke."""

    def __init__(self) -> None:
        self.journal = RecordingJournal()
        self.dispatcher = Dispatcher()
        self.woken: list[ParkedRun] = []
        self.parking = Parking(
            self.journal,
            FakeClock(),
            self.dispatcher,
            ManualTimers(FakeClock()),  # type: ignore[arg-type]
            wake=lambda parked: self.woken.append(parked) or [],  # type: ignore[func-returns-value]
            ended=lambda parked, result: None,
            max_wait_id=0,
            max_seq=0,
        )

    def route(self, event_id: str, data: dict[str, Any]) -> list[str]:
        """Route and deliver an event; the run ids of the waits it matched, in order."""
        waits = self.dispatcher.route("paid", data, "api").waits
        for wait in waits:
            self.parking.deliver(wait, event_id, data)
        return [wait.run_id for wait in waits]


def dormant(i: int, conditions: Conditions) -> DormantWait:
    return DormantWait(
        wait_id=i + 1,
        row=i + 1,
        run_id=f"run-{i}",
        workflow_id="jobs",
        trigger_id="go",
        version="v1",
        position=1,
        step="done",
        state=json.dumps({"i": i}),
        event_type="paid",
        conditions=json.dumps(conditions.to_json()),
        persistent=False,
        into="payment",
        on_timeout="continue",
    )


def arm_eagerly(side: Side, d: DormantWait) -> None:
    """As restore re-arms a wait read by `live_waits`, and its run by `unfinished_runs`."""
    record = WaitRecord(
        id=d.wait_id,
        row=d.row,
        run_id=d.run_id,
        event_type=d.event_type,
        conditions=json.loads(d.conditions),
        persistent=d.persistent,
        status="parked",
        into=d.into,
        timeout_at=None,
        on_timeout=d.on_timeout,
        buffer=[],
    )
    wait = recovery.wait_from(record)
    side.parking.adopt_wait(wait)
    run = UnfinishedRun(
        row=d.row,
        run_id=d.run_id,
        workflow_id=d.workflow_id,
        trigger_id=d.trigger_id,
        version=d.version,
        status=RunStatus.PAUSED,
        position=d.position,
        step=d.step,
        state=d.state,
        created_at=0,
    )
    side.parking.adopt_parked(recovery.parked_from(run, wait))


def aimed_at(clauses: dict[str, Any]) -> dict[str, Any]:
    """Event data holding each ``==`` operand of `clauses` at its path (the others unmet)."""
    data: dict[str, Any] = {}
    for path, (op, operand) in clauses.items():
        if op == "==":
            if path == "n.k":
                data["n"] = {"k": operand}
            elif path == "items.0":
                data["items"] = [operand]
            else:
                data[path] = operand
    return data


def woken(side: Side) -> list[tuple[str, int, str, str | None]]:
    return [(p.run_id, p.position, p.state_text, p.next_step) for p in side.woken]


@settings(max_examples=150, deadline=None)
@given(
    wheres=st.lists(where(), min_size=1, max_size=8),
    steps=st.lists(
        st.one_of(
            event(),  # an event of any data
            st.integers(0, 7).map(lambda i: f"run-{i}"),  # a look-up
            st.integers(0, 7),  # an event with the == values of the i-th wait
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_lazily_rearmed_waits_match_as_eagerly_armed_ones(
    wheres: list[dict[str, Any]], steps: list[dict[str, Any] | str | int]
) -> None:
    """Events match the same waits and wake the same runs; a look-up between them too."""

    async def check() -> None:
        eager, lazy = Side(), Side()
        for i, clauses in enumerate(wheres):
            conditions = Conditions.parse(clauses, label="test")
            arm_eagerly(eager, dormant(i, conditions))
            lazy.parking.adopt_dormant(dormant(i, conditions))
        assert set(lazy.parking.paused) == set(eager.parking.paused)
        for n, step in enumerate(steps):
            if isinstance(step, int):
                step = aimed_at(wheres[step % len(wheres)])
            if isinstance(step, str):  # a command looks the run up: it stops being dormant
                one, other = eager.parking.paused.get(step), lazy.parking.paused.get(step)
                assert (one is None) == (other is None)
                if one is not None and other is not None:
                    assert (other.run_id, other.state_text) == (one.run_id, one.state_text)
                    assert other.wait.conditions == one.wait.conditions
                continue
            assert lazy.route(f"e{n}", step) == eager.route(f"e{n}", step), step
            assert woken(lazy) == woken(eager)
            assert len(lazy.parking.paused) == len(eager.parking.paused)
        assert sorted(lazy.parking.paused) == sorted(eager.parking.paused)
        assert lazy.parking.paused_of("jobs") == eager.parking.paused_of("jobs")

    asyncio.run(check())


def test_a_wait_with_clauses_other_than_equality_is_armed_at_once() -> None:
    async def check() -> None:
        side = Side()
        side.parking.adopt_dormant(dormant(0, Conditions.parse({"k": ("==", 1)}, label="t")))
        side.parking.adopt_dormant(dormant(1, Conditions.parse({"k": (">", 1)}, label="t")))
        assert list(side.parking.paused.dormant) == ["run-0"]
        assert list(side.parking.paused.live) == ["run-1"]
        assert side.route("e1", {"k": 1}) == ["run-0"]
        assert not side.parking.paused.dormant and "run-0" not in side.parking.paused

    asyncio.run(check())


# -- restarts of a real runtime --------------------------------------------------------------


def pay(state: dict[str, Any], ctx: Any) -> Any:
    if state.get("timeout"):
        return ctx.pause(
            event="paid", where={"order": ("==", state["order"])}, into="payment", timeout=3600
        )
    return ctx.pause(event="paid", where={"order": ("==", state["order"])}, into="payment")


def done(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "done": True}


FLOW = Workflow(id="shop", pipelines={"pay": [pay, done]})


async def test_a_restart_leaves_plain_waits_dormant_and_they_resume(db: Path) -> None:
    async with Runtime(db, workflows=[FLOW]) as rt:
        runs = [
            (await rt.invoke("shop", "pay", {"order": i, "timeout": i == 3})).run_id
            for i in range(6)
        ]
    async with Runtime(db, workflows=[FLOW]) as rt:
        assert rt._control is not None
        paused = rt._control.parking.paused
        assert sorted(paused.dormant) == sorted(runs[:3] + runs[4:])  # 3 has a timeout
        assert list(paused.live) == [runs[3]]
        await rt.emit("paid", {"order": 0, "amount": 5})
        result = await rt.wait(runs[0], timeout=10)
        assert result.status == "completed"
        assert result.state == {
            "order": 0,
            "timeout": False,
            "payment": {"order": 0, "amount": 5},
            "done": True,
        }
        await rt.emit("paid", {"order": 3})  # the eagerly armed one
        assert (await rt.wait(runs[3], timeout=10)).status == "completed"
        await rt.resume(runs[1], {"payment": "by hand"})  # a command wakes a dormant run
        assert (await rt.wait(runs[1], timeout=10)).state["payment"] == "by hand"
        await rt.abort(runs[2])
        assert (await rt.wait(runs[2], timeout=10)).status == "aborted"
        await rt.emit("paid", {"order": "4"})  # a string is not 4: nothing wakes
        await rt.idle()
        assert sorted(paused) == sorted(runs[4:])
    async with Runtime(db, workflows=[FLOW]) as rt:  # restarted in the middle
        assert rt._control is not None
        assert sorted(rt._control.parking.paused.dormant) == sorted(runs[4:])
        for i in (4, 5):
            await rt.emit("paid", {"order": i})
            assert (await rt.wait(runs[i], timeout=10)).status == "completed"
        statuses = {info.run_id: info.status for info in await rt.list_runs(limit=-1)}
        assert statuses == {
            **{run: "completed" for run in runs},
            runs[2]: "aborted",
        }


async def test_a_run_that_pauses_on_a_plain_wait_parks_dormant_and_resumes(db: Path) -> None:
    async with Runtime(db, workflows=[FLOW]) as rt:
        assert rt._control is not None
        paused = rt._control.parking.paused
        runs = [
            (await rt.invoke("shop", "pay", {"order": i, "timeout": i == 3})).run_id
            for i in range(5)
        ]
        assert sorted(paused.dormant) == sorted(runs[:3] + runs[4:])  # 3 has a timeout
        assert list(paused.live) == [runs[3]]
        await rt.emit("paid", {"order": 0, "amount": 5})
        result = await rt.wait(runs[0], timeout=10)
        assert result.state == {
            "order": 0,
            "timeout": False,
            "payment": {"order": 0, "amount": 5},
            "done": True,
        }
        await rt.resume(runs[1], {"payment": "by hand"})  # a command wakes a dormant run
        assert (await rt.wait(runs[1], timeout=10)).state["payment"] == "by hand"
        await rt.abort(runs[2])
        assert (await rt.wait(runs[2], timeout=10)).status == "aborted"
        await rt.emit("paid", {"order": "4"})  # a string is not 4: nothing wakes
        await rt.idle()
        assert sorted(paused) == sorted(runs[3:])
        kinds = [entry.kind for entry in await rt.timeline(runs[4])]
        assert kinds[-1] == "run.paused"
    async with Runtime(db, workflows=[FLOW]) as rt:  # journaled as the live path does
        assert rt._control is not None
        assert sorted(rt._control.parking.paused.dormant) == [runs[4]]
        await rt.emit("paid", {"order": 4})
        assert (await rt.wait(runs[4], timeout=10)).status == "completed"

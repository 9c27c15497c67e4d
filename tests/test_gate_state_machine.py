"""The pure mode gate against an independent model of the modes (Hypothesis).

`Gate` is bookkeeping with no I/O, so thousands of examples run in seconds here, where
`test_modes_state_machine.py` drives a real runtime on a journal and affords dozens. Each
example draws a mode, then dispatches, pauses, resumes and ends runs in any order. After
every rule the gate's groups must equal the model's, and the invariants hold:

* a run is in at most one of running, paused, queued and resuming;
* at most `concurrency` runs execute under `Transient`, at most one run is active (running
  or paused) under every other mode, and `Exclusive(on_busy="queue_single")` keeps at most
  one pending run;
* no run waits while a slot is free (the gate is work-conserving);
* queued runs start in the order they came (FIFO), resumed runs before queued ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator import Exclusive, Serialized, SingletonLoop, Transient
from orchestrator.define.modes import Mode
from orchestrator.engine.gate import Decision, Gate

MODES = st.one_of(
    st.builds(
        Transient,
        concurrency=st.one_of(st.none(), st.integers(1, 3)),
        capacity=st.one_of(st.none(), st.integers(0, 3)),
    ),
    st.just(Serialized()),
    st.sampled_from([SingletonLoop(on_busy=b) for b in ("drop", "signal", "replace")]),
    st.sampled_from([Exclusive(on_busy=b) for b in ("reject", "queue_single")]),
)


@dataclass
class Model:
    """The modes as DESIGN.md states them, written without looking at `Gate`."""

    mode: Mode
    running: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    resuming: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # every run that got a slot from a wait

    def free_slot(self) -> bool:
        if isinstance(self.mode, Transient):
            limit = self.mode.concurrency
            return limit is None or len(self.running) < limit
        return not self.running and not self.paused

    def dispatch(self, run: str) -> tuple[str, str | None]:
        """The action a new run gets, and the run it supersedes."""
        mode = self.mode
        if isinstance(mode, Transient):
            if self.free_slot() and not self.queue and not self.resuming:
                self.running.append(run)
                return "start", None
            if mode.capacity is None or len(self.queue) < mode.capacity:
                self.queue.append(run)
                return "queue", None
            return "drop", None
        if self.free_slot() and not self.queue:
            self.running.append(run)
            return "start", None
        if isinstance(mode, Serialized):
            self.queue.append(run)
            return "queue", None
        if isinstance(mode, SingletonLoop):
            if mode.on_busy == "replace":
                self.running[:], self.paused[:] = [run], []
                return "replace", None
            return mode.on_busy, None
        if mode.on_busy == "reject":
            return "reject", None
        superseded = self.queue.pop() if self.queue else None
        self.queue.append(run)
        return "queue", superseded

    def pause(self, run: str) -> list[str]:
        self.running.remove(run)
        self.paused.append(run)
        return self.fill() if isinstance(self.mode, Transient) else []

    def resume(self, run: str) -> bool:
        self.paused.remove(run)
        if isinstance(self.mode, Transient) and (not self.free_slot() or self.resuming):
            self.resuming.append(run)
            return False
        self.running.append(run)
        return True

    def end(self, run: str) -> list[str]:
        for group in (self.running, self.paused, self.queue, self.resuming):
            if run in group:
                group.remove(run)
        return self.fill()

    def fill(self) -> list[str]:
        starting = []
        while self.free_slot() and (self.resuming or self.queue):
            run = (self.resuming or self.queue).pop(0)
            self.running.append(run)
            starting.append(run)
        self.started.extend(starting)
        return starting


class GateMachine(RuleBasedStateMachine):
    """Drives one `Gate` and one `Model` with the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = (f"run-{n:04d}" for n in itertools.count())
        self.gate = Gate(Transient())
        self.model = Model(Transient())

    @initialize(mode=MODES)
    def choose_mode(self, mode: Mode) -> None:
        self.gate, self.model = Gate(mode), Model(mode)

    @rule()
    def dispatch(self) -> None:
        run = next(self.ids)
        active_before = {*self.model.running, *self.model.paused}
        decision: Decision = self.gate.dispatch(run)
        action, superseded = self.model.dispatch(run)
        assert (decision.action, decision.superseded) == (action, superseded)
        if action == "start":
            assert decision.holder is None
        else:  # the holder is a run that held a slot when the dispatch came, if any did
            assert decision.holder in active_before or (not active_before and not decision.holder)

    @precondition(lambda self: self.model.running)
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(self.model.running))
        assert self.gate.paused_run(run) == self.model.pause(run)

    @precondition(lambda self: self.model.paused)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(self.model.paused))
        assert self.gate.resumed(run) == self.model.resume(run)

    @precondition(lambda self: self.model.running or self.model.paused or self.model.queue)
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        waiting = [*self.model.running, *self.model.paused, *self.model.queue]
        run = data.draw(st.sampled_from([*waiting, *self.model.resuming]))
        assert self.gate.ended(run) == self.model.end(run)

    @invariant()
    def same_groups(self) -> None:
        gate, model = self.gate, self.model
        assert gate.running == set(model.running)
        assert gate.paused == set(model.paused)
        assert list(gate.queue) == model.queue
        assert list(gate.resuming) == model.resuming

    @invariant()
    def disjoint(self) -> None:
        groups = [self.gate.running, self.gate.paused, set(self.gate.queue), self.gate.resuming]
        assert sum(len(set(g)) for g in groups) == len(set().union(*groups))

    @invariant()
    def within_limits(self) -> None:
        mode, gate = self.model.mode, self.gate
        if isinstance(mode, Transient):
            assert mode.concurrency is None or len(gate.running) <= mode.concurrency
            assert mode.capacity is None or len(gate.queue) <= mode.capacity
        else:
            assert len(gate.running) + len(gate.paused) <= 1
        if isinstance(mode, Exclusive) and mode.on_busy == "queue_single":
            assert len(gate.queue) <= 1

    @invariant()
    def work_conserving(self) -> None:
        if self.gate.queue or self.gate.resuming:
            assert not self.model.free_slot()


GateMachine.TestCase.settings = settings(max_examples=1000, stateful_step_count=40, deadline=None)
test_gate_against_the_model = GateMachine.TestCase

"""Execution modes over the real runtime, against an in-memory model (Hypothesis).

One `RuleBasedStateMachine` per mode drives a real `Runtime` on a fresh journal file.
Rules dispatch ``go`` runs (one step that holds until the test releases it) and ``pause``
runs (pause until an event ``go`` with the run's ``n``, then hold), release, resume and
abort runs, and restart the runtime on the same file (running steps are cut off after a
short grace and recovered). After every rule the machine waits until the runtime has
settled (every run finished, paused, queued or holding: `hold` waits on the machine's
`FakeClock`, so `advance` wakes it and returns once the runtime is idle again), then checks
the journal against a model of the mode written independently of `Gate`:

* every run the model created is in the journal exactly once, no other run is, and each
  has exactly the status the model gives it (so nothing is lost across a restart);
* never more active runs than the mode permits (running for `Transient`; running or
  paused for the others), and under ``Exclusive(on_busy="queue_single")`` at most one
  queued run;
* queued runs start in FIFO order where promised (`Serialized`; `Transient`'s queue):
  the order in which runs first reach their ``hold`` step is the model's.

Hypothesis state machines are synchronous: each example drives its own event loop with an
`asyncio.Runner`, closed at teardown.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from orchestrator import Exclusive, Runtime, Serialized, SingletonLoop, Transient, Workflow
from orchestrator.define.modes import Mode
from orchestrator.records import RunInfo
from orchestrator.testing import FakeClock

T = TypeVar("T")
BOUND = 10.0  # seconds any one rule may take before the test calls it a hang

GATES: dict[int, asyncio.Event] = {}
HELD: list[int] = []  # the `n` of each run as its `hold` step begins (again after recovery)
CLOCK: list[FakeClock] = []  # the machine's clock, which `hold` waits on


async def hold(state: dict[str, Any]) -> dict[str, Any]:
    """Runs until the test sets the event of this run's `n`.

    It waits on the runtime's fake clock, so the runtime counts it as waiting (idle), and
    each `advance` lets it look at its event again.
    """
    HELD.append(state["n"])
    gate = GATES.setdefault(state["n"], asyncio.Event())
    while not gate.is_set():
        await CLOCK[0].sleep(1)
    return {**state, "done": True}


def wait_for_go(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go", where={"n": ("==", state["n"])}, into="go")


# -- the model -----------------------------------------------------------------------------


@dataclass
class Run:
    """One run as the model has it; `n` is its dispatch number (and first event key)."""

    n: int
    trigger: str
    status: str = "queued"
    keys: set[int] = field(default_factory=set)  # events its `hold` may wait on (signals)
    resumed: bool = False  # past its pause step
    released: bool = False
    run_id: str | None = None


FINAL = {"completed", "aborted", "dropped", "rejected"}


class Model:
    """What a mode allows, written from the modes' documentation, not from `Gate`."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.runs: dict[int, Run] = {}
        self.running: list[int] = []
        self.paused: list[int] = []
        self.queue: deque[int] = deque()
        self.resuming: deque[int] = deque()  # Transient: resumed runs waiting for a slot
        self.pending: deque[int] = deque()  # runs given a slot, yet to take their next step
        self.held: list[int] = []  # runs in the order they first reach `hold`

    @property
    def transient(self) -> bool:
        return isinstance(self.mode, Transient)

    def limit(self) -> int:
        if isinstance(self.mode, Transient):
            assert self.mode.concurrency is not None
            return self.mode.concurrency
        return 1

    def has_slot(self) -> bool:
        if self.transient:
            return len(self.running) < self.limit()
        return not self.running and not self.paused

    def holder(self) -> int | None:
        for group in (self.running, self.paused):
            if group:
                return min(group)
        return None

    def unfinished(self) -> list[int]:
        return [n for n, run in self.runs.items() if run.status not in FINAL]

    # -- transitions -----------------------------------------------------------------------

    def dispatch(self, n: int, trigger: str) -> Run | None:
        """A dispatch; None if it created no run (a signal into the holder)."""
        run = Run(n, trigger, keys={n})
        if isinstance(self.mode, Transient):
            self._dispatch_transient(self.mode, run)
        elif self.holder() is None and not self.queue:
            self._admit(run)
        elif isinstance(self.mode, Serialized):
            self._enqueue(run)
        elif isinstance(self.mode, SingletonLoop):
            if not self._dispatch_singleton(self.mode, run):
                return None
        elif self.mode.on_busy == "reject":
            run.status = "rejected"
        else:
            if self.queue:  # the latest wins: the one pending before is dropped
                self.runs[self.queue.pop()].status = "dropped"
            self._enqueue(run)
        self.runs[n] = run
        self._drain()
        return run

    def _dispatch_transient(self, mode: Transient, run: Run) -> None:
        if self.has_slot() and not self.queue and not self.resuming:
            self._admit(run)
        elif mode.capacity is None or len(self.queue) < mode.capacity:
            self._enqueue(run)
        else:
            run.status = "dropped"

    def _dispatch_singleton(self, mode: SingletonLoop, run: Run) -> bool:
        """False if the dispatch was signalled into the holder (no run is created)."""
        holder = self.holder()
        assert holder is not None
        if mode.on_busy == "drop":
            run.status = "dropped"
        elif mode.on_busy == "signal":
            self.runs[holder].keys.add(run.n)
            return False
        else:
            self._remove(holder)
            self.runs[holder].status = "aborted"
            self._admit(run)
        return True

    def release(self, n: int) -> None:
        run = self.runs[n]
        run.released = True
        if run.status == "running":  # running means at `hold`: the pause step is instant
            self._end(n, "completed")
        self._drain()

    def resume(self, n: int) -> None:
        run = self.runs[n]
        assert run.status == "paused"
        self.paused.remove(n)
        run.resumed = True
        if self.transient and (not self.has_slot() or self.resuming):
            self.resuming.append(n)
            run.status = "queued"
            return
        self.running.append(n)
        run.status = "running"
        self.pending.append(n)
        self._drain()

    def abort(self, n: int) -> None:
        self._end(n, "aborted")
        self._drain()

    def restart(self) -> None:
        """Queued rows are restored in journal (dispatch) order: a resumed Transient run
        waiting for its slot is a ``queued`` row like any other."""
        merged = sorted([*self.resuming, *self.queue])
        self.resuming.clear()
        self.queue = deque(merged)
        self._fill()
        self._drain()

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, run: Run) -> None:
        run.status = "queued"
        self.queue.append(run.n)

    def _admit(self, run: Run) -> None:
        run.status = "running"
        self.running.append(run.n)
        self.pending.append(run.n)

    def _drain(self) -> None:
        while self.pending:
            self._step(self.runs[self.pending.popleft()])

    def _step(self, run: Run) -> None:
        if run.status != "running":
            return
        if run.trigger == "pause" and not run.resumed:
            self.running.remove(run.n)
            self.paused.append(run.n)
            run.status = "paused"
            if self.transient:
                self._fill()
            return
        if run.n not in self.held:
            self.held.append(run.n)
        if run.released:
            self._end(run.n, "completed")

    def _remove(self, n: int) -> None:
        for group in (self.running, self.paused, self.queue, self.resuming):
            if n in group:
                group.remove(n)

    def _end(self, n: int, status: str) -> None:
        self._remove(n)
        self.runs[n].status = status
        self._fill()

    def _fill(self) -> None:
        while self.has_slot() and (self.resuming or self.queue):
            n = self.resuming.popleft() if self.resuming else self.queue.popleft()
            self._admit(self.runs[n])


# -- the machine ---------------------------------------------------------------------------


class ModeMachine(RuleBasedStateMachine):
    """The runtime under one mode (subclasses set `mode`) against `Model`."""

    mode: Mode = Serialized()
    check_fifo = False
    # Whether `abort` picks queued runs instead of running or paused ones (see the end).
    abort_queued = False
    max_restarts = 2

    def __init__(self) -> None:
        super().__init__()
        GATES.clear()
        HELD.clear()
        CLOCK[:] = [FakeClock()]
        self.folder = Path(tempfile.mkdtemp(prefix="modes-machine-"))
        self.db = self.folder / "journal.db"
        self.flow = Workflow(
            id="w", pipelines={"go": [hold], "pause": [wait_for_go, hold]}, mode=self.mode
        )
        self.model = Model(self.mode)
        self.next_n = 0
        self.restarts = 0
        self.invocations: list[asyncio.Future[Any]] = []
        self.runner = asyncio.Runner()
        self.rt = self.drive(self._open())

    def teardown(self) -> None:
        try:
            self.drive(self._close())
        finally:
            self.runner.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def drive(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(asyncio.wait_for(work, BOUND))

    async def _open(self) -> Runtime:
        rt = Runtime(
            self.db,
            workflows=[self.flow],
            shutdown_grace=0.01,
            synchronous="NORMAL",
            clock=CLOCK[0],
        )
        await rt.start()
        return rt

    async def _close(self) -> None:
        await self.rt.stop()
        await asyncio.gather(*self.invocations, return_exceptions=True)

    # -- rules -----------------------------------------------------------------------------

    @rule(trigger=st.sampled_from(["go", "pause"]))
    def dispatch(self, trigger: str) -> None:
        n, self.next_n = self.next_n, self.next_n + 1
        self.drive(self._dispatch(n, trigger))

    async def _dispatch(self, n: int, trigger: str) -> None:
        known = {run.run_id for run in self.model.runs.values()}
        invocation = asyncio.ensure_future(self.rt.invoke("w", trigger, {"n": n}))
        invocation.add_done_callback(_retrieve)
        self.invocations.append(invocation)
        created = self.model.dispatch(n, trigger)
        for run in self.model.runs.values():
            if run.released:  # a signal may have given a released run a new event key
                for key in run.keys:
                    GATES.setdefault(key, asyncio.Event()).set()
        runs = await self.settle()
        new = [info for info in runs if info.run_id not in known]
        if created is None:
            assert new == [], f"a signalled dispatch created runs {new}"
        else:
            assert len(new) == 1, f"dispatch {n} should create one run, journal has {new}"
            assert new[0].state.get("n") == n and new[0].trigger_id == trigger, new[0]
            created.run_id = new[0].run_id
        self.check(runs)

    @precondition(lambda self: any(not self.model.runs[n].released for n in self.unfinished()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        choices = [n for n in self.unfinished() if not self.model.runs[n].released]
        n = data.draw(st.sampled_from(choices), label="finish")
        for key in self.model.runs[n].keys:
            GATES.setdefault(key, asyncio.Event()).set()
        self.model.release(n)
        self.check(self.drive(self.settle()))

    @precondition(lambda self: self.paused())
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        n = data.draw(st.sampled_from(self.paused()), label="resume")
        self.model.resume(n)
        self.check(self.drive(self._emit(n)))

    async def _emit(self, n: int) -> list[RunInfo]:
        await self.rt.emit("go", {"n": n})
        return await self.settle()

    @precondition(lambda self: self.abortable())
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        n = data.draw(st.sampled_from(self.abortable()), label="abort")
        run_id = self.model.runs[n].run_id
        assert run_id is not None
        self.model.abort(n)
        self.check(self.drive(self._abort(run_id)))

    async def _abort(self, run_id: str) -> list[RunInfo]:
        await self.rt.abort(run_id)
        return await self.settle()

    @precondition(lambda self: self.restarts < self.max_restarts)
    @rule()
    def restart(self) -> None:
        self.restarts += 1
        self.model.restart()
        self.check(self.drive(self._restart()))

    async def _restart(self) -> list[RunInfo]:
        await self.rt.stop()
        self.rt = await self._open()
        return await self.settle()

    # -- helpers ---------------------------------------------------------------------------

    def unfinished(self) -> list[int]:
        return self.model.unfinished()

    def paused(self) -> list[int]:
        return [n for n in self.unfinished() if self.model.runs[n].status == "paused"]

    def abortable(self) -> list[int]:
        """Running or paused runs; only queued runs in the `abort_queued` machines."""
        return [
            n
            for n in self.unfinished()
            if (self.model.runs[n].status == "queued") == self.abort_queued
        ]

    async def settle(self) -> list[RunInfo]:
        """The journal once the runtime is idle, every held run having seen its event."""
        await CLOCK[0].advance(1)  # wakes each `hold`; returns once the runtime is idle
        return await self.rt.list_runs(limit=10_000)

    def check(self, runs: list[RunInfo]) -> None:
        model = self.model
        ids = [info.run_id for info in runs]
        assert len(ids) == len(set(ids)), f"a run is listed twice: {ids}"
        found = {info.run_id: info.status for info in runs}
        expected = {run.run_id: run.status for run in model.runs.values()}
        names = {run.run_id: n for n, run in model.runs.items()}
        assert found == expected, (
            "journal != model: "
            + repr(
                {
                    names.get(run_id, run_id): (found.get(run_id), expected.get(run_id))
                    for run_id in found.keys() | expected.keys()
                    if found.get(run_id) != expected.get(run_id)
                }
            )
            + f" (mode {self.mode!r}; queue {list(model.queue)}, resuming {list(model.resuming)})"
        )
        holding = ("running",) if model.transient else ("running", "paused")
        active = [status for status in found.values() if status in holding]
        assert len(active) <= model.limit(), f"{len(active)} active runs under {self.mode!r}"
        if isinstance(self.mode, Exclusive) and self.mode.on_busy == "queue_single":
            assert list(found.values()).count("queued") <= 1
        if self.check_fifo:
            first: list[int] = []
            for n in HELD:
                if n not in first:
                    first.append(n)
            assert first == model.held, f"runs reached `hold` in order {first}, not {model.held}"


def _retrieve(invocation: asyncio.Future[Any]) -> None:
    """Mark an invocation's exception (RuntimeStopped at a restart) as seen."""
    if not invocation.cancelled():
        invocation.exception()


def machine_settings(examples: int = 12, *, shrink: bool = True) -> settings:
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(
        max_examples=examples,
        derandomize=not shrink,
        stateful_step_count=10,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[*phases, Phase.shrink] if shrink else phases,
    )


class TransientMachine(ModeMachine):
    mode = Transient(concurrency=2, capacity=2)
    check_fifo = True


class SerializedMachine(ModeMachine):
    mode = Serialized()
    check_fifo = True


class SingletonDropMachine(ModeMachine):
    mode = SingletonLoop(on_busy="drop")


class SingletonSignalMachine(ModeMachine):
    mode = SingletonLoop(on_busy="signal")


class SingletonReplaceMachine(ModeMachine):
    mode = SingletonLoop(on_busy="replace")


class ExclusiveRejectMachine(ModeMachine):
    mode = Exclusive(on_busy="reject")


class ExclusiveQueueSingleMachine(ModeMachine):
    mode = Exclusive(on_busy="queue_single")


TestTransient = TransientMachine.TestCase
TestSerialized = SerializedMachine.TestCase
TestSingletonDrop = SingletonDropMachine.TestCase
TestSingletonSignal = SingletonSignalMachine.TestCase
TestSingletonReplace = SingletonReplaceMachine.TestCase
TestExclusiveReject = ExclusiveRejectMachine.TestCase
TestExclusiveQueueSingle = ExclusiveQueueSingleMachine.TestCase
for _case in (
    TestTransient,
    TestSerialized,
    TestSingletonDrop,
    TestSingletonSignal,
    TestSingletonReplace,
    TestExclusiveReject,
    TestExclusiveQueueSingle,
):
    _case.settings = machine_settings()
del _case


# Aborting a *queued* run (`Runtime.abort` -> `Control.abort_writes`, third branch) only
# journals ``aborted``: the run stays in its gate's queue and in `Admission.queued`. So
# when a slot frees it is started anyway (``aborted`` -> ``running``), under
# `Exclusive(queue_single)` a later dispatch "supersedes" it (``aborted`` -> ``dropped``),
# and under `Transient` it keeps taking queue capacity (new dispatches are dropped). These
# machines abort only queued runs; generation is derandomized so they fail every time.


class SerializedAbortQueuedMachine(SerializedMachine):
    abort_queued = True


class TransientAbortQueuedMachine(TransientMachine):
    abort_queued = True


class ExclusiveQueueSingleAbortQueuedMachine(ExclusiveQueueSingleMachine):
    abort_queued = True


TestSerializedAbortQueued = SerializedAbortQueuedMachine.TestCase
TestTransientAbortQueued = TransientAbortQueuedMachine.TestCase
TestExclusiveQueueSingleAbortQueued = ExclusiveQueueSingleAbortQueuedMachine.TestCase
for _case in (
    TestSerializedAbortQueued,
    TestTransientAbortQueued,
    TestExclusiveQueueSingleAbortQueued,
):
    _case.settings = machine_settings(15, shrink=False)
del _case

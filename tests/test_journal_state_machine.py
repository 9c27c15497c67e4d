"""The journal layer against an in-memory model, driven by a Hypothesis state machine.

Rules start runs, checkpoint them, end them, record recoveries, commit, crash the writer
at its ``before_commit`` fault point and reopen, or close cleanly and reopen. The model
keeps what has been *acknowledged* (a batch future resolved) apart from what is merely
enqueued. After every rule the file must equal the acknowledged model plus some prefix of
the enqueued batches (batches commit in order, and one may be committing right now): so
every acknowledged write is visible, nothing from a dropped batch ever is, and statuses,
positions, checkpoints and timeline rows match exactly. When nothing is pending, what
`JournalReader` answers must agree with the model too.

Hypothesis state machines are synchronous: each machine drives its own event loop
(`asyncio.Runner`), owns the writer's batch-loop task and cancels it at teardown.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
from hypothesis import Phase, event, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from orchestrator.errors import JournalError
from orchestrator.journal import FaultPoints, faults, ops
from orchestrator.journal.sqlite.deltas import state_of
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.writer import GroupCommitWriter
from orchestrator.state import encode_state

T = TypeVar("T")
WORKFLOW, TRIGGER, VERSION = "wf", "go", "v1"
BOUND = 10.0  # seconds any one journal await may take before the test calls it a hang


def step_name(position: int) -> str:
    return f"s{position}"


@dataclass
class RunModel:
    """One run as the journal must hold it."""

    row: int
    run_id: str
    status: str
    position: int
    step: str | None
    step_started_at: int
    created_at: int
    updated_at: int
    error: str | None = None
    code: str | None = None
    # position -> (step, started_at, ended_at, state text)
    checkpoints: dict[int, tuple[str | None, int, int, str]] = field(default_factory=dict)
    # (position, at, source, kind, step, message), in the order written
    timeline: list[tuple[int | None, int, str, str, str | None, str | None]] = field(
        default_factory=list
    )


Model = dict[int, RunModel]


@dataclass(frozen=True)
class CreateRun:
    row: int
    run_id: str
    state: str
    at: int

    def ops(self) -> list[ops.Op]:
        return ops.create_run(
            self.row,
            self.run_id,
            WORKFLOW,
            TRIGGER,
            VERSION,
            status="running",
            first_step=step_name(1),
            state=self.state,
            at=self.at,
        )

    def apply(self, model: Model) -> None:
        model[self.row] = RunModel(
            self.row,
            self.run_id,
            "running",
            0,
            step_name(1),
            self.at,
            self.at,
            self.at,
            checkpoints={0: (None, self.at, self.at, self.state)},
        )


@dataclass(frozen=True)
class Checkpoint:
    row: int
    position: int
    state: str
    started_at: int
    ended_at: int
    last: bool

    @property
    def next_step(self) -> str | None:
        return None if self.last else step_name(self.position + 1)

    def ops(self) -> list[ops.Op]:
        return ops.checkpoint(
            self.row,
            self.position,
            step_name(self.position),
            started_at=self.started_at,
            ended_at=self.ended_at,
            state=self.state,
            next_step=self.next_step,
        )

    def apply(self, model: Model) -> None:
        run = model[self.row]
        run.checkpoints[self.position] = (
            step_name(self.position),
            self.started_at,
            self.ended_at,
            self.state,
        )
        run.position, run.step, run.step_started_at = self.position, self.next_step, self.ended_at
        run.updated_at = max(run.updated_at, self.ended_at)


@dataclass(frozen=True)
class SetStatus:
    row: int
    status: str
    at: int

    @property
    def error(self) -> tuple[str | None, str | None]:
        return {
            "completed": (None, None),
            "running": (None, None),
            "failed": ("step 's1' failed: ValueError", "STEP_FAILED"),
            "aborted": ("aborted by request", "ABORTED"),
        }[self.status]

    def ops(self) -> list[ops.Op]:
        error, code = self.error
        return [ops.set_status(self.row, self.status, self.at, error=error, code=code)]

    def apply(self, model: Model) -> None:
        run = model[self.row]
        run.status, (run.error, run.code) = self.status, self.error
        run.updated_at = max(run.updated_at, self.at)


@dataclass(frozen=True)
class Recover:
    """What the runtime writes when it picks a running run up again after a restart."""

    row: int
    position: int
    step: str
    at: int

    def ops(self) -> list[ops.Op]:
        return [
            ops.set_status(self.row, "running", self.at),
            ops.add_timeline(
                self.row,
                self.at,
                "runtime",
                "run.recovered",
                position=self.position,
                step=self.step,
                message="recovered",
            ),
            ops.step_started(self.row, self.position, self.step, self.at),
        ]

    def apply(self, model: Model) -> None:
        SetStatus(self.row, "running", self.at).apply(model)
        run = model[self.row]
        run.timeline.append(
            (self.position, self.at, "runtime", "run.recovered", self.step, "recovered")
        )
        run.position, run.step, run.step_started_at = self.position, self.step, self.at
        run.updated_at = max(run.updated_at, self.at)


Action = CreateRun | Checkpoint | SetStatus | Recover
Rows = list[tuple[Any, ...]]


def render(model: Model) -> tuple[Rows, Rows, Rows]:
    """The model as the rows `snapshot` reads back."""
    runs: Rows = []
    checkpoints: Rows = []
    timeline: Rows = []
    for row in sorted(model):
        run = model[row]
        runs.append(
            (
                row,
                run.run_id,
                WORKFLOW,
                TRIGGER,
                VERSION,
                run.status,
                run.position,
                run.step,
                run.step_started_at,
                run.error,
                run.code,
                run.created_at,
                run.updated_at,
            )
        )
        checkpoints += [(row, pos, *run.checkpoints[pos]) for pos in sorted(run.checkpoints)]
        timeline += [(row, *entry) for entry in run.timeline]
    return runs, checkpoints, timeline


def snapshot(path: Path) -> tuple[Rows, Rows, Rows]:
    """Runs, checkpoints and timeline rows, read in one transaction (one consistent view)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        runs = conn.execute(
            "SELECT id, run_id, workflow_id, trigger_id, version, status, position, step,"
            " step_started_at, error, error_code, created_at, updated_at FROM runs ORDER BY id"
        ).fetchall()
        # Whole states, read as every reader reads them: snapshots and patches alike.
        checkpoints = conn.execute(
            f"SELECT run, position, step, started_at, ended_at, {state_of('c')}"
            " FROM checkpoints c ORDER BY run, position"
        ).fetchall()
        timeline = conn.execute(
            "SELECT run, position, at, source, kind, step, message FROM timeline ORDER BY run, id"
        ).fetchall()
        conn.execute("COMMIT")
        return runs, checkpoints, timeline
    finally:
        conn.close()


def pragma(path: Path, sql: str) -> Rows:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# Some states are large enough to be written as patches against a snapshot (`deltas`).
STATES = st.fixed_dictionaries(
    {"n": st.integers(-(2**53), 2**53), "s": st.text(max_size=4)},
    optional={"pad": st.sampled_from(["p" * 600, "q" * 900])},
)
TICKS = st.integers(min_value=0, max_value=5_000)  # the runtime's clock never goes back
PICKS = st.integers(min_value=0, max_value=1_000)


class JournalMachine(RuleBasedStateMachine):
    """GroupCommitWriter + JournalReader + ops against `Model`."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="journal-machine-"))
        self.path = self.dir / "journal.db"
        self.runner = asyncio.Runner()
        self.faults = FaultPoints()
        self.acked: Model = {}  # what committed and was acknowledged
        self.projected: Model = {}  # acked plus everything enqueued since
        # Invariant: enqueued batches not yet acknowledged, in commit order.
        self.batches: list[tuple[asyncio.Future[None], list[Action]]] = []
        self.clock = 1_700_000_000_000_000
        self.serial = 0
        self.writer: GroupCommitWriter | None = None
        self.loop_task: asyncio.Task[None] | None = None
        self.next_row = 1
        self.run(self._open())

    def run(self, work: Awaitable[T]) -> T:
        return self.runner.run(asyncio.wait_for(work, BOUND))

    def teardown(self) -> None:
        try:
            self.run(self._abandon())
        finally:
            self.runner.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the writer's lifecycle --------------------------------------------------------------

    async def _open(self) -> None:
        writer = GroupCommitWriter(self.path, synchronous="NORMAL", faults=self.faults)
        started = time.monotonic()
        opened = await writer.open()
        assert time.monotonic() - started < 2, "a dead lease must be taken over at once"
        self.writer = writer
        assert opened.max_run_row == max(self.acked, default=0)
        self.next_row = opened.max_run_row + 1
        self.loop_task = asyncio.create_task(writer.run(), name="journal-writer")
        await asyncio.sleep(0)  # a yield, not a wait: the writer task starts its thread now

    async def _abandon(self) -> None:
        writer, task, self.writer, self.loop_task = self.writer, self.loop_task, None, None
        if writer is None or task is None:
            return
        # Whatever happened in the example, stop the batch loop first (a pending batch is
        # failed, not committed), then close: close() cannot hang on a loop that has ended.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()

    def _writer(self) -> GroupCommitWriter:
        assert self.writer is not None
        return self.writer

    # -- enqueueing ------------------------------------------------------------------------

    def now(self, ticks: int) -> int:
        self.clock += ticks
        return self.clock

    def submit(self, *actions: Action) -> None:
        async def enqueue() -> None:
            self.enqueue(*actions)

        self.runner.run(enqueue())

    def enqueue(self, *actions: Action) -> None:
        """Enqueue `actions` as one call (on the loop) and track the batch they joined."""
        future = self._writer().enqueue([op for action in actions for op in action.ops()])
        if self.batches and self.batches[-1][0] is future:
            self.batches[-1][1].extend(actions)
        else:
            self.batches.append((future, list(actions)))
        for action in actions:
            action.apply(self.projected)

    def acknowledge(self) -> None:
        """Fold the batches whose futures resolved successfully into the acknowledged model."""
        while self.batches and self.batches[0][0].done():
            future, actions = self.batches[0]
            assert not future.cancelled() and future.exception() is None, future
            self.batches.pop(0)
            for action in actions:
                action.apply(self.acked)

    def pick_running(self, pick: int, *, with_step: bool = False) -> RunModel | None:
        runs = [
            run
            for run in self.projected.values()
            if run.status == "running" and (run.step is not None or not with_step)
        ]
        return runs[pick % len(runs)] if runs else None

    # -- rules -----------------------------------------------------------------------------

    @rule(state=STATES, ticks=TICKS)
    def start_run(self, state: dict[str, Any], ticks: int) -> None:
        self.serial += 1
        row, self.next_row = self.next_row, self.next_row + 1
        self.submit(CreateRun(row, f"run-{self.serial}", encode_state(state), self.now(ticks)))

    # No preconditions: which batches beat a crash is up to timing, so the model's runs are
    # too, and Hypothesis needs the same draws whatever they are. A rule with no run to act
    # on does nothing.
    @rule(pick=PICKS, state=STATES, ticks=TICKS, took=TICKS, last=st.booleans())
    def checkpoint(
        self, pick: int, state: dict[str, Any], ticks: int, took: int, last: bool
    ) -> None:
        run = self.pick_running(pick, with_step=True)
        if run is None:
            return
        started = self.now(ticks)
        self.submit(
            Checkpoint(
                run.row, run.position + 1, encode_state(state), started, self.now(took), last
            )
        )

    @rule(pick=PICKS, status=st.sampled_from(["completed", "failed", "aborted"]), ticks=TICKS)
    def finish(self, pick: int, status: str, ticks: int) -> None:
        run = self.pick_running(pick)
        if run is not None:
            self.submit(SetStatus(run.row, status, self.now(ticks)))

    @rule(pick=PICKS, ticks=TICKS)
    def recover(self, pick: int, ticks: int) -> None:
        run = self.pick_running(pick, with_step=True)
        if run is None or run.step is None:
            return
        self.submit(Recover(run.row, run.position, run.step, self.now(ticks)))

    @rule()
    def commit(self) -> None:
        self.run(self._commit())

    async def _commit(self) -> None:
        # asyncio.wait, not gather or a timeout: never cancel a batch future shared with others.
        futures = [future for future, _ in self.batches]
        if futures:
            _, late = await asyncio.wait(futures, timeout=BOUND)
            assert not late, "acknowledged batches never resolved"
        self.acknowledge()
        assert not self.batches
        await self._reader_agrees()

    @rule(doomed=st.lists(STATES, max_size=2), pick=PICKS, end=st.booleans(), ticks=TICKS)
    def crash_and_reopen(
        self, doomed: list[dict[str, Any]], pick: int, end: bool, ticks: int
    ) -> None:
        # Writes enqueued right before the crash, with no turn of the loop in between, are
        # in no batch the writer has taken yet: they are certain to be dropped.
        actions: list[Action] = []
        for state in doomed:
            self.serial += 1
            row, self.next_row = self.next_row, self.next_row + 1
            actions.append(
                CreateRun(row, f"run-{self.serial}", encode_state(state), self.now(ticks))
            )
        run = self.pick_running(pick)
        if end and run is not None:
            actions.append(SetStatus(run.row, "completed", self.now(ticks)))
        self.run(self._crash_and_reopen(actions))

    async def _crash_and_reopen(self, doomed: list[Action]) -> None:
        writer, token = self._writer(), self._lease()[0]
        if doomed:
            self.enqueue(*doomed)
        self.faults.arm(faults.BEFORE_COMMIT)
        self.enqueue()  # a batch to crash on, joining what is pending
        futures = [future for future, _ in self.batches]
        _, late = await asyncio.wait(futures, timeout=BOUND)
        assert not late, "batches never settled after the crash"
        outcomes = [future.exception() for future in futures]
        ok = [outcome is None for outcome in outcomes]
        assert ok == sorted(ok, reverse=True), f"a batch failed before a later one: {outcomes}"
        assert not ok[-1], "the armed fault point never fired"
        assert all(isinstance(outcome, JournalError) for outcome in outcomes if outcome is not None)
        lost = sum(
            len(actions) for (_, actions), kept in zip(self.batches, ok, strict=True) if not kept
        )
        event(
            f"crash: {ok.count(True)} batches beat it, {min(lost, 3)}{'+' * (lost >= 3)} "
            "enqueued writes dropped"
        )
        for (_, actions), committed in zip(self.batches, ok, strict=True):
            for action in actions if committed else []:
                action.apply(self.acked)
        self.batches.clear()  # the rest was dropped: none of it may ever be visible
        self.projected = copy.deepcopy(self.acked)
        assert self.loop_task is not None
        await self.loop_task  # the batch loop ends on a crash, without an error
        assert isinstance(writer.failure, JournalError)
        try:
            writer.enqueue([])
        except JournalError:
            pass
        else:
            raise AssertionError("a crashed writer accepted more writes")
        await writer.close()  # after a crash: closes the connection, leaves the lease behind
        self.writer = self.loop_task = None
        assert self._lease() == (token, os.getpid()), "a crash must leave its lease behind"
        await self._open()
        assert self._lease()[0] != token

    @rule()
    def close_and_reopen(self) -> None:
        self.run(self._close_and_reopen())

    async def _close_and_reopen(self) -> None:
        writer, task = self._writer(), self.loop_task
        assert task is not None
        closing = asyncio.ensure_future(writer.close())  # commits what is enqueued, releases
        try:
            await self._until_closed(closing, task)
        finally:
            closing.cancel()
            await asyncio.gather(closing, return_exceptions=True)
        closing.result()
        await task
        assert all(future.done() for future, _ in self.batches), "close left batches unsettled"
        self.acknowledge()
        assert not self.batches
        self.writer = self.loop_task = None
        assert pragma(self.path, "SELECT token, pid FROM lease") == []
        await self._open()
        await self._reader_agrees()

    async def _until_closed(self, closing: asyncio.Future[None], task: asyncio.Task[None]) -> None:
        """Wait for `close()`; fail fast if it hangs with everything already committed."""
        settled_since: float | None = None
        while not closing.done():
            await asyncio.wait([closing], timeout=0.05)
            idle = all(future.done() for future, _ in self.batches) and not task.done()
            if not idle or self._writer().backlog:
                settled_since = None
            elif settled_since is None:
                settled_since = time.monotonic()
            elif time.monotonic() - settled_since > 0.5:
                raise AssertionError(
                    "close() hangs: every batch committed, yet the batch loop still waits "
                    "for a wakeup that close() already spent"
                )

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def journal_is_acknowledged_model_plus_a_prefix_of_batches(self) -> None:
        self.acknowledge()
        seen = snapshot(self.path)
        model = copy.deepcopy(self.acked)
        views = [render(model)]
        for _, actions in self.batches:
            for action in actions:
                action.apply(model)
            views.append(render(model))
        if seen not in views:
            assert seen == views[0], "the journal differs from every committed prefix"
        event(f"journal read with {views.index(seen)} of {len(views) - 1} pending batches in")

    @invariant()
    def file_is_intact_and_leased(self) -> None:
        assert pragma(self.path, "PRAGMA integrity_check") == [("ok",)]
        assert pragma(self.path, "PRAGMA foreign_key_check") == []
        assert self._lease()[1] == os.getpid()

    def _lease(self) -> tuple[str, int]:
        rows = pragma(self.path, "SELECT token, pid FROM lease")
        assert len(rows) == 1, rows
        return rows[0][0], rows[0][1]

    async def _reader_agrees(self) -> None:
        """With nothing pending, the reader's answers are the model's."""
        reader = await JournalReader.open(self.path)
        try:
            infos = await reader.list_runs(limit=-1)
            assert [info.run_id for info in infos] == [
                self.acked[row].run_id for row in sorted(self.acked, reverse=True)
            ]
            for info in infos:
                run = next(run for run in self.acked.values() if run.run_id == info.run_id)
                last = run.checkpoints[max(run.checkpoints)][3]
                assert (info.status, info.step, info.state, info.error, info.error_code) == (
                    run.status,
                    run.step,
                    json.loads(last),
                    run.error,
                    run.code,
                )
                chain = await reader.checkpoints(info.run_id)
                assert [(c.position, c.step, c.state) for c in chain] == [
                    (pos, step, json.loads(state))
                    for pos, (step, _, _, state) in sorted(run.checkpoints.items())
                ]
            unfinished = await reader.unfinished_runs()
            assert [(u.row, u.status, u.position, u.step, u.state) for u in unfinished] == [
                (run.row, run.status, run.position, run.step, run.checkpoints[run.position][3])
                for run in sorted(self.acked.values(), key=lambda run: run.row)
                if run.status == "running"
            ]
        finally:
            await reader.close()


# No shrink phase: the writer commits on its own thread, so which batches beat a crash is
# up to timing and a replay of a failing example need not fail at the same step; Hypothesis
# then spends minutes shrinking and reports Flaky. The failing steps are printed as run.
JournalMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
)
TestJournalStateMachine = JournalMachine.TestCase

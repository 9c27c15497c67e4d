"""The coordinator's side: segments of its runs offered to the executors standing by.

Where the supervisor would execute a run here, it asks `Offering.takes`: past this
daemon's share of the runs in flight (its runs over itself and the executors enlisted), a
run of a workflow file is offered as a run task instead, and `Offering.run` returns what
the executor replied: how the run ended (`Finished`, journaled here by `executor.end`, so
settling, modes, children and hooks stay the coordinator's), the pause its last step
asked for (parked here), `ABORTED`, or `HERE`: execute it here now, from where it got to.

`HERE` comes when no executor claimed the task within `CLAIM_PATIENCE` (none has the
file, or all are busy: the task is taken back), when a step needed what only the
coordinator has (an executor hands the run back, and its workflow's runs stay here from
then on), when its text cannot be offered, and when its executor was lost: fenced by
`RunTasks.abandon` (a batch of its in flight commits first), the run continues here from
its last committed checkpoint, as recovery continues a run whose process died.

Signals and aborts of a run executed elsewhere go to its executor as patches of its task
(the executor journals a signal itself: checkpoint positions are its own). A signal that
arrives after its last checkpoint is merged here when the run pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...clock import Clock
from ...define.waits import PauseRequest
from ...errors import JournalError
from ...journal import JournalQueries, JournalWriter, RunTaskOffer, RunTasks, WriterIdentity, ops
from ..executor import ActiveRun, Finished, abort_consumed
from ..parking import signalled
from ..recovery import Resumable, plan
from ..workers.pacing import Backoff, news_or
from . import wire

_log = logging.getLogger("orchestrator.runtime")

# Seconds an offered task may wait for an executor before it is taken back and run here.
CLAIM_PATIENCE = 2.0
# Seconds between looks at the journal without a notification; between counts of executors.
NEWS_WAIT = 0.5
LOOK_AFTER_EVERY = 1.0
# Seconds a stopping coordinator spends cancelling the tasks it offered.
CANCEL_PATIENCE = 2.0
# Seconds a run kept here waits for the offers queued before it to be made (`sent`).
OFFERS_FIRST = 0.05


class Elsewhere(enum.Enum):
    """What `Offering.run` returns besides an outcome."""

    ABORTED = "aborted"  # it stopped on the abort: journal it aborted
    HERE = "here"  # execute it here, from where it got to


ABORTED, HERE = Elsewhere.ABORTED, Elsewhere.HERE
Outcome = Finished | PauseRequest | Elsewhere


@dataclass(eq=False)
class _Segment:
    run: ActiveRun
    done: asyncio.Future[Outcome]
    task_id: int | None = None
    offered_at: float = 0.0
    # Signals sent to its executor, by number, until its reply says which it merged.
    signals: dict[int, dict[str, Any]] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)  # to send


class Offering:
    """Offers segments, takes replies, relays signals and aborts, recovers lost runs."""

    def __init__(
        self,
        tasks: RunTasks,
        *,
        writer: JournalWriter,
        reader: JournalQueries,
        clock: Clock,
        identity: Callable[[], WriterIdentity | None],
        wants: Callable[[str], bool],
        offers: bool = True,
    ) -> None:
        self._tasks = tasks
        self._offers = offers  # False: it offers nothing, and still fences old executors
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._identity = identity
        self._wants = wants
        self._queued: list[_Segment] = []
        self._offered: dict[int, _Segment] = {}  # by task id
        self._by_run: dict[str, _Segment] = {}
        self._executors = 0
        self._here_only: set[str] = set()  # workflows whose runs a step handed back
        self._next_signal = 0
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()  # clear while offers are queued
        self._sent.set()
        self._opened = False
        # Set once the executors of the coordinator before this one are fenced (`_open`).
        self.fenced_before = asyncio.Event()
        self.offered = 0  # segments offered so far (for tests and the bench)

    # -- the supervisor's side -------------------------------------------------------------

    def takes(self, run: ActiveRun, in_flight: int) -> bool:
        """Whether to offer `run`'s next segment rather than execute it here.

        `in_flight`: the runs this daemon has active (here and elsewhere).
        """
        if not (self._offers and self._opened) or self._executors == 0 or run.workflow.file is None:
            return False
        if run.invalid_input is not None or run.crash_loop is not None:
            return False
        if run.workflow.id in self._here_only or self._step_listeners():
            return False
        elsewhere = len(self._by_run)
        here = in_flight - elsewhere
        share = math.ceil(in_flight / (self._executors + 1))
        return here > share

    def _step_listeners(self) -> bool:
        """Whether an ``rt.on`` listener wants step events (only this process tells them)."""
        return any(self._wants(name) for name in ("step.started", "step.completed", "step.failed"))

    async def run_elsewhere(self, run: ActiveRun) -> Outcome:
        """Offer `run`'s next segment and return what came of it.

        Cancelled with `run.abort_requested`, it sends the abort and waits for the
        executor to stop (or to be lost); cancelled otherwise (shutdown), its task is
        cancelled and the run stays as its last checkpoint left it.
        """
        segment = _Segment(run, asyncio.get_running_loop().create_future())
        self._queued.append(segment)
        self._by_run[run.run_id] = segment
        self._sent.clear()
        self._wake.set()
        try:
            try:
                return await asyncio.shield(segment.done)
            except asyncio.CancelledError:
                if segment.done.done() or not abort_consumed(run):
                    raise
                segment.patches.append({wire.ABORT: run.abort_reason})
                self._wake.set()
                return await asyncio.shield(segment.done)
        finally:
            self._let_go(segment)

    async def sent(self) -> None:
        """Return once the offers queued so far are made (waiting `OFFERS_FIRST` at most).

        A run kept here waits for them before its steps start: CPU-bound steps of this
        daemon's own share would otherwise hold the event loop, and the offers made on it,
        until they are done, the daemons standing by idle meanwhile.
        """
        if self._sent.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OFFERS_FIRST):
                await self._sent.wait()

    def signal(self, run: ActiveRun, patch: dict[str, Any]) -> bool:
        """Send a signal to the executor of `run`; False if `run` executes here."""
        segment = self._by_run.get(run.run_id)
        if segment is None:
            return False
        self._next_signal += 1
        segment.signals[self._next_signal] = patch
        segment.patches.append({f"{wire.SIGNAL_PREFIX}{self._next_signal}": patch})
        self._wake.set()
        return True

    def _let_go(self, segment: _Segment) -> None:
        if self._by_run.get(segment.run.run_id) is segment:
            del self._by_run[segment.run.run_id]
        if segment in self._queued:
            self._queued.remove(segment)
            if not self._queued:
                self._sent.set()
        if segment.task_id is not None:
            self._offered.pop(segment.task_id, None)
        if not segment.done.done():
            segment.done.cancel()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Offer, take replies, look after executors; until cancelled (then cancel tasks)."""
        backoff = Backoff()
        try:
            await self._open(backoff)
            looked_at = 0.0
            while True:
                try:
                    if time.monotonic() - looked_at >= LOOK_AFTER_EVERY:
                        looked_at = time.monotonic()
                        await self._look_after_executors()
                    await self._turn()
                    backoff.reset()
                except JournalError as exc:  # fenced: the writer stops this daemon anyway
                    _log.warning("run tasks: %s; trying again", exc)
                    await backoff.pause()
                await news_or(self._wake, self._tasks, NEWS_WAIT)
        finally:
            await self._stop()

    async def _open(self, backoff: Backoff) -> None:
        """Connect; fence the executors of the coordinator before this one.

        Until then (`fenced_before`), the runs recovered from it must not start here: an
        executor of its not fenced yet may still be executing them, its writes landing.
        """
        while True:
            identity = self._identity()
            try:
                await self._tasks.open()
                if identity is not None:
                    now = self._clock.now_us()
                    fenced = await self._tasks.fence_others(daemon_id=identity.daemon_id, now=now)
                    if fenced:
                        _log.warning(
                            "fenced %d executor(s) of the daemon before this one: their runs"
                            " continue from their last checkpoints",
                            fenced,
                        )
                self._opened = True
                self.fenced_before.set()
                return
            except JournalError as exc:
                _log.warning("run tasks: %s; trying again", exc)
                await self._tasks.close()
                await backoff.pause()

    async def _turn(self) -> None:
        await self._offer_queued()
        await self._send_patches()
        await self._take_replies()
        await self._take_back()

    async def _offer_queued(self) -> None:
        try:
            await self._make_offers()
        finally:
            if not self._queued:
                self._sent.set()

    async def _make_offers(self) -> None:
        queued, self._queued = self._queued, []
        queued = [segment for segment in queued if not segment.done.done()]
        identity = self._identity()
        if not queued or identity is None:
            for segment in queued:
                _settle(segment, HERE)
            return
        # The run's own rows first: an executor's checkpoint of a run not committed yet
        # would be refused.
        await self._writer.flush()
        offers = [
            RunTaskOffer(
                segment.run.row,
                segment.run.run_id,
                segment.run.workflow.version,
                wire.request_of(segment.run),
                segment.run.state_text,
            )
            for segment in queued
        ]
        try:
            ids = await self._tasks.offer(
                offers, daemon_id=identity.daemon_id, epoch=identity.epoch, now=self._clock.now_us()
            )
        except ValueError as exc:  # text the journal cannot keep: they run here
            _log.warning("run tasks: cannot offer: %s; the runs execute here", exc)
            for segment in queued:
                _settle(segment, HERE)
            return
        except BaseException:
            self._queued[:0] = queued
            raise
        now = time.monotonic()
        for segment, task_id in zip(queued, ids, strict=True):
            segment.task_id, segment.offered_at = task_id, now
            self._offered[task_id] = segment
        self.offered += len(ids)

    async def _send_patches(self) -> None:
        for task_id, segment in list(self._offered.items()):
            while segment.patches:
                patch = segment.patches[0]
                await self._tasks.patch(task_id, patch)
                segment.patches.pop(0)

    async def _take_replies(self) -> None:
        if not self._offered:
            return
        for taken in await self._tasks.take_replies(list(self._offered)):
            segment = self._offered.pop(taken.id, None)
            if segment is None:
                continue
            try:
                reply = wire.read_reply(taken.reply)
            except wire.Unreadable as exc:
                _log.warning("run %s: %s; it continues here", segment.run.run_id, exc)
                await self._recover(segment, str(exc))
                continue
            self._answered(segment, reply)

    def _answered(self, segment: _Segment, reply: wire.Reply) -> None:
        run = segment.run
        reply.progress.apply(run)
        if reply.back and not reply.coordinator:
            _settle(segment, HERE)
            return
        if reply.back:
            self._here_only.add(run.workflow.id)
            _log.info(
                "run %s: workflow %s registers waits ahead; its runs execute on the"
                " coordinator from now on",
                run.run_id,
                run.workflow.id,
            )
            _settle(segment, HERE)
            return
        if reply.outcome is None:
            _settle(segment, ABORTED)
            return
        if isinstance(reply.outcome, PauseRequest):
            late = self._late_signals(segment, reply.signals)
            if reply.carried is None:  # its executor committed the step's checkpoint
                self._writer.submit(late)
            else:  # committed with the pause (`Parking.park_or_drain`), after the signals
                run.carried = [*_moved_to(reply.carried, run.row, run.position), *late]
        _settle(segment, reply.outcome)

    def _late_signals(self, segment: _Segment, merged: int) -> list[ops.Op]:
        """The writes of the signals its executor did not take before the run paused."""
        late = [patch for number, patch in sorted(segment.signals.items()) if number > merged]
        writes: list[ops.Op] = []
        for patch in late:
            writes += signalled(segment.run, patch, self._clock.now_us())
        return writes

    async def _take_back(self) -> None:
        """Run here what waited too long for an executor (or every task, with none)."""
        patience = CLAIM_PATIENCE if self._executors else 0.0
        now = time.monotonic()
        waiting = [
            task_id
            for task_id, segment in self._offered.items()
            if now - segment.offered_at >= patience or segment.run.abort_requested
        ]
        if not waiting:
            return
        for task_id in await self._tasks.take_back(waiting, len(waiting)):
            segment = self._offered.pop(task_id, None)
            if segment is not None:
                _settle(segment, HERE)

    async def _look_after_executors(self) -> None:
        executors = await self._tasks.executors()
        if executors != self._executors and self._offers:
            _log.info("run segments: %d daemons standing by can execute them", executors)
        self._executors = executors
        identity = self._identity()
        if identity is None or not self._offered:
            return
        lost = await self._tasks.abandon(daemon_id=identity.daemon_id, now=self._clock.now_us())
        for task_id in lost:
            segment = self._offered.pop(task_id, None)
            if segment is not None:
                await self._recover(segment, "its executor stopped or was judged gone")

    async def _recover(self, segment: _Segment, why: str) -> None:
        """Continue a run whose executor was lost here, from its last committed checkpoint."""
        run = segment.run
        stored = await self._reader.stored_run(run.run_id)
        if stored is not None:
            resumption = plan(Resumable.from_journal(stored), run.workflow)
            if resumption.step_index is not None:
                wire.Progress(resumption.step_index, stored.position, stored.state).apply(run)
        message = f"{why}; continuing here from checkpoint {run.position}"
        now = self._clock.now_us()
        self._writer.submit(
            [
                ops.add_timeline(
                    run.row,
                    now,
                    "runtime",
                    "run.recovered",
                    position=run.position,
                    step=run.next_step,
                    message=message,
                )
            ]
        )
        _log.warning("run %s: %s", run.run_id, message)
        _settle(segment, HERE)

    async def _stop(self) -> None:
        """Cancel the tasks still offered (their executors stop them); disconnect."""
        # Their runs are not settled here: one still executing elsewhere must not start
        # here too. The supervisor's stop cancels their tasks; the next coordinator
        # fences those executors before it recovers the runs.
        offered = list(self._offered)
        self._opened = False
        try:
            if offered:
                with contextlib.suppress(JournalError, TimeoutError):
                    async with asyncio.timeout(CANCEL_PATIENCE):
                        await self._tasks.cancel(offered)
        finally:
            await self._tasks.close()


def _moved_to(carried: list[ops.Op], row: int, position: int) -> list[ops.Op]:
    """`carried` with its run's progress at `position` (past the signals merged after it).

    Its pause updates the run's row from that progress (`ops.parked`), after the signals'
    own updates of the row: the row's position must not go back.
    """
    return [
        (stmt, (position, *params[1:]))
        if stmt is ops.Stmt.SET_PROGRESS and params[-1] == row
        else (stmt, params)
        for stmt, params in carried
    ]


def _settle(segment: _Segment, outcome: Outcome) -> None:
    if not segment.done.done():
        segment.done.set_result(outcome)

"""Isolated steps spread over the daemons of a shared journal: here, or offered to a standby.

The active daemon runs each isolated step in its own workers up to its share of them (its
pool's size over the daemons that can run steps); past that share, a step of a workflow
file is offered through the journal (`StepJobs`), a standby claims and runs it, and its
reply comes back as a local worker's outcome would. Everything else about the run stays
here: checkpoints, logs, timeouts, retries, what the step started and emitted.

- A step given up here (its run aborted, the daemon stopping) is withdrawn: the standby
  running it kills its worker.
- A standby that goes away with a step is replaced: the step is offered again (up to
  `MAX_ATTEMPTS` times, then it fails as a crashed worker would), and once no standby is
  left, the steps still offered run here.
- Journal trouble while offering runs the step here; nothing is lost, a step may run twice
  (steps are at-least-once, as after a crash).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...clock import Clock
from ...errors import JournalError
from ...journal import StepJobs, StepOffer, WriterIdentity
from ..context import StepContext
from . import jobs
from .pacing import Backoff, news_or
from .pool import StepRef, WorkerPool

_log = logging.getLogger("orchestrator.workers")

NEWS_WAIT = 0.5  # seconds between looks for replies without a notification
LOOK_EVERY = 1.0  # seconds between counts of standbys (and offers of abandoned steps again)
MAX_ATTEMPTS = 3  # standbys that may go away with one step before it fails
# An offer's jobs this daemon does not know of, this old, were offered unheard (the
# connection was lost after their commit): they are deleted.
STRAY_AGE_US = 10_000_000

Reply = dict[str, Any] | None  # None: run it here after all


@dataclass(eq=False, slots=True)
class _Offered:
    offer: StepOffer
    reply: asyncio.Future[Reply]
    job_id: int | None = None  # once offered


class SpreadPool:
    """`WorkerPool.call` over this daemon's workers and those of the daemons standing by."""

    def __init__(
        self,
        local: WorkerPool,
        step_jobs: StepJobs,
        *,
        identity: Callable[[], WriterIdentity | None],
        clock: Clock,
        keep_here: int | None = None,
    ) -> None:
        self.local = local
        # Steps at once this daemon keeps in its own workers before it offers the next
        # (None: its share, its pool's size over the daemons that can run steps).
        self._keep_here = keep_here
        self._jobs = step_jobs
        self._identity = identity
        self._clock = clock
        self.servers = 0  # standbys that can run steps, as last counted (0 until `run` counts)
        self._busy_here = 0
        self._to_offer: list[_Offered] = []
        self._offering = asyncio.Event()
        # Invariant: a job id is in at most one of `_waiting` and `_to_forget`.
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        # Set when a worker here is free: steps offered but not claimed yet come back.
        self._room_here = asyncio.Event()
        self._to_forget: list[int] = []
        # Set by a failure to reach the journal: what was committed unheard is looked for.
        self._unsure = False
        self.offered = 0  # steps offered so far (figures and tests)
        self.taken_back = 0  # of those, run here after all

    async def call(
        self, step: StepRef, state_text: str, ctx: StepContext | None, time_limit: float | None
    ) -> object:
        """As `WorkerPool.call`; the step may run in a standby's worker."""
        if self._goes_out(step):
            reply = await self._offer(step, state_text, ctx, time_limit)
            if reply is not None:
                return jobs.outcome_of(reply, ctx)
        self._busy_here += 1
        try:
            return await self.local.call(step, state_text, ctx, time_limit)
        finally:
            self._busy_here -= 1
            if self._waiting:
                self._room_here.set()

    def _goes_out(self, step: StepRef) -> bool:
        if self.servers == 0 or not jobs.servable(step):
            return False
        return self._busy_here >= self._share()

    def _share(self) -> int:
        """How many steps at once this daemon runs in its own workers before it offers."""
        if self._keep_here is not None:
            return self._keep_here
        return max(1, self.local.settings.max // (self.servers + 1))

    async def _offer(
        self, step: StepRef, state_text: str, ctx: StepContext | None, time_limit: float | None
    ) -> Reply:
        offer = StepOffer(
            run_id=ctx.run_id if ctx is not None else "",
            digest=str(step.load["digest"]),
            request=jobs.request_of(step, ctx, time_limit),
            state=state_text,
        )
        offered = _Offered(offer, asyncio.get_running_loop().create_future())
        self._to_offer.append(offered)
        self._offering.set()
        try:
            return await offered.reply
        except asyncio.CancelledError:
            self._give_up(offered)
            raise

    def _give_up(self, offered: _Offered) -> None:
        """Withdraw a step no one here waits for any more (its reply is not needed)."""
        if offered.job_id is None:
            return  # not offered yet (dropped from the queue), or in flight (`_offer_next`)
        if self._pop(offered.job_id) is not None:
            self._to_forget.append(offered.job_id)

    async def run(self) -> None:
        """Offer steps and take their replies, until cancelled (the runtime's task)."""
        try:
            await self._connect()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._offer_forever(), name="offer-steps")
                tasks.create_task(self._take_forever(), name="step-replies")
        finally:
            self.servers = 0  # from now on every step runs here, those offered or queued too
            queued, self._to_offer = self._to_offer, []
            self._settle_here(queued)
            self._run_here(list(self._waiting))
            await self._jobs.close()

    async def _connect(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._jobs.open()
                identity = self._identity()
                if identity is not None:  # steps offered by a daemon this one took over
                    await self._jobs.clear(daemon_id=identity.daemon_id)
                self._count(await self._jobs.servers(now=self._clock.now_us()))
                return
            except JournalError as exc:
                await self._back_off(backoff, exc)

    async def _back_off(self, backoff: Backoff, exc: JournalError) -> None:
        if backoff.failures == 0:
            _log.warning("steps offered to standbys: %s; trying again", exc)
        await self._jobs.close()
        await backoff.pause()

    async def _offer_forever(self) -> None:
        while True:
            await self._offering.wait()
            self._offering.clear()
            await self._offer_next()

    async def _offer_next(self) -> None:
        batch, self._to_offer = self._to_offer, []
        batch = [offered for offered in batch if not offered.reply.done()]
        identity = self._identity()
        if not batch or identity is None:
            self._settle_here(batch)
            return
        try:
            ids = await self._jobs.offer(
                [offered.offer for offered in batch],
                daemon_id=identity.daemon_id,
                epoch=identity.epoch,
                now=self._clock.now_us(),
            )
        except (JournalError, ValueError) as exc:  # ValueError: text the journal cannot keep
            self._unsure = True  # the offer may have committed unheard
            _log.warning("could not offer %d steps (%s): they run here", len(batch), exc)
            self._settle_here(batch)
            return
        except asyncio.CancelledError:  # the loop stops: they run here, as those waiting do
            self._settle_here(batch)
            raise
        self.offered += len(ids)
        for offered, job_id in zip(batch, ids, strict=True):
            offered.job_id = job_id
            if offered.reply.done():  # given up while it was being offered
                self._to_forget.append(job_id)
            else:
                self._waiting[job_id] = offered.reply

    def _settle_here(self, batch: list[_Offered]) -> None:
        for offered in batch:
            if not offered.reply.done():
                offered.reply.set_result(None)

    async def _take_forever(self) -> None:
        backoff, looked = Backoff(), time.monotonic()
        while True:
            try:
                await news_or(self._room_here, self._jobs, NEWS_WAIT)
                if self._unsure:
                    await self._reconcile()
                await self._take_replies()
                await self._take_back(self._share() - self._busy_here)
                if time.monotonic() - looked >= LOOK_EVERY:
                    looked = time.monotonic()
                    await self._look_after_standbys()
                backoff.reset()
            except JournalError as exc:
                self._unsure = True  # a reply taken or a step taken back may be unheard
                await self._back_off(backoff, exc)
                await self._reconnect()

    async def _reconnect(self) -> None:
        try:
            await self._jobs.open()
        except JournalError:
            return  # the next turn backs off again

    async def _reconcile(self) -> None:
        """After a lost connection: run here the steps whose rows went unheard, drop strays.

        A reply taken (or a step taken back) whose answer was lost left its step waiting
        for good: it runs here (again, maybe: steps are at-least-once). An offer that
        committed unheard left jobs no one waits for: they are deleted.
        """
        identity = self._identity()
        if identity is None:
            return
        gone = await self._jobs.missing(list(self._waiting))
        self._run_here(sorted(gone))
        before = self._clock.now_us() - STRAY_AGE_US
        await self._jobs.forget_strays(
            daemon_id=identity.daemon_id, keep=list(self._waiting), before=before
        )
        self._unsure = False

    async def _take_replies(self) -> None:
        if self._to_forget:
            forgotten, self._to_forget = self._to_forget, []
            try:
                await self._jobs.forget(forgotten)
            except JournalError:
                self._to_forget.extend(forgotten)
                raise
        if not self._waiting:
            return
        for reply in await self._jobs.take_replies(list(self._waiting)):
            waiter = self._pop(reply.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply.reply)

    async def _look_after_standbys(self) -> None:
        now = self._clock.now_us()
        self._count(await self._jobs.servers(now=now))
        identity = self._identity()
        if identity is None or not self._waiting:
            return
        await self._jobs.requeue_abandoned(
            daemon_id=identity.daemon_id, now=now, max_attempts=MAX_ATTEMPTS
        )
        if self.servers == 0:  # no one left to run them: they run here
            back = list(self._waiting)
            await self._jobs.forget(back)
            self._run_here(back)

    async def _take_back(self, room: int) -> None:
        """Run here the first steps offered that no standby claimed yet, `room` at most.

        Steps are offered as they come, past this daemon's share: once its own workers
        are free again, the steps still waiting in the journal are better run here.
        """
        if room > 0 and self._waiting:
            back = await self._jobs.take_back(list(self._waiting), room)
            self.taken_back += len(back)
            self._run_here(back)

    def _count(self, servers: int) -> None:
        if servers != self.servers:
            _log.info("isolated steps: %d daemons standing by can run them", servers)
        self.servers = servers

    def _run_here(self, ids: list[int]) -> None:
        for job_id in ids:
            waiter = self._pop(job_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _pop(self, job_id: int) -> asyncio.Future[Reply] | None:
        return self._waiting.pop(job_id, None)

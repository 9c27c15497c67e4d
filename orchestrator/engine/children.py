"""Child runs: joins that wait for runs to end, and a parent's abort reaching its children.

A step starts children with ``ctx.start`` (an outbox: invoke commands committed with its
checkpoint, which the inbox applies once) and parks on ``ctx.join``: a wait with no
event, which holds the ids of the runs it waits for. Here each join counts the runs it
still waits for: when parked (or found parked at start-up) it reads their statuses once
from the journal, after a flush, so a run that ended before is counted; every run end
after that is told here in its own batch (`ended`). When the count reaches zero the
joining run is woken with each run's outcome read back from the journal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..define.waits import Wait
from ..errors import OrchestratorError
from ..journal import JournalQueries, JournalWriter, RunOutcome
from ..records import FINAL_STATUSES, RunCode, RunStatus
from ..state import StateEncodingError, decode_state, encode_state
from .parking import Parking

Background = Callable[[Coroutine[Any, Any, None], str], None]


class Children:
    """The joins of parked runs, by the runs they wait for; aborts passed on to children."""

    def __init__(
        self,
        writer: JournalWriter,
        reader: JournalQueries,
        parking: Parking,
        background: Background,
        abort: Callable[[str], Awaitable[None]],
    ) -> None:
        self._writer, self._reader, self._parking = writer, reader, parking
        self._background, self._abort = background, abort
        # Invariant: a join's wait id -> the runs it waits for that may not be final yet;
        # absent once the join is complete (or was never watched here).
        self._remaining: dict[int, set[str]] = {}
        # A run id -> the joins that wait for it (entries of ended runs may linger).
        self._watching: dict[str, list[Wait]] = {}

    def watch(self, wait: Wait) -> None:
        """A run parked on the join `wait`: count its runs, and wake it once all are final."""
        if wait.joins is None or wait.id in self._remaining:
            return
        self._remaining[wait.id] = set(wait.joins)
        for run_id in wait.joins:
            self._watching.setdefault(run_id, []).append(wait)
        self._background(self._check(wait), f"join-{wait.id}")

    def ended(self, run_id: str, status: RunStatus) -> None:
        """A run ended (called in its end's batch, never awaits)."""
        for wait in self._watching.pop(run_id, ()):
            self._count(wait, run_id)
        if status == RunStatus.ABORTED:
            self._background(self._abort_children(run_id), f"abort-children-{run_id}")

    def _count(self, wait: Wait, run_id: str) -> None:
        remaining = self._remaining.get(wait.id)
        if remaining is None:
            return
        remaining.discard(run_id)
        if not remaining:
            del self._remaining[wait.id]
            self._background(self._complete(wait), f"joined-{wait.id}")

    async def _check(self, wait: Wait) -> None:
        """The runs already final when the join began (their ends committed before)."""
        assert wait.joins is not None
        await self._writer.flush()
        # Read first: an invoke's run row and its done mark commit together, so a run
        # neither pending here nor in the outcomes read after will never exist.
        coming = await self._reader.pending_invokes()
        outcomes = await self._reader.outcomes(wait.joins)
        remaining = self._remaining.get(wait.id)
        if remaining is None:
            return
        for outcome in outcomes.values():
            if outcome.status in FINAL_STATUSES and outcome.run_id in remaining:
                self._count(wait, outcome.run_id)
        for run_id in set(wait.joins) - outcomes.keys() - coming:  # a join never waits for it
            if run_id in remaining:
                self._count(wait, run_id)
        if not wait.joins and wait.id in self._remaining:  # a join of no runs
            del self._remaining[wait.id]
            await self._complete(wait)

    async def _complete(self, wait: Wait) -> None:
        """Every run of the join is final: wake the joining run with their outcomes."""
        assert wait.joins is not None
        await self._writer.flush()  # the last run's end, and its state, are committed
        outcomes = await self._reader.outcomes(wait.joins)
        parked = self._parking.paused.get(wait.run_id)
        if parked is None or parked.wait is not wait:
            return  # timed out, aborted or resumed meanwhile
        results = [_result(run_id, outcomes.get(run_id)) for run_id in wait.joins]
        failed = sum(1 for result in results if result["status"] != RunStatus.COMPLETED)
        patch = {wait.into: results} if wait.into else {}
        reason = f"joined {len(results)} run(s): {len(results) - failed} completed"
        if failed:
            reason += f", {failed} not"
        extra = {"joined": len(results), "failed": failed}
        try:
            encode_state({**decode_state(parked.state_text), **patch})
        except StateEncodingError as exc:
            message = f"the join's results do not fit in the run's state: {exc}"
            with self._writer.together():  # the end and its system event: one batch
                writes = self._parking.fail_parked(parked, message, RunCode.INVALID_STATE)
                self._writer.submit(writes, urgent=True)
            return
        writes = self._parking.wake(parked, patch, reason, extra=extra, show_patch=False)
        self._writer.submit(writes, urgent=True)

    async def _abort_children(self, parent: str) -> None:
        """Abort the unfinished children of an aborted run."""
        await self._writer.flush()
        for child in await self._reader.children(parent):
            # Final already, or its invoke is not applied yet (then it starts aborted).
            with contextlib.suppress(OrchestratorError):
                await self._abort(child)


def _result(run_id: str, outcome: RunOutcome | None) -> dict[str, Any]:
    if outcome is None:  # never started (an unknown id, a key another run holds), or pruned
        return {
            "run_id": run_id,
            "status": None,
            "state": None,
            "error": f"no run {run_id} in the journal: it was never started, or was pruned",
            "error_code": "RUN_NOT_FOUND",
        }
    return outcome.to_json()

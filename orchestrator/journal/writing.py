"""What every backend's group-commit writer shares: its status, its retry pacing, futures.

`sqlite.writer.GroupCommitWriter` and `postgres.writer.PostgresWriter` batch and commit in
their own ways; what they report (`JournalWriter.backlog`, `failure`, `degraded`,
`lease_fresh`) and how they pace retries and log a degradation is the same, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..errors import JournalError
from .liveness import STALE_AFTER_US
from .ops import Op, Stmt
from .records import WriterIdentity

LAZY_FLUSH_SECONDS = 0.005
# A failing batch is tried again after RETRY_FIRST seconds, doubling up to RETRY_MAX.
RETRY_FIRST = 0.05
RETRY_MAX = 5.0
# How long `close` keeps retrying a failing batch before giving it up (and failing).
CLOSE_PATIENCE = 5.0
_log = logging.getLogger("orchestrator.journal")


class Refused(JournalError):
    """The journal refused one caller's ops (a constraint, a value it cannot hold).

    The journal itself works: the batch's other callers are committed without them
    (`Callers.each`), and only this caller's future fails.
    """


# What became of each of the first callers of a batch: None committed, else refused.
Outcomes = Sequence[BaseException | None]


class Together:
    """`JournalWriter.together`: every `enqueue` inside the block is one caller.

    Its ops join one batch and commit or fail as one. Reentrant. On SQLite the block also
    holds the writer's lock (the writer thread cannot take the batch in the middle); on
    PostgreSQL the writer is a task of the same event loop, which cannot take it while a
    block without an await runs. A class, not a generator: a run passes here twice.
    """

    __slots__ = ("_lock", "caller", "depth")

    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock
        self.depth = 0
        # The block's caller (its number in its batch's `Callers`), once it enqueued.
        self.caller: int | None = None

    def __enter__(self) -> Together:
        if self._lock is not None:
            self._lock.acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if not self.depth:
            self.caller = None
        if self._lock is not None:
            self._lock.release()


class Callers:
    """The callers of one batch: where each one's ops start in it, and each one's future.

    Each `enqueue` call is a caller, or each `together` block: a batch that fails for one
    caller's ops (`Refused`) is committed again caller by caller (`each`), so only that
    caller's future fails. A caller that awaits nothing (`JournalWriter.submit`) has no
    future (None): refused, its ops are left out all the same, and the refusal is logged.
    """

    __slots__ = ("futures", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.futures: list[asyncio.Future[None] | None] = []

    def caller(self, start: int, together: Together, wanted: bool) -> asyncio.Future[None] | None:
        """The future of a caller whose ops start at `start` (None: not `wanted`).

        Inside a `together` block, its first call makes the block's caller; later ones
        are the same caller (given a future once one of them wants it).
        """
        n = together.caller
        if n is not None:
            future = self.futures[n]
            if future is None and wanted:
                future = self.futures[n] = asyncio.get_running_loop().create_future()
            return future
        future = asyncio.get_running_loop().create_future() if wanted else None
        self.starts.append(start)
        self.futures.append(future)
        if together.depth:
            together.caller = len(self.futures) - 1
        return future

    def join(
        self, pending: list[Op], ops: Iterable[Op], together: Together, *, wanted: bool = True
    ) -> asyncio.Future[None] | None:
        """Append `ops` to `pending` as one caller's (the `together` block's, inside one)."""
        future = self.caller(len(pending), together, wanted)
        pending.extend(ops)
        return future

    def each(self, ops: list[Op]) -> Iterator[list[Op]]:
        """Each caller's ops in `ops` (the batch they were added to), in order."""
        ends = [*self.starts[1:], len(ops)]
        for start, end in zip(self.starts, ends, strict=True):
            yield ops[start:end]

    def settle(self, error: BaseException | None, outcomes: Outcomes = ()) -> None:
        """Settle each caller's future: the first ones with `outcomes`, the others `error`."""
        for n, future in enumerate(self.futures):
            if future is not None:
                resolve(future, outcomes[n] if n < len(outcomes) else error)


# A batch as the SQLite writer keeps it: its ops' parameter rows by statement, each list in
# the order they were enqueued (not the ops: an op is a tuple holding an enum member, which
# the garbage collector tracks for as long as it waits; its parameters alone it stops tracking).
Rows = dict[Stmt, list[tuple[Any, ...]]]


class CallersByStatement(Callers):
    """`Callers` of a batch kept as `Rows`: each op's statement in order, where each caller's start.

    One flat list for the batch, not a mark per caller: a caller costs an int and a list
    slot; which rows are whose is worked out only for a refused batch (`each_rows`).
    """

    __slots__ = ("kinds",)

    def __init__(self) -> None:
        super().__init__()
        # The statement of every op of the batch, in the order they were enqueued.
        self.kinds: list[Stmt] = []

    def join_rows(
        self, rows: Rows, ops: Iterable[Op], together: Together, *, wanted: bool = True
    ) -> asyncio.Future[None] | None:
        """Add `ops`' parameter rows to `rows` as one caller's; its future (if `wanted`)."""
        kinds = self.kinds
        future = self.caller(len(kinds), together, wanted)
        for stmt, params in ops:
            same = rows.get(stmt)
            if same is None:
                rows[stmt] = [params]
            else:
                same.append(params)
            kinds.append(stmt)
        return future

    def each_kinds(self) -> Iterator[list[Stmt]]:
        """Each caller's statements (`kinds`), in the order of `each_rows`."""
        kinds = self.kinds
        ends = [*self.starts[1:], len(kinds)]
        for start, end in zip(self.starts, ends, strict=True):
            yield kinds[start:end]

    def each_rows(self, rows: Rows) -> Iterator[Rows]:
        """Each caller's rows in `rows` (the batch they were added to), in order."""
        kinds = self.kinds
        taken: dict[Stmt, int] = {}
        ends = [*self.starts[1:], len(kinds)]
        for start, end in zip(self.starts, ends, strict=True):
            mine: Rows = {}
            for stmt in kinds[start:end]:
                first = taken.get(stmt, 0)
                taken[stmt] = first + 1
                part = mine.get(stmt)
                if part is None:
                    mine[stmt] = [rows[stmt][first]]
                else:
                    part.append(rows[stmt][first])
            yield mine


async def run_until_done(done: asyncio.Future[None], request_close: Callable[[], None]) -> None:
    """Wait for a writer's thread or task (`done`); cancelled, close it and wait it out first.

    The writer ends its batch in flight before it stops: cancelling it outright could
    leave a commit whose caller never hears how it went.
    """
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        request_close()
        with contextlib.suppress(BaseException):
            await done
        raise


def outcome(error: JournalError | None, outcomes: list[JournalError | None]) -> JournalError | None:
    """Add what committing one caller's ops gave to `outcomes`; the error that stops the writer.

    A caller refused (`Refused`) is logged: its writes may have been made by no one waiting.
    """
    if error is not None and not isinstance(error, Refused):
        return error
    if error is not None:
        _log.error("%s; the batch's other writes are committed without it", error)
    outcomes.append(error)
    return None


class WriterStatus:
    """The status half of a `JournalWriter`: what is pending, why it stopped or degrades."""

    def __init__(self) -> None:
        self._pending: list[Op] = []
        self._failure: JournalError | None = None
        # Why writes fail now (None while they succeed), and since when (monotonic).
        self._degraded: str | None = None
        self._degraded_at = 0.0
        # Monotonic time of the last commit that refreshed the lease (or heartbeat).
        self._renewed_at = time.monotonic()

    @property
    def backlog(self) -> int:
        """Ops waiting for the next batch."""
        return len(self._pending)

    @property
    def failure(self) -> JournalError | None:
        """Why the writer stopped, if it did."""
        return self._failure

    @property
    def degraded(self) -> str | None:
        """Why writes are failing now (they are being retried), or None while they succeed."""
        return self._degraded

    def enqueue(self, ops: Iterable[Op], *, urgent: bool = False) -> asyncio.Future[None]:
        """Add ops to the next batch; the future resolves once that batch has committed.

        Call on the event loop. Without `urgent`, the batch commits within
        `LAZY_FLUSH_SECONDS` (or sooner, with the next urgent write).
        """
        future = self._join(ops, urgent, wanted=True)
        assert future is not None  # `wanted` makes one
        return future

    def submit(self, ops: Iterable[Op], *, urgent: bool = False) -> None:
        """`enqueue` with no one to tell how it went: no future (a refusal is logged)."""
        self._join(ops, urgent, wanted=False)

    def _join(
        self, ops: Iterable[Op], urgent: bool, *, wanted: bool
    ) -> asyncio.Future[None] | None:
        """Add `ops` to the next batch as one caller; its future if `wanted` (each writer's)."""
        raise NotImplementedError

    @property
    def identity(self) -> WriterIdentity | None:
        """None: a journal only one daemon runs (the PostgreSQL writer says who it is)."""
        return None

    def lease_fresh(self) -> bool:
        """Whether the lease was refreshed recently enough that no one can have taken it."""
        if self._failure is not None:
            return False
        return time.monotonic() - self._renewed_at < STALE_AFTER_US / 1_000_000

    def _degrade(self, reason: str) -> None:
        if self._degraded is None:
            self._degraded_at = time.monotonic()
        if reason != self._degraded:
            _log.error("journal writes failing: %s; retrying", reason)
        self._degraded = reason

    def _recover(self) -> None:
        if self._degraded is None:
            return
        self._degraded = None
        _log.warning("journal writes recovered after %.1f s", time.monotonic() - self._degraded_at)


def resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Settle a batch's future (once: a settled one stays as it is)."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # a waiter may be gone; the failure is kept in `failure`

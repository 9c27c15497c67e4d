"""An in-memory `JournalWriter` that records what the engine writes: the test double.

No file, no thread, no lease. Each batch of ops is kept, in commit order, so a unit test of
admission or parking can look at exactly what was written and in which batches::

    journal = RecordingJournal()
    parking = Parking(writer=journal, ...)
    ...
    assert journal.ops_of(Stmt.SET_WAIT) == [(wait_id, ...)]

By default each `enqueue` commits at once (inside `together`, when the block ends) and
its future is already resolved. With ``auto_commit=False`` ops wait in `pending` until the
test calls `commit`, to see what the engine does while a write is in flight. `fail_next`
makes the next commit fail, as a full disk or a lost lease would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import JournalError
from .ops import Op, Stmt
from .records import Opened, WriterIdentity

if TYPE_CHECKING:
    from .protocol import JournalWriter

READY_TOKEN = "recording"  # the parameter of the MARK_READY op `mark_ready` records


class RecordingJournal:
    """A `JournalWriter` that keeps every committed batch in memory.

    Args:
        auto_commit: Commit each batch as soon as it is complete (an `enqueue`, or a
            `together` block); if False, only `commit` commits.
        max_run_row: What `open` reports as the highest run row already in the journal.

    Attributes:
        batches: The ops of each committed batch, in commit order.
        opened: Whether `open` was called.
        closed: Whether `close` was called (nothing can be enqueued after it).
    """

    def __init__(self, *, auto_commit: bool = True, max_run_row: int = 0) -> None:
        self.batches: list[list[Op]] = []
        self.opened = False
        self.closed = False
        self._auto = auto_commit
        self._max_run_row = max_run_row
        # Invariant: `_batch` is the future of the ops in `_pending`, None when there are none.
        self._pending: list[Op] = []
        self._batch: asyncio.Future[None] | None = None
        self._depth = 0  # nesting of `together` blocks
        self._failure: JournalError | None = None
        self._fail_next: JournalError | None = None
        self._stopped = asyncio.Event()

    # -- what a test looks at --------------------------------------------------------------

    @property
    def ops(self) -> list[Op]:
        """Every committed op, in commit order."""
        return [op for batch in self.batches for op in batch]

    @property
    def pending(self) -> list[Op]:
        """Ops enqueued and not committed yet."""
        return list(self._pending)

    def ops_of(self, stmt: Stmt) -> list[tuple[Any, ...]]:
        """The parameters of each committed op of `stmt`, in commit order."""
        return [params for key, params in self.ops if key is stmt]

    def fail_next(self, error: JournalError | None = None) -> None:
        """Make the next commit fail with `error`; the writer then stops, as the real one does."""
        self._fail_next = error or JournalError("simulated journal failure")

    def commit(self) -> None:
        """Commit what is pending as one batch (with ``auto_commit``, nothing is pending)."""
        ops, batch = self._pending, self._batch
        self._pending, self._batch = [], None
        if batch is None:
            return
        if self._fail_next is not None:
            self._failure, self._fail_next = self._fail_next, None
            batch.set_exception(self._failure)
            batch.exception()  # a waiter may be gone; the failure is kept in `failure`
            return
        self.batches.append(ops)
        batch.set_result(None)

    # -- the JournalWriter protocol ---------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Ops waiting for the next commit."""
        return len(self._pending)

    @property
    def committed(self) -> bool:
        """Whether nothing waits for a commit."""
        return self._batch is None

    @property
    def failure(self) -> JournalError | None:
        """The error of the failed commit, once one failed."""
        return self._failure

    @property
    def degraded(self) -> str | None:
        """Always None: the double's commits fail for good or not at all."""
        return None

    @property
    def identity(self) -> WriterIdentity | None:
        """None: no other daemon shares an in-memory journal."""
        return None

    def lease_fresh(self) -> bool:
        """True until a commit has failed: the double holds its lease for ever."""
        return self._failure is None

    async def open(self, *, standby: bool = False) -> Opened:
        """Nothing to connect, no one to wait for: report `max_run_row`."""
        self.opened = True
        return Opened(max_run_row=self._max_run_row)

    async def run(self) -> None:
        """Wait until `close`, as the real writer's task does."""
        await self._stopped.wait()

    async def close(self) -> None:
        """Commit what is pending, then refuse further writes."""
        self.commit()
        self.closed = True
        self._stopped.set()

    def enqueue(self, ops: Iterable[Op], *, urgent: bool = False) -> asyncio.Future[None]:
        """Add ops to the pending batch; its future resolves when the batch commits."""
        if self._failure is not None:
            raise self._failure
        if self.closed:
            raise JournalError("the recording journal is closed")
        self._pending.extend(ops)
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
        if self._auto and self._depth == 0:
            self.commit()
        return batch

    def submit(self, ops: Iterable[Op], *, urgent: bool = False) -> None:
        """`enqueue` with no one to tell how it went."""
        self.enqueue(ops, urgent=urgent)

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Every `enqueue` inside joins one batch, committed (with auto_commit) at the end."""
        self._depth += 1
        try:
            yield
        finally:  # what was enqueued stays enqueued, as with the real writer
            self._depth -= 1
            if self._auto and self._depth == 0:
                self.commit()

    async def write(self, ops: Iterable[Op]) -> None:
        """Write ops and return once they are committed."""
        await asyncio.shield(self.enqueue(ops, urgent=True))

    async def flush(self) -> None:
        """Return once everything enqueued so far has committed."""
        if self._batch is not None:
            await asyncio.shield(self._batch)

    async def mark_ready(self) -> None:
        """Record the MARK_READY op, as the real writer writes it."""
        await self.write([(Stmt.MARK_READY, (READY_TOKEN,))])


if TYPE_CHECKING:  # mypy checks the double against the protocol it stands in for
    _IS_A_WRITER: type[JournalWriter] = RecordingJournal

"""The single writer: one connection, one thread, many runs' writes in each commit.

Callers `enqueue` ops and get the future of the batch they joined; the writer loop takes
everything pending, applies it in one ``BEGIN IMMEDIATE`` transaction (one thread hop, one
fsync) and resolves that future only after COMMIT returned. While a batch commits, the next
one fills up: that is the group commit. Every batch also refreshes the lease and fails if
another process has taken it over, so a writer that lost its lease can never write.

It must not: run SQL on any other thread, or time out a database call (an orphan BEGIN).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..clock import Clock
from ..errors import JournalError, JournalLocked
from . import lease
from .connection import Synchronous, connect_writer, rollback_if_open
from .faults import AFTER_COMMIT, BEFORE_COMMIT, FaultPoints, SimulatedCrash
from .ops import Op, Stmt, grouped
from .schema import migrate


@dataclass(frozen=True)
class Opened:
    """What the writer learned when it opened the journal under its lease."""

    max_run_row: int


class GroupCommitWriter:
    """Owns the journal's write connection and its lease."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        faults: FaultPoints | None = None,
    ) -> None:
        self.path = path
        self._synchronous: Synchronous = synchronous
        self._faults = faults
        self._wall = Clock()
        self._token = uuid.uuid4().hex
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[Op] = []
        self._batch: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._wakeup = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._closing = False
        self._failure: JournalError | None = None
        self._crashed = False
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> Opened:
        """Connect, migrate, and take the lease; raises `JournalLocked` if it is held."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._open_sync)

    def _open_sync(self) -> Opened:
        conn = connect_writer(self.path, self._synchronous)
        try:
            migrate(conn, self.path)
            conn.execute("BEGIN IMMEDIATE")
            try:
                lease.acquire(conn, self.path, self._token, self._wall.now_us())
                max_row = conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0]
                conn.execute("COMMIT")
            finally:
                rollback_if_open(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return Opened(max_run_row=int(max_row))

    async def close(self) -> None:
        """Commit what is pending, release the lease, and close the connection."""
        self._closing = True
        self._wakeup.set()
        if self._running:
            await self._done.wait()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_sync)
        self._thread.shutdown(wait=True)

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self._crashed:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("BEGIN IMMEDIATE")
                    lease.release(conn, self._token)
                    conn.execute("COMMIT")
                rollback_if_open(conn)
        finally:
            lease.LIVE_TOKENS.discard(self._token)
            conn.close()

    # -- writing ---------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Ops waiting for the next batch."""
        return len(self._pending)

    @property
    def failure(self) -> JournalError | None:
        """Why the writer stopped, if it did."""
        return self._failure

    def enqueue(self, ops: Iterable[Op]) -> asyncio.Future[None]:
        """Add ops to the next batch; the future resolves once that batch has committed."""
        if self._failure is not None:
            raise self._failure
        if self._closing and self._batch is None:
            raise JournalError("the journal is closed")
        self._pending.extend(ops)
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            self._wakeup.set()
        return self._batch

    async def write(self, ops: Iterable[Op]) -> None:
        """Write ops and return once they are committed."""
        await self.enqueue(ops)

    async def flush(self) -> None:
        """Return once everything enqueued so far has committed (at once if nothing is)."""
        for batch in (self._inflight, self._batch):
            if batch is not None:
                await asyncio.shield(batch)

    async def mark_ready(self) -> None:
        """Record in the lease that recovery and loading are done."""
        await self.write([(Stmt.MARK_READY, (self._token,))])

    async def run(self) -> None:
        """The batch loop; returns after `close` once everything pending has committed."""
        self._running = True
        try:
            while True:
                await self._wakeup.wait()
                # One turn of the loop lets tasks that are ready now join this batch (a run
                # that just started usually finishes its quick steps in that turn).
                await asyncio.sleep(0)
                self._wakeup.clear()
                if self._batch is None:
                    if self._closing:
                        return
                    continue
                ops, batch = self._pending, self._batch
                self._pending, self._batch, self._inflight = [], None, batch
                try:
                    if not await self._commit(ops, batch):
                        return
                finally:
                    self._inflight = None
        finally:
            self._running = False
            self._done.set()

    async def _commit(self, ops: list[Op], batch: asyncio.Future[None]) -> bool:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._thread, self._apply, ops)
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            # Let the commit in flight land so its waiters learn the truth, then stop.
            with contextlib.suppress(BaseException):
                await work
            self._settle(batch, work)
            self._stop(JournalError("the journal writer was stopped"))
            raise
        except SimulatedCrash as exc:
            self._crashed = True
            self._stop(JournalError(f"simulated crash at {exc}"), batch)
            return False
        except JournalError as exc:
            self._stop(exc, batch)
            return False
        self.commits += 1
        batch.set_result(None)
        return True

    def _settle(self, batch: asyncio.Future[None], work: asyncio.Future[None]) -> None:
        if batch.done():
            return
        if work.cancelled() or work.exception() is not None:
            batch.set_exception(JournalError("the journal writer stopped before committing"))
        else:
            batch.set_result(None)

    def _stop(self, failure: JournalError, *batches: asyncio.Future[None]) -> None:
        self._failure = failure
        pending, self._batch = self._batch, None
        self._pending = []
        for future in itertools.chain(batches, [pending] if pending else []):
            if not future.done():
                future.set_exception(failure)
                future.exception()  # a waiter may be gone; the failure is kept in `failure`

    def _apply(self, ops: list[Op]) -> None:
        conn = self._require_conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not lease.heartbeat(conn, self._token, self._wall.now_us()):
                raise JournalLocked(
                    f"journal {self.path}: another process took over the lease; "
                    "this runtime stops writing"
                )
            for stmt, rows in grouped(ops):
                conn.executemany(stmt.value, rows)
            self._fault(BEFORE_COMMIT)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback_if_open(conn)
            raise JournalError(f"journal {self.path}: write failed: {exc}") from exc
        except BaseException:
            rollback_if_open(conn)
            raise
        self._fault(AFTER_COMMIT)

    def _fault(self, point: str) -> None:
        if self._faults is not None:
            self._faults.hit(point)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError("the journal is not open")
        return self._conn

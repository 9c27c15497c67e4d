"""The single writer: one connection, one thread, many runs' writes in each commit.

Callers on the event loop `enqueue` ops and get a future of their own (or `submit` them
and get none: most writes are awaited by no one). The writer thread takes everything
pending, applies it in one ``BEGIN IMMEDIATE`` transaction (one fsync) and resolves the
futures only after COMMIT returned. While it commits, the next batch fills up, and the
event loop keeps running steps: that is the group commit.

Ops nobody waits for (checkpoints, log lines) are committed within `LAZY_FLUSH_SECONDS`;
a `write` or `flush` (someone waits: a run's end, an API call) wakes the thread at once.
Every batch also refreshes the lease and fails if another process has taken it over, so a
writer that lost its lease can never write.

A transient failure (a full disk, an I/O error, a lock held past the busy timeout) keeps
the batch: its futures stay pending, and the thread retries it with backoff, refreshing
the lease alone meanwhile where it can, and logging once as it degrades and once as it
recovers. A permanent one (a damaged file, a lost lease) stops the writer: `failure` says
why, and every waiting future gets it.

It must not: run SQL on any other thread, or time out a database call (an orphan BEGIN).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...clock import Clock
from ...errors import JournalCorrupt, JournalError, JournalLocked
from ...records import FINAL_STATUSES
from ..deltas import Deltas
from ..faults import AFTER_COMMIT, BEFORE_COMMIT, FaultPoints, SimulatedCrash, SimulatedDiskFull
from ..ops import Op, Stmt, in_order, untangled
from ..protocol import Synchronous
from ..records import Opened
from ..writing import (
    CLOSE_PATIENCE,
    LAZY_FLUSH_SECONDS,
    RETRY_FIRST,
    RETRY_MAX,
    CallersByStatement,
    Outcomes,
    Refused,
    Rows,
    Together,
    WriterStatus,
    outcome,
    resolve,
    run_until_done,
)
from . import lease
from .connection import (
    BUSY_TIMEOUT_MS,
    SQLITE_ERRORS,
    connect_writer,
    file_identity,
    is_corrupt,
    is_transient,
    rollback_if_open,
)
from .deltas import SNAPSHOT_SQL
from .schema import migrate
from .statements import BULK, SQL

# From this many rows of a statement in a batch, they run as one `BULK` statement.
BULK_ROWS = 16
# The rows of a `BULK` statement, as JSON (a NUL is kept out: see `execute_rows`).
_ROWS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# What one caller's ops, not the journal, cause: a constraint, a value SQLite cannot bind or
# hold (too large an int, too long a text).
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, OverflowError)


class _Transient(JournalError):
    """A write failed in a way that may pass; the batch is kept and tried again."""


class GroupCommitWriter(WriterStatus):
    """Owns the journal's write connection, its writer thread and its lease."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        faults: FaultPoints | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self._synchronous: Synchronous = synchronous
        self._faults = faults
        self._wall = Clock()
        self._token = uuid.uuid4().hex
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._wal: tuple[int, int] | None = None  # and of its -wal, if it has one
        # The path made absolute at open: a step or workflow file may change directory.
        self._absolute = path
        self._absolute_wal = _wal_of(path)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Invariant: the fields below are only touched with `_lock` held.
        # Reentrant, so `together` can hold it around several `enqueue` calls. Blocks hold
        # the lock itself: `Condition.__enter__` is a Python call, 7 per run.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._batch: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        # The batch being filled, as its ops' parameter rows by statement.
        self._rows: Rows = {}
        # The callers of the batch being filled, and of the one in flight.
        self._callers = CallersByStatement()
        self._inflight_callers = CallersByStatement()
        self._together = Together(self._lock)
        self._urgent = False
        self._closing = False
        self._crashed = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        # Set on close: wakes a retry's backoff sleep.
        self._wake = threading.Event()
        self._closing_at: float | None = None
        self.commits = 0
        # Each run's last snapshot, so its next checkpoints are written as patches.
        self._deltas = Deltas()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, *, standby: bool = False) -> Opened:
        """Connect, migrate, and take the lease; raises `JournalLocked` if it is held."""
        if standby:
            raise ValueError("a SQLite journal is run by one daemon: it has no standby")
        return await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> Opened:
        conn = connect_writer(self.path, self._synchronous)
        try:
            self._absolute = Path(os.path.abspath(self.path))
            self._absolute_wal = _wal_of(self._absolute)
            self._file = file_identity(self._absolute)
            self._migrate(conn)
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
        self._wal = file_identity(self._absolute_wal)  # it stays while a connection is open
        self._renewed_at = time.monotonic()
        return Opened(max_run_row=int(max_row))

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            migrate(conn, self.path)
        except sqlite3.OperationalError as exc:
            if not is_transient(exc):
                raise
            raise JournalLocked(
                f"journal {self.path} stayed locked by another process writing to it for "
                f"{BUSY_TIMEOUT_MS // 1000} s (a daemon frozen inside a write, or a disk that "
                "does not answer): continue or stop that process, then start again"
            ) from None

    async def run(self) -> None:
        """Run the writer thread until `close`; the caller's task owns it."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(done,), name="journal-writer", daemon=True
        )
        self._thread.start()
        await run_until_done(done, self._request_close)

    async def close(self) -> None:
        """Commit what is pending, release the lease, and close the connection."""
        self._request_close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        else:
            await asyncio.to_thread(self._close_connection)

    def _request_close(self) -> None:
        with self._lock:
            self._closing = True
            if self._closing_at is None:
                self._closing_at = time.monotonic()
            self._wake.set()
            self._cond.notify()

    # -- writing ---------------------------------------------------------------------------

    @property
    def committed(self) -> bool:
        """Whether everything enqueued so far has committed (or failed): nothing in flight."""
        with self._lock:
            return self._batch is None and self._inflight is None

    @property
    def backlog(self) -> int:
        """Ops waiting for the next batch."""
        return len(self._callers.kinds)

    def _join(
        self, ops: Iterable[Op], urgent: bool, *, wanted: bool
    ) -> asyncio.Future[None] | None:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise JournalError(f"journal {self.path} is closed")
            future = self._callers.join_rows(self._rows, ops, self._together, wanted=wanted)
            if self._batch is None:
                self._batch = asyncio.get_running_loop().create_future()
                self._cond.notify()
            if urgent and not self._urgent:
                self._urgent = True
                self._cond.notify()
            return future

    def together(self) -> contextlib.AbstractContextManager[object]:
        """Every `enqueue` made inside joins the same batch (the writer thread waits).

        For writes that must commit atomically but are enqueued by different parts of
        the code: an event with the runs it starts, a schedule tick with its run. Never
        await inside: the writer thread is held back until the block ends (the block
        holds the writer's reentrant lock: `Together`). The block is one caller: its ops
        commit or fail as one.
        """
        return self._together

    async def write(self, ops: Iterable[Op]) -> None:
        """Write ops and return once they are committed."""
        await asyncio.shield(self.enqueue(ops, urgent=True))

    async def flush(self) -> None:
        """Return once everything enqueued so far has committed (at once if nothing is)."""
        with self._lock:
            # Batches commit in order, and a failure fails the pending batch with the one
            # in flight (`_settle`): the newest one settles last, so it is the one to await.
            newest = self._batch or self._inflight
            if self._batch is not None:
                self._urgent = True
                self._cond.notify()
        if newest is not None:
            await asyncio.shield(newest)

    async def mark_ready(self) -> None:
        """Record in the lease that recovery and loading are done."""
        await self.write([(Stmt.MARK_READY, (self._token,))])

    # -- the writer thread -----------------------------------------------------------------

    def _thread_main(self, done: asyncio.Future[None]) -> None:
        try:
            while self._commit_next():
                pass
        finally:
            with self._lock:
                self._stopped = True
                stranded = [f for f in (self._inflight, self._batch) if f is not None]
                callers = (self._inflight_callers, self._callers)
                self._inflight, self._batch, self._rows = None, None, {}
                self._inflight_callers, self._callers = CallersByStatement(), CallersByStatement()
                if stranded and self._failure is None:  # only on a bug: it is re-raised below
                    self._failure = JournalError("the journal writer stopped unexpectedly")
            # Queued after any `_settle` already sent, so a settled batch stays settled.
            for future in stranded:
                self._call_soon(resolve, future, JournalError("the journal writer stopped"))
            for stopped in callers:
                self._call_soon(stopped.settle, JournalError("the journal writer stopped"))
            self._close_connection()
            self._call_soon(resolve, done, None)

    def _commit_next(self) -> bool:
        """Commit one batch; False once the thread should stop."""
        ops, batch, callers, closing = self._take_batch()
        if batch is None:
            return not closing
        error = self._apply_retrying(untangled(ops, callers.kinds))
        outcomes: Outcomes = []
        if isinstance(error, Refused):
            error, outcomes = self._apply_each(ops, callers)
        self._call_soon(self._settle, batch, callers, error, outcomes)
        return error is None

    def _apply_each(
        self, ops: Rows, callers: CallersByStatement
    ) -> tuple[JournalError | None, Outcomes]:
        """Commit each caller's ops of a refused batch in a transaction of its own, in order.

        Only a caller whose own ops are refused fails; the others commit. Returns the error
        that stops the writer, if any, and the outcome of each caller tried before it.
        """
        outcomes: list[JournalError | None] = []
        for mine, kinds in zip(callers.each_rows(ops), callers.each_kinds(), strict=True):
            stop = outcome(self._apply_retrying(untangled(mine, kinds)), outcomes)
            if stop is not None:
                return stop, outcomes
        return None, outcomes

    def _apply_retrying(self, ops: Rows) -> JournalError | None:
        """Commit `ops`, retrying transient failures; the error that stops the writer, if any."""
        delay = RETRY_FIRST
        while True:
            began = time.monotonic()  # the lease's new heartbeat is no newer than this
            try:
                self._apply(ops)
            except SimulatedCrash as exc:
                self._crashed = True
                return JournalError(f"simulated crash at {exc}")
            except _Transient as exc:
                self._degrade(str(exc))
                if self._closing_at is not None and (
                    time.monotonic() - self._closing_at > CLOSE_PATIENCE
                ):
                    return JournalError(f"{exc}; closing with writes not committed")
                try:
                    self._heartbeat_alone()
                except JournalError as lost:
                    return lost
                self._wake.wait(delay)  # close wakes it once, to try again at once
                self._wake.clear()
                delay = min(delay * 2, RETRY_MAX)
                continue
            except JournalError as exc:
                return exc
            self.commits += 1
            self._renewed_at = began
            self._recover()
            return None

    def _heartbeat_alone(self) -> None:
        """Refresh the lease in a transaction of its own, if the journal takes that much.

        Raises:
            JournalLocked: Another process has taken the lease over.
        """
        conn = self._require_conn()
        began = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            renewed = lease.heartbeat(conn, self._token, self._wall.now_us(), self._degraded)
            if renewed:
                conn.execute("COMMIT")
        except SQLITE_ERRORS:
            _rollback_quietly(conn)
            return  # the lease may go stale; the next successful batch finds out
        _rollback_quietly(conn)
        if not renewed:
            raise self._lost()
        self._renewed_at = began

    def _lost(self) -> JournalLocked:
        return JournalLocked(
            f"journal {self.path}: another process took over the lease; this runtime stops writing"
        )

    def _take_batch(
        self,
    ) -> tuple[Rows, asyncio.Future[None] | None, CallersByStatement, bool]:
        with self._lock:
            deadline: float | None = None
            while not (self._urgent or self._closing):
                if self._batch is None:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                deadline = deadline or now + LAZY_FLUSH_SECONDS
                if now >= deadline:
                    break
                self._cond.wait(deadline - now)
            ops, batch, callers = self._rows, self._batch, self._callers
            self._rows, self._batch, self._inflight = {}, None, batch
            self._inflight_callers, self._callers = callers, CallersByStatement()
            self._urgent = False
            return ops, batch, callers, self._closing

    def _settle(
        self,
        batch: asyncio.Future[None],
        callers: CallersByStatement,
        error: BaseException | None,
        outcomes: Outcomes,
    ) -> None:
        with self._lock:
            if self._inflight is batch:
                self._inflight = None
                self._inflight_callers = CallersByStatement()
            if error is None:
                callers.settle(None, outcomes)
                resolve(batch, None)
                return
            failure = error if isinstance(error, JournalError) else JournalError(str(error))
            self._failure = failure
            waiting = [batch, *([self._batch] if self._batch is not None else [])]
            stopped = (callers, self._callers)
            self._rows, self._batch = {}, None
            self._callers = CallersByStatement()
        for caller in stopped:
            caller.settle(failure, outcomes if caller is callers else ())
        for future in waiting:
            resolve(future, failure)

    def _call_soon(self, callback: object, *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(callback, *args)  # type: ignore[arg-type]

    def _apply(self, ops: Rows) -> None:
        conn = self._require_conn()
        self._check_same_file()
        try:
            rollback_if_open(conn)  # a rollback that failed last time
            conn.execute("BEGIN IMMEDIATE")
            if not lease.heartbeat(conn, self._token, self._wall.now_us()):
                raise self._lost()
            for stmt, rows in in_order(ops):
                if stmt is Stmt.INSERT_CHECKPOINT:
                    rows, snapshots = self._deltas.encode(rows)
                    if snapshots:  # each call gives the GIL up, for nothing if empty
                        conn.executemany(SNAPSHOT_SQL, snapshots)
                elif stmt is Stmt.SET_STATUS:
                    self._deltas.forget([row[-1] for row in rows if row[0] in FINAL_STATUSES])
                execute_rows(conn, stmt, rows)
            self._fault(BEFORE_COMMIT)
            conn.execute("COMMIT")
        except SimulatedDiskFull as exc:
            self._deltas.discard()
            _rollback_quietly(conn)
            raise _Transient(f"journal {self.path}: write failed: {exc}") from exc
        except (*SQLITE_ERRORS, OverflowError) as exc:
            self._deltas.discard()
            _rollback_quietly(conn)
            raise _translate(self.path, exc) from exc
        except BaseException:
            self._deltas.discard()
            _rollback_quietly(conn)
            raise
        self._deltas.commit()
        self._fault(AFTER_COMMIT)

    def _check_same_file(self) -> None:
        """Raise if the journal's path no longer names the file this writer has open.

        Deleted or replaced under a running daemon (a restore, a stray ``rm``), the file
        it has open is one nobody else sees: commands and a second daemon would use the new
        one, and what this writer commits would be lost with the old one.

        Raises:
            JournalError: The file was deleted or replaced; the writer stops.
        """
        for path, opened in ((self._absolute, self._file), (self._absolute_wal, self._wal)):
            if opened is None:
                continue
            now = file_identity(path)
            if now != opened:
                what = "deleted" if now is None else "replaced by another file"
                name = "the file" if path == self._absolute else f"its file {path.name}"
                raise JournalError(
                    f"journal {self.path}: {name} was {what} while this runtime had it open; "
                    "this runtime stops writing; start it again once the journal is in place"
                )

    def _close_connection(self) -> None:
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

    def _fault(self, point: str) -> None:
        if self._faults is not None:
            self._faults.hit(point)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError("the journal is not open")
        return self._conn


def execute_rows(conn: sqlite3.Connection, stmt: Stmt, rows: list[tuple[Any, ...]]) -> None:
    """Run `stmt` over `rows`: many of them at once as its `BULK` statement, else row by row.

    ``executemany`` gives the GIL up and takes it back for every row; under a busy event
    loop each taking back waits up to the interpreter's switch interval (5 ms), so a batch
    of 1,000 runs took about 4x its time in wall clock. A bulk statement takes it back once.
    """
    bulk = BULK.get(stmt) if len(rows) >= BULK_ROWS else None
    if bulk is not None:
        try:
            text = _ROWS.encode(rows)
        except (TypeError, ValueError):  # not JSON (no such parameter is written today)
            text = None
        # SQLite's JSON functions end a string at an escaped NUL: such rows go one by one.
        if text is not None and "\\u0000" not in text:
            conn.execute(bulk, (text,))
            return
    conn.executemany(SQL[stmt], rows)


def _wal_of(path: Path) -> Path:
    return path.with_name(f"{path.name}-wal")


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    # A rollback that fails too (an I/O error) is tried again before the next BEGIN.
    with contextlib.suppress(sqlite3.Error):
        rollback_if_open(conn)


def _translate(path: Path, exc: Exception) -> JournalError:
    message = f"journal {path}: write failed: {exc}"
    if is_transient(exc):
        return _Transient(message)
    if is_corrupt(exc):
        return JournalCorrupt(message)
    if isinstance(exc, _REFUSED):
        return Refused(message)
    return JournalError(message)

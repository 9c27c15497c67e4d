r"""The runtime's writer on PostgreSQL: one connection, one task, many runs' writes per commit.

It behaves as the SQLite writer (`sqlite.writer.GroupCommitWriter`) does: callers on the
event loop `enqueue` ops and get the future of the batch they joined; one task takes
everything pending and commits it as **one transaction per batch**, resolving that future
only after COMMIT returned. The statements of a batch are sent pipelined (one round trip
for the batch, ``executemany`` per statement key in `Stmt` order), then one
``pg_notify`` tells readers a commit landed.

Every batch starts with ``SELECT epoch ... FROM daemons WHERE id = me FOR SHARE`` and
renews this daemon's heartbeat: a batch of a daemon whose row another daemon fenced (its
epoch moved, or ``fenced_at`` set) rolls back, whole, and the writer stops with
`JournalLocked` (docs/POSTGRES.md, "Epoch fencing"). The fencer's UPDATE waits for the
row's share lock, so a batch in flight either committed before the fence or sees it.

Failures, as on SQLite: a transient one (a serialization failure, a full disk) keeps the
batch and retries it with backoff; a lost connection reconnects with backoff for
`RECONNECT_PATIENCE` seconds, then the writer fails with `JournalUnreachable`. A batch
whose COMMIT was cut off may have landed: each batch writes a heartbeat no other batch
writes, so after reconnecting the writer reads it back to know, and never applies a batch
twice or acknowledges one that did not land. Anything else stops the writer: `failure`
says why, and every waiting future gets it.

Text: PostgreSQL's TEXT cannot hold a NUL character. JSON columns never carry one (the
encoder writes ``\u0000``); a batch refused for one in plain text (a step name, an event
type) is sent again with each NUL written as the four characters ``\x00``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...clock import Clock
from ...errors import JournalError, JournalLocked, JournalUnreachable
from ...records import FINAL_STATUSES
from .. import liveness as lease
from ..deltas import Deltas
from ..faults import AFTER_COMMIT, BEFORE_COMMIT, FaultPoints, SimulatedCrash, SimulatedDiskFull
from ..ops import Op, Stmt, grouped
from ..protocol import Synchronous
from ..records import Opened, WriterIdentity
from ..writing import (
    CLOSE_PATIENCE,
    LAZY_FLUSH_SECONDS,
    RETRY_FIRST,
    RETRY_MAX,
    Callers,
    Outcomes,
    Refused,
    Together,
    WriterStatus,
    outcome,
    resolve,
    run_until_done,
)
from . import schema
from .connection import (
    DAEMONS_LOCK,
    NOTIFY_CHANNEL,
    OFFERING_NAME,
    connect,
    denied,
    describe,
    load_psycopg,
    lost,
    reason,
    refused,
)
from .statements import SNAPSHOT_SQL, SQL

if TYPE_CHECKING:
    import psycopg

# How long a lost connection is tried again before the writer fails (`JournalUnreachable`).
RECONNECT_PATIENCE = 30.0
# A standby reads the daemons table this often (seconds) while another daemon is active.
STANDBY_POLL = 0.5
# Each writer's connection is named after its daemon's token, so that a daemon taking over
# can end the connections of the stale one: one frozen in the middle of a batch (SIGSTOP, a
# suspended VM) holds its row's share lock, which the fence would otherwise wait for.
APPLICATION_NAME = "orchestrator-writer-{token}"
# How long a registration waits for the daemons' row locks before it tries again.
REGISTER_LOCK_TIMEOUT = "10s"
_log = logging.getLogger("orchestrator.journal")

_HOLDERS = (
    "SELECT id, pid, host, started_at, heartbeat_at, ready, token, degraded FROM daemons"
    " WHERE fenced_at IS NULL AND stopped_at IS NULL ORDER BY id"
)
_LIVE = _HOLDERS + " FOR UPDATE"
# The server's clock, in microseconds since the epoch: every heartbeat is written and
# judged in it, so daemons on hosts whose clocks disagree still agree on who is stale.
_SERVER_NOW = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
_FENCE = (
    "UPDATE daemons SET epoch = epoch + 1, fenced_at = %s WHERE id = ANY(%s) AND fenced_at IS NULL"
)
# A fenced daemon's unfinished runs are free for another daemon to claim.
_RELEASE_RUNS = "UPDATE runs SET daemon = NULL WHERE daemon = ANY(%s)"
_REGISTER = (
    "INSERT INTO daemons (token, pid, host, started_at, heartbeat_at) VALUES (%s, %s, %s, %s, %s)"
    " RETURNING id, epoch"
)
# The first statement of every batch: the row this daemon writes under, share-locked.
_CHECK = "SELECT epoch, fenced_at FROM daemons WHERE id = %s FOR SHARE"
_BEAT = "UPDATE daemons SET heartbeat_at = %s, degraded = NULL WHERE id = %s"
_BEAT_ALONE = (
    "UPDATE daemons SET heartbeat_at = %s, degraded = %s"
    " WHERE id = %s AND epoch = %s AND fenced_at IS NULL"
)
_STOP = "UPDATE daemons SET stopped_at = %s WHERE id = %s AND epoch = %s AND fenced_at IS NULL"
_NOTIFY = "SELECT pg_notify(%s, '')"
# A standby's row, renewed at each look at the daemons table: what `workflows` shows.
_STANDING_BY = (
    "INSERT INTO standbys (token, pid, host, started_at, seen_at) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (token) DO UPDATE SET seen_at = EXCLUDED.seen_at"
)
# A fenced row stays (docs/POSTGRES.md, "A fence stays"): deleted, its standby woken again
# would write it anew, unfenced.
_NOT_STANDING_BY = "DELETE FROM standbys WHERE token = %s OR (seen_at < %s AND fenced_at IS NULL)"
_CUT_OFF = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()"
)
# SQLSTATE classes and codes that may pass: a batch failing so is kept and tried again.
_TRANSIENT_CLASSES = ("40", "53", "58")  # serialization/deadlock, resources, system I/O
_TRANSIENT_CODES = frozenset({"55P03", "57014"})  # lock not available, statement cancelled


class _Transient(JournalError):
    """A write failed in a way that may pass; the batch is kept and tried again."""


class _Lost(JournalError):
    """The connection broke; the batch is kept, the writer reconnects."""


class _HasNul(JournalError):
    """A parameter holds a NUL character, which PostgreSQL text cannot hold."""


class PostgresWriter(WriterStatus):
    """Owns the journal's write connection, its writer task and this daemon's row."""

    # Its connection's `application_name` (a daemon taking over ends a stale one's).
    NAME = APPLICATION_NAME

    def __init__(
        self,
        url: str,
        *,
        synchronous: Synchronous = "FULL",
        faults: FaultPoints | None = None,
    ) -> None:
        super().__init__()
        self.url = url  # may hold a password: `location` is what is shown
        self.location = describe(url)
        self._synchronous: Synchronous = synchronous
        self._faults = faults
        self._wall = Clock()
        self._token = uuid.uuid4().hex
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # This daemon's row in `daemons`, and the epoch it writes under.
        self.daemon_id = 0
        self._epoch = 0
        # The last heartbeat written: each batch writes a new one (see the module).
        self._beat = 0
        self._attempt_beat = 0
        self._server_ahead_us = 0  # the server's clock minus this host's (`_connect`)
        self._batch: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        # The callers of the batch being filled, and of the one in flight.
        self._callers = Callers()
        self._inflight_callers = Callers()
        self._together = Together()
        self._urgent = False
        self._closing = False
        self._closing_at: float | None = None
        self._crashed = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        # Set when a batch is enqueued or urgent, or on close: wakes the writer task.
        self._wake = asyncio.Event()
        # Set on close: cuts a retry's backoff short.
        self._close_requested = asyncio.Event()
        self.commits = 0
        self.reconnect_patience = RECONNECT_PATIENCE
        self._lost_at: float | None = None  # when the connection was lost (monotonic)
        self._deltas = Deltas()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, *, standby: bool = False) -> Opened:
        """Migrate, connect and register this daemon.

        Another live daemon's journal is refused with `JournalLocked`; with `standby`, it is
        waited for instead, and this daemon registers once that one stops or goes stale.
        """
        await schema.migrate(self.url)
        conn = await self._connect()
        try:
            if standby:
                conn, max_row = await self._stand_by(conn)
            else:
                max_row = await self._register(conn)
        except BaseException:
            await conn.close()
            raise
        lease.LIVE_TOKENS.add(self._token)
        self._conn = conn
        self._renewed_at = time.monotonic()
        return Opened(max_run_row=max_row)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await connect(self.url, autocommit=True)
        level = "on" if self._synchronous == "FULL" else "off"
        try:
            await conn.execute(f"SET synchronous_commit = {level}")
            name = self.NAME.format(token=self._token)
            await conn.execute("SELECT set_config('application_name', %s, false)", (name,))
            await self._learn_server_clock(conn)
        except load_psycopg().Error as exc:
            await conn.close()
            raise JournalUnreachable(f"journal {self.location}: {reason(exc)}") from None
        return conn

    async def _learn_server_clock(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """How far the server's clock is ahead of this host's (half the round trip assumed)."""
        before = self._wall.now_us()
        row = await (await conn.execute(_SERVER_NOW)).fetchone()
        after = self._wall.now_us()
        assert row is not None
        self._server_ahead_us = int(row[0]) - (before + after) // 2

    async def _stand_by(
        self, conn: psycopg.AsyncConnection[Any]
    ) -> tuple[psycopg.AsyncConnection[Any], int]:
        """Wait while another daemon is live, then register: the connection, the highest run row.

        A standby outlives the server going away: it connects again until the server is
        back (an active daemon gives up after `RECONNECT_PATIENCE`; its standbys then take
        over from it).
        """
        announced: int | None = None
        lost = False
        since = self._next_beat()
        try:
            while True:
                try:
                    holder = await self._live_holder(conn, since)
                    if holder is None:
                        return conn, await self._register(conn)
                except JournalLocked:  # another standby registered first
                    continue
                except JournalError:
                    if not (conn.closed or conn.broken):
                        raise
                    if not lost:
                        _log.warning("standby: lost the connection to journal %s", self.location)
                    lost = True
                    conn = await self._connect_again(conn)
                    continue
                if lost:
                    lost = False
                    _log.info("standby: connected to journal %s again", self.location)
                if holder[0] != announced:
                    announced = holder[0]
                    self._announce(holder[0], holder[1])
                await asyncio.sleep(STANDBY_POLL)
        except BaseException:
            await self._leave_standby(conn)
            await conn.close()  # `open` closes the first one; this may be a later one
            raise

    def _announce(self, daemon_id: int, holder: lease.LeaseHolder) -> None:
        _log.info(
            "standby: journal %s is run by daemon %d (pid %d on %s); this daemon"
            " takes over when it stops",
            self.location,
            daemon_id,
            holder.pid,
            holder.host,
            extra={"standby": True},
        )

    async def _leave_standby(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Remove this daemon's standby row, if the connection still works (best effort)."""
        if conn.closed or conn.broken:
            return
        with contextlib.suppress(load_psycopg().Error, TimeoutError):
            async with asyncio.timeout(CLOSE_PATIENCE):
                await conn.execute(_NOT_STANDING_BY, (self._token, 0))

    async def _connect_again(
        self, old: psycopg.AsyncConnection[Any]
    ) -> psycopg.AsyncConnection[Any]:
        """A new connection once the server answers again (`old`, broken, is closed)."""
        await old.close()
        delay = STANDBY_POLL
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._connect()
            except JournalUnreachable:
                delay = min(delay * 2, RETRY_MAX)

    async def _cut_off_stale(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """End the writer connections of daemons that are no longer live, before fencing them.

        A daemon frozen inside a batch keeps its transaction, and its row lock, open on the
        server for as long as it is frozen. Ending its connection rolls that batch back.
        """
        now = self._next_beat()
        try:
            _, stale = _judged(await (await conn.execute(_HOLDERS)).fetchall(), now)
            if stale:
                names = [APPLICATION_NAME.format(token=holder.token) for _, holder in stale]
                names += [OFFERING_NAME.format(daemon=daemon) for daemon, _ in stale]
                await conn.execute(_CUT_OFF, (names,))
        except load_psycopg().Error as exc:  # no right to: the fence waits for its lock
            _log.warning(
                "journal %s: cannot end a stale daemon's connection: %s",
                self.location,
                reason(exc),
            )

    async def _live_holder(
        self, conn: psycopg.AsyncConnection[Any], since: int
    ) -> tuple[int, lease.LeaseHolder] | None:
        """The first live daemon of the journal, read without a lock; None if there is none.

        Renews this standby's row (standing by `since`) on the way.
        """
        now = self._next_beat()
        standing = (self._token, os.getpid(), lease.HOST, since, now)
        try:
            await conn.execute(_STANDING_BY, standing)
            rows = await (await conn.execute(_HOLDERS)).fetchall()
        except load_psycopg().Error as exc:
            denial = denied(self.location, "standing by", exc)
            raise denial or JournalError(f"journal {self.location}: {reason(exc)}") from None
        live, _ = _judged(rows, now)
        return live[0] if live else None

    async def _register(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Fence stale daemons, refuse a live one, add this one's row; the highest run row."""
        await self._cut_off_stale(conn)
        now = self._next_beat()
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{REGISTER_LOCK_TIMEOUT}'")
                # Frozen in here, this daemon would hold every other one's registration.
                await conn.execute(
                    f"SET LOCAL idle_in_transaction_session_timeout = '{REGISTER_LOCK_TIMEOUT}'"
                )
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DAEMONS_LOCK,))
                live, judged_stale = _judged(await (await conn.execute(_LIVE)).fetchall(), now)
                if live:
                    raise lease.in_use(self.location, live[0][1], now)
                stale = [daemon_id for daemon_id, _ in judged_stale]
                if stale:
                    await conn.execute(_FENCE, (now, stale))
                    await conn.execute(_RELEASE_RUNS, (stale,))
                    _log.warning(
                        "journal %s: fenced daemon %s (its process ended or its heartbeat"
                        " stopped); taking over",
                        self.location,
                        ", ".join(map(str, stale)),
                    )
                await conn.execute(_NOT_STANDING_BY, (self._token, now - lease.STALE_AFTER_US))
                cursor = await conn.execute(
                    _REGISTER, (self._token, os.getpid(), lease.HOST, now, now)
                )
                registered = await cursor.fetchone()
                assert registered is not None
                self.daemon_id, self._epoch = int(registered[0]), int(registered[1])
                cursor = await conn.execute("SELECT coalesce(max(id), 0) FROM runs")
                top = await cursor.fetchone()
                assert top is not None
        except load_psycopg().Error as exc:
            if getattr(exc, "sqlstate", None) == "55P03":  # a daemon holds its row too long
                raise JournalLocked(
                    f"journal {self.location}: another daemon's row stayed locked for"
                    f" {REGISTER_LOCK_TIMEOUT}; try again"
                ) from None
            denial = denied(self.location, "opening", exc)
            message = f"journal {self.location}: opening failed: {reason(exc)}"
            raise denial or JournalError(message) from None
        return int(top[0])

    async def run(self) -> None:
        """Commit batches until `close`; the caller's task owns it."""
        task = self._task = asyncio.get_running_loop().create_task(
            self._main(), name="journal-writer-postgres"
        )
        await run_until_done(task, self._request_close)

    async def close(self) -> None:
        """Commit what is pending, mark this daemon stopped, and close the connection."""
        self._request_close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        else:
            await self._close_connection()

    def _request_close(self) -> None:
        self._closing = True
        if self._closing_at is None:
            self._closing_at = time.monotonic()
        self._close_requested.set()
        self._wake.set()

    # -- writing ---------------------------------------------------------------------------

    @property
    def identity(self) -> WriterIdentity:
        """Its token (its standby row's, then its daemon row's), daemon row and epoch."""
        return WriterIdentity(self._token, self.daemon_id, self._epoch)

    @property
    def committed(self) -> bool:
        """Whether everything enqueued so far has committed (or failed): nothing in flight."""
        return self._batch is None and self._inflight is None

    def _join(
        self, ops: Iterable[Op], urgent: bool, *, wanted: bool
    ) -> asyncio.Future[None] | None:
        if self._failure is not None:
            raise self._failure
        if self._stopped:
            raise JournalError(f"journal {self.location} is closed")
        future = self._callers.join(self._pending, ops, self._together, wanted=wanted)
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            self._wake.set()
        if urgent and not self._urgent:
            self._urgent = True
            self._wake.set()
        return future

    def together(self) -> contextlib.AbstractContextManager[object]:
        """Every `enqueue` made inside joins the same batch, as one caller (`Together`).

        The writer is a task of the same event loop: it cannot take a batch while a block
        without an await runs, so the block needs no lock.
        """
        return self._together

    async def write(self, ops: Iterable[Op]) -> None:
        """Write ops and return once they are committed."""
        await asyncio.shield(self.enqueue(ops, urgent=True))

    async def flush(self) -> None:
        """Return once everything enqueued so far has committed (at once if nothing is)."""
        newest = self._batch or self._inflight
        if self._batch is not None:
            self._urgent = True
            self._wake.set()
        if newest is not None:
            await asyncio.shield(newest)

    async def mark_ready(self) -> None:
        """Record in this daemon's row that recovery and loading are done."""
        await self.write([(Stmt.MARK_READY, (self._token,))])

    # -- the writer task -------------------------------------------------------------------

    async def _main(self) -> None:
        try:
            while await self._commit_next():
                pass
        finally:
            self._stopped = True
            stranded = [f for f in (self._inflight, self._batch) if f is not None]
            callers = (self._inflight_callers, self._callers)
            self._inflight, self._batch, self._pending = None, None, []
            self._inflight_callers, self._callers = Callers(), Callers()
            if stranded and self._failure is None:  # only on a bug: it is re-raised
                self._failure = JournalError("the journal writer stopped unexpectedly")
            for future in stranded:
                resolve(future, JournalError("the journal writer stopped"))
            for stopped in callers:
                stopped.settle(JournalError("the journal writer stopped"))
            await self._close_connection()

    async def _commit_next(self) -> bool:
        """Commit one batch; False once the task should stop."""
        ops, batch, closing = await self._take_batch()
        if batch is None:
            return not closing
        callers = self._inflight_callers
        error = await self._apply_retrying(ops)
        outcomes: Outcomes = []
        if isinstance(error, Refused):
            error, outcomes = await self._apply_each(ops, callers)
        self._settle(batch, callers, error, outcomes)
        return error is None

    async def _apply_each(
        self, ops: list[Op], callers: Callers
    ) -> tuple[JournalError | None, Outcomes]:
        """Commit each caller's ops of a refused batch in a transaction of its own, in order.

        Only a caller whose own ops are refused fails; the others commit. Returns the error
        that stops the writer, if any, and the outcome of each caller tried before it.
        """
        outcomes: list[JournalError | None] = []
        for mine in callers.each(ops):
            stop = outcome(await self._apply_retrying(mine), outcomes)
            if stop is not None:
                return stop, outcomes
        return None, outcomes

    async def _take_batch(self) -> tuple[list[Op], asyncio.Future[None] | None, bool]:
        deadline: float | None = None
        while not (self._urgent or self._closing):
            self._wake.clear()
            if self._batch is None:
                await self._wake.wait()
                continue
            now = time.monotonic()
            deadline = deadline or now + LAZY_FLUSH_SECONDS
            if now >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - now):
                    await self._wake.wait()
        ops, batch = self._pending, self._batch
        self._pending, self._batch, self._inflight = [], None, batch
        self._inflight_callers, self._callers = self._callers, Callers()
        self._urgent = False
        return ops, batch, self._closing

    def _settle(
        self,
        batch: asyncio.Future[None],
        callers: Callers,
        error: JournalError | None,
        outcomes: Outcomes,
    ) -> None:
        if self._inflight is batch:
            self._inflight = None
            self._inflight_callers = Callers()
        callers.settle(error, outcomes)
        if error is None:
            resolve(batch, None)
            return
        self._failure = error
        waiting = [batch, *([self._batch] if self._batch is not None else [])]
        self._callers.settle(error)
        self._pending, self._batch, self._callers = [], None, Callers()
        for future in waiting:
            resolve(future, error)

    async def _apply_retrying(self, ops: list[Op]) -> JournalError | None:
        """Commit `ops`, retrying what may pass; the error that stops the writer, if any."""
        delay = RETRY_FIRST
        escaped = False
        while True:
            began = time.monotonic()  # the new heartbeat is no newer than this
            try:
                await self._apply(ops)
            except SimulatedCrash as exc:
                self._crashed = True
                return JournalError(f"simulated crash at {exc}")
            except _HasNul as exc:
                if escaped:
                    return Refused(str(exc))
                ops, escaped = _without_nul(ops), True
                continue
            except (_Lost, _Transient) as exc:
                try:
                    landed = await self._after_failure(exc, delay)
                except JournalError as stop:
                    return stop
                delay = min(delay * 2, RETRY_MAX)
                if not landed:
                    continue
            except JournalError as exc:
                return exc
            self.commits += 1
            self._renewed_at = began
            self._recover()
            return None

    async def _after_failure(self, exc: JournalError, delay: float) -> bool:
        """Get ready to try a failed batch again; whether it had committed after all.

        Raises:
            JournalError: The writer stops: fenced, or the connection did not come back.
        """
        self._degrade(str(exc))
        if isinstance(exc, _Lost):
            if self._lost_at is None:
                self._lost_at = time.monotonic()
            try:
                landed = await self._reconnect()
            except JournalUnreachable as unreachable:
                if self._past_patience(self._lost_at):
                    raise JournalUnreachable(
                        f"journal {self.location}: the connection was lost and could not be"
                        f" made again: {unreachable}"
                    ) from None
                await self._backoff(delay)
                return False
            self._lost_at = None
            return landed
        if self._closing_at is not None and time.monotonic() - self._closing_at > CLOSE_PATIENCE:
            raise JournalError(f"{exc}; closing with writes not committed")
        await self._heartbeat_alone()
        await self._backoff(delay)
        return False

    def _past_patience(self, lost_at: float) -> bool:
        now = time.monotonic()
        if now - lost_at > self.reconnect_patience:
            return True
        return self._closing_at is not None and now - self._closing_at > CLOSE_PATIENCE

    async def _backoff(self, seconds: float) -> None:
        """Wait `seconds` before trying again (at once, once, if `close` is asked meanwhile)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._close_requested.wait()
        self._close_requested.clear()

    def _next_beat(self) -> int:
        """A heartbeat time (the server's clock, in µs) newer than every one this writer wrote."""
        self._beat = max(self._wall.now_us() + self._server_ahead_us, self._beat + 1)
        return self._beat

    async def _apply(self, ops: list[Op]) -> None:
        pg = load_psycopg()
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            raise _Lost(f"journal {self.location}: not connected")
        beat = self._attempt_beat = self._next_beat()
        try:
            async with conn.transaction():
                async with conn.pipeline() as pipeline:
                    try:
                        check = await self._send(conn, ops, beat)
                    except pg.Error:
                        await _drain(pipeline)
                        raise
                if not self._fence_holds(await check.fetchone()):
                    raise self._fenced()
                self._fault(BEFORE_COMMIT)
        except SimulatedDiskFull as exc:
            self._deltas.discard()
            raise _Transient(f"journal {self.location}: write failed: {exc}") from exc
        except pg.Error as exc:
            self._deltas.discard()
            raise self._translate(exc, conn) from None
        except BaseException:
            self._deltas.discard()
            raise
        self._deltas.commit()
        self._fault(AFTER_COMMIT)

    async def _send(
        self, conn: psycopg.AsyncConnection[Any], ops: list[Op], beat: int
    ) -> psycopg.AsyncCursor[Any]:
        """Send a batch's statements into the pipeline; the cursor of its fence check."""
        check = await self._send_fence(conn, beat)
        cursor = conn.cursor()
        for stmt, rows in grouped(ops):
            if stmt is Stmt.INSERT_CHECKPOINT:
                rows, snapshots = self._deltas.encode(rows)
                if snapshots:
                    await cursor.executemany(SNAPSHOT_SQL, snapshots)
            elif stmt is Stmt.SET_STATUS:
                self._deltas.forget([r[-1] for r in rows if r[0] in FINAL_STATUSES])
            await cursor.executemany(SQL[stmt], rows)
        await cursor.execute(_NOTIFY, (NOTIFY_CHANNEL,))
        return check

    async def _send_fence(
        self, conn: psycopg.AsyncConnection[Any], beat: int
    ) -> psycopg.AsyncCursor[Any]:
        """A batch's first statements: its fence check (the cursor returned), its heartbeat."""
        check = conn.cursor()
        await check.execute(_CHECK, (self.daemon_id,))
        await conn.cursor().execute(_BEAT, (beat, self.daemon_id))
        return check

    def _fence_holds(self, row: Any) -> bool:
        """Whether the fence check's row lets the batch commit: this epoch, not fenced."""
        return row is not None and row[0] == self._epoch and row[1] is None

    def _translate(self, exc: Exception, conn: psycopg.AsyncConnection[Any]) -> JournalError:
        message = f"journal {self.location}: write failed: {reason(exc)}"
        state = getattr(exc, "sqlstate", None) or ""
        if lost(exc, conn):
            return _Lost(message)
        if state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_CODES:
            return _Transient(message)
        if not state and "NUL" in str(exc):  # psycopg refuses it before sending anything
            return _HasNul(message)
        if refused(exc):  # a caller's ops, not the journal
            return Refused(message)
        return JournalError(message)

    async def _reconnect(self) -> bool:
        """A new connection; whether the batch cut off with the old one had committed.

        Raises:
            JournalUnreachable: No connection could be made (yet).
        """
        old, self._conn = self._conn, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        conn = await self._connect()
        try:
            row = await (await conn.execute(*self._landed_query())).fetchone()
        except load_psycopg().Error as exc:
            await conn.close()
            raise JournalUnreachable(f"journal {self.location}: {reason(exc)}") from None
        self._conn = conn
        _log.warning("journal connection made again")
        return row is not None and row[0] == self._attempt_beat

    def _landed_query(self) -> tuple[str, tuple[Any, ...]]:
        """What reads back the mark each batch writes (its heartbeat) and its parameters."""
        return "SELECT heartbeat_at FROM daemons WHERE id = %s", (self.daemon_id,)

    async def _heartbeat_alone(self) -> None:
        """Renew the heartbeat in a statement of its own, saying why writes fail, if it can.

        Raises:
            JournalLocked: Another daemon fenced this one.
        """
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return
        began = time.monotonic()
        params = (self._next_beat(), self._degraded, self.daemon_id, self._epoch)
        try:
            cursor = await conn.execute(_BEAT_ALONE, params)
        except load_psycopg().Error:
            return  # the heartbeat may go stale; the next successful batch finds out
        if cursor.rowcount != 1:
            raise self._fenced()
        self._renewed_at = began

    def _fenced(self) -> JournalLocked:
        return JournalLocked(
            f"journal {self.location}: another daemon fenced this one (took its runs over);"
            " this runtime stops writing"
        )

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self._crashed and not (conn.closed or conn.broken):
                with contextlib.suppress(load_psycopg().Error):
                    await conn.execute(_STOP, (self._next_beat(), self.daemon_id, self._epoch))
        finally:
            lease.LIVE_TOKENS.discard(self._token)
            await conn.close()

    def _fault(self, point: str) -> None:
        if self._faults is not None:
            self._faults.hit(point)


async def _drain(pipeline: psycopg.AsyncPipeline) -> None:
    """Take the results a failed statement left in `pipeline` (the rest of the batch, aborted).

    Else leaving the block syncs them, fails with "pipeline aborted" on top of the error
    already raised, and psycopg logs that as a warning ("error ignored terminating").
    """
    with contextlib.suppress(load_psycopg().Error):
        await pipeline.sync()


def _judged(
    rows: list[Any], now: int
) -> tuple[list[tuple[int, lease.LeaseHolder]], list[tuple[int, lease.LeaseHolder]]]:
    """The daemons of `rows` (`_HOLDERS`' columns) live at `now`, and those that are not."""
    live: list[tuple[int, lease.LeaseHolder]] = []
    stale: list[tuple[int, lease.LeaseHolder]] = []
    for row in rows:
        holder = lease.holder_from(row[1:])
        assert holder is not None
        (live if lease.is_live(holder, now) else stale).append((int(row[0]), holder))
    return live, stale


def _without_nul(ops: list[Op]) -> list[Op]:
    r"""`ops` with every NUL in a text parameter written as the four characters ``\x00``."""
    return [
        (
            stmt,
            tuple(p.replace("\x00", "\\x00") if isinstance(p, str) else p for p in params),
        )
        for stmt, params in ops
    ]

"""Isolated steps the active daemon offers to its standbys: the `step_jobs` table.

The active daemon offers a step as a row (its run, its file's digest, the worker request's
header and the state: no env, no file text). A standby claims open rows whose file it has
(``FOR UPDATE SKIP LOCKED``: two standbys never claim one job), runs each in a worker of its
own and writes the reply, with the `attempts` it claimed at: a job requeued meanwhile is no
longer its to answer. The active daemon takes the replies (deleting their rows) and carries
on as with a local worker; a timeout or an abort cancels the row (the standby stops the
worker), then forgets it.

A standby that stops with a claimed job leaves it to `requeue_abandoned`: its `standbys` row
goes stale by the server's clock (or its process is gone from this host, as
`daemon_rows.standby_alive` judges), and the job is offered again, one attempt counted; at
the last attempt it is answered ``{"crashed": ...}``, as a worker's death fails a step.

Offers, replies and cancels each end with one ``pg_notify`` on `STEP_JOBS_CHANNEL`, in their
transaction; both sides listen on a connection of their own and `wait` for it, with a
timeout as the polling fallback (a notification can be lost; both sides query anyway).

Every psycopg error is a `JournalError` (`JournalUnreachable` for a lost connection: the
next call connects again). Text the journal cannot keep (a NUL, a lone surrogate) is a
`ValueError` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import JournalCorrupt, JournalError, JournalLocked
from ..records import StepJob, StepOffer, StepReply
from .connection import STEP_JOBS_CHANNEL, connect, describe, failed, load_psycopg, reason
from .daemon_rows import FRESH_STANDBY, standby_alive

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
_log = logging.getLogger(__name__)

# SQLSTATE classes of a value the server refuses (data exceptions, a program limit).
_REFUSED_CLASSES = ("22", "54")
# Pauses before a lost listening connection is made again: doubling from the first to the last.
RETRY_SECONDS = (0.1, 5.0)

# The offering daemon's row, share-locked as its writer's batches lock it: a fence waits.
_CHECK = "SELECT epoch, fenced_at, stopped_at FROM daemons WHERE id = %s FOR SHARE"
_OFFER = (
    "INSERT INTO step_jobs (offered_by, offered_at, run_id, digest, request, state)"
    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
)
_NOTIFY = "SELECT pg_notify(%s, '')"
# A daemon frozen inside a transaction (an offer share-locks its `daemons` row, a requeue
# locks jobs) would hold those locks as long as it is frozen: its fence, and the standbys'
# replies, would wait for it. The server ends such a session instead (its writer's
# connection is ended by the daemon fencing it; this one is not named after its token).
_IDLE_LIMIT = "SET idle_in_transaction_session_timeout = '2s'"
_CANCEL = "UPDATE step_jobs SET cancelled = 1 WHERE id = ANY(%s) AND cancelled = 0"
_TAKE = "DELETE FROM step_jobs WHERE id = ANY(%s) AND reply IS NOT NULL RETURNING id, reply"
_FORGET = "DELETE FROM step_jobs WHERE id = ANY(%s)"
_CLEAR = "DELETE FROM step_jobs WHERE offered_by <> %s"
_PRESENT = "SELECT id FROM step_jobs WHERE id = ANY(%s)"
_FORGET_STRAYS = (
    "DELETE FROM step_jobs WHERE offered_by = %s AND offered_at < %s AND NOT (id = ANY(%s))"
)
_UNCLAIM_STRAYS = (
    "UPDATE step_jobs SET claimed_by = NULL, claimed_at = NULL"
    " WHERE claimed_by = %s AND reply IS NULL AND NOT (id = ANY(%s))"
)
# The standbys running jobs of a daemon: their row's process and whether it is fresh (NULLs:
# no row).
_SERVING = (
    f"SELECT DISTINCT j.claimed_by, s.pid, s.host, coalesce(s.{FRESH_STANDBY}, false)"
    " FROM step_jobs j LEFT JOIN standbys s ON s.token = j.claimed_by"
    " WHERE j.offered_by = %s AND j.claimed_by IS NOT NULL AND j.reply IS NULL"
)
# Jobs of stopped standbys offered again, one attempt counted; at the last, answered crashed.
_REQUEUE = (
    "UPDATE step_jobs SET attempts = attempts + 1, claimed_by = NULL, claimed_at = NULL,"
    " reply = CASE WHEN attempts + 1 >= %(max)s THEN"
    " '{\"crashed\":\"the daemons serving it stopped ' || (attempts + 1) || ' times\"}' END,"
    " replied_at = CASE WHEN attempts + 1 >= %(max)s THEN %(now)s::bigint END"
    " WHERE offered_by = %(daemon)s AND claimed_by = ANY(%(tokens)s) AND reply IS NULL"
)
_SERVERS = f"SELECT pid, host FROM standbys WHERE {FRESH_STANDBY}"
# Open jobs of live daemons whose file this standby has, oldest first; locked rows skipped.
_CLAIM = (
    "UPDATE step_jobs j SET claimed_by = %s, claimed_at = %s FROM (SELECT s.id FROM step_jobs s"
    " JOIN daemons d ON d.id = s.offered_by"
    " WHERE s.claimed_by IS NULL AND s.cancelled = 0 AND s.reply IS NULL"
    " AND s.digest = ANY(%s) AND d.fenced_at IS NULL AND d.stopped_at IS NULL"
    " ORDER BY s.id LIMIT %s FOR UPDATE OF s SKIP LOCKED) picked WHERE j.id = picked.id"
    " RETURNING j.id, j.run_id, j.digest, j.request, j.state, j.attempts"
)
_REPLY = (
    "UPDATE step_jobs SET reply = %s, replied_at = %s"
    " WHERE id = %s AND claimed_by = %s AND attempts = %s AND reply IS NULL"
)
_STILL_OURS = "SELECT id FROM step_jobs WHERE id = ANY(%s) AND claimed_by = %s AND cancelled = 0"
_TAKE_BACK = (
    "DELETE FROM step_jobs WHERE id IN (SELECT id FROM step_jobs WHERE id = ANY(%s)"
    " AND claimed_by IS NULL AND reply IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING id"
)


class PostgresStepJobs:
    """`StepJobs` on a PostgreSQL journal: a connection for queries, one listening."""

    def __init__(self, url: str, *, retry_seconds: tuple[float, float] = RETRY_SECONDS) -> None:
        self.url = url  # may hold a password: never shown (`location` is what is shown)
        self._retry = retry_seconds
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # Invariant: one call at a time on `_conn` (a transaction is never shared).
        self._lock = asyncio.Lock()
        # Invariant: set by each notification and each (re)connection of the listener
        # since the last `wait` returned.
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        # The listener's connection, closed by `close` too (its task may never have run).
        self._listening_conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def location(self) -> str:
        """Where the journal is, without the password."""
        return describe(self.url)

    async def open(self) -> None:
        """Connect, check the journal has the table, and start listening.

        Raises:
            JournalUnreachable: The server cannot be reached.
            JournalCorrupt: The database's journal has no `step_jobs` table (migrate it).
        """
        try:
            await self._run("opening step jobs", self._check_table)
            conn = await self._listening()
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(conn), name="step-jobs-listener"
        )

    async def close(self) -> None:
        """Stop listening and disconnect; idempotent, quiet about a lost connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        listening, self._listening_conn = self._listening_conn, None
        if listening is not None:
            with contextlib.suppress(Exception):
                await listening.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # The active daemon's side.

    async def offer(
        self, offers: Sequence[StepOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        """Offer `offers` as daemon `daemon_id` of `epoch`: their jobs' ids, in order.

        Raises:
            ValueError: An offer holds text the journal cannot keep (nothing is offered).
            JournalLocked: The daemon was fenced or stopped, or its epoch moved on.
        """
        rows = [
            (
                daemon_id,
                now,
                _text(o.run_id, "run id"),
                _text(o.digest, "digest"),
                _json(o.request, "request"),
                _text(o.state, "state"),
            )
            for o in offers
        ]
        if not rows:
            return []

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[int]:
            async with conn.transaction():
                row = await (await conn.execute(_CHECK, (daemon_id,))).fetchone()
                if row is None or row[0] != epoch or row[1] is not None or row[2] is not None:
                    raise JournalLocked(
                        f"journal {self.location}: daemon {daemon_id} (epoch {epoch}) was"
                        " fenced or stopped; it offers no steps"
                    )
                cursor = conn.cursor()
                await cursor.executemany(_OFFER, rows, returning=True)
                ids: list[int] = []
                while True:
                    ids.append(int((await _one(cursor))[0]))
                    if not cursor.nextset():
                        break
                await conn.execute(_NOTIFY, (STEP_JOBS_CHANNEL,))
            return ids

        return await self._run("offering steps", work)

    async def cancel(self, ids: Sequence[int]) -> None:
        """Mark the jobs `ids` cancelled, claimed or not (their standbys stop them)."""
        if ids:
            await self._notifying("cancelling steps", _CANCEL, (list(ids),))

    async def take_replies(self, ids: Collection[int]) -> list[StepReply]:
        """The replies of those of `ids` answered, by id; their rows deleted."""
        if not ids:
            return []

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[StepReply]:
            rows = await (await conn.execute(_TAKE, (list(ids),))).fetchall()
            return [StepReply(int(i), self._reply_of(i, text)) for i, text in sorted(rows)]

        return await self._run("taking step replies", work)

    async def forget(self, ids: Sequence[int]) -> None:
        """Delete the jobs `ids`, answered or not."""
        if ids:
            await self._statement("forgetting steps", _FORGET, (list(ids),))

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        """Offer again the jobs of `daemon_id` whose standby stopped; how many moved.

        A standby stopped when its `standbys` row is stale by the server's clock, or gone,
        or its process is gone from this host. A job reaching `max_attempts` is answered
        ``{"crashed": "the daemons serving it stopped N times"}`` instead.
        """

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                serving = await (await conn.execute(_SERVING, (daemon_id,))).fetchall()
                stopped = [
                    token
                    for token, pid, host, fresh in serving
                    if not fresh or not standby_alive(pid, host)
                ]
                if not stopped:
                    return 0
                params = {"max": max_attempts, "now": now, "daemon": daemon_id}
                cursor = await conn.execute(_REQUEUE, {**params, "tokens": stopped})
                if cursor.rowcount:
                    await conn.execute(_NOTIFY, (STEP_JOBS_CHANNEL,))
                return int(cursor.rowcount)

        return await self._run("requeueing abandoned steps", work)

    async def missing(self, ids: Collection[int]) -> set[int]:
        """Those of `ids` whose jobs are gone."""
        if not ids:
            return set()
        params = (list(ids),)

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[int]:
            rows = await (await conn.execute(_PRESENT, params)).fetchall()
            return set(ids) - {int(row[0]) for row in rows}

        return await self._run("looking for steps gone", work)

    async def forget_strays(self, *, daemon_id: int, keep: Collection[int], before: int) -> int:
        """Delete the jobs `daemon_id` offered before `before` but for `keep`; how many."""
        params = (daemon_id, before, list(keep))
        return await self._statement("forgetting stray steps", _FORGET_STRAYS, params)

    async def unclaim_strays(self, *, token: str, keep: Collection[int]) -> int:
        """Release the unanswered jobs `token` claimed but for `keep`; how many."""
        params = (_text(token, "token"), list(keep))
        return await self._statement("releasing stray claims", _UNCLAIM_STRAYS, params)

    async def clear(self, *, daemon_id: int) -> int:
        """Delete every job offered by a daemon other than `daemon_id`; how many."""
        return await self._statement("clearing step jobs", _CLEAR, (daemon_id,))

    async def servers(self, *, now: int) -> int:
        """How many standbys stand by (their rows fresh by the server's clock).

        `now` is not needed: freshness is judged by the server's clock.
        """
        del now

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            rows = await (await conn.execute(_SERVERS)).fetchall()
            return sum(1 for pid, host in rows if standby_alive(pid, host))

        return await self._run("counting standbys", work)

    # A standby's side.

    async def claim(
        self, *, token: str, digests: Collection[str], limit: int, now: int
    ) -> list[StepJob]:
        """Claim up to `limit` open jobs of live daemons whose digest is one of `digests`."""
        wanted = [d for d in digests if _fits(d)]
        if not wanted or limit <= 0:
            return []
        params = (_text(token, "token"), now, wanted, limit)

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[StepJob]:
            rows = await (await conn.execute(_CLAIM, params)).fetchall()
            return [
                StepJob(int(i), run_id, digest, self._request_of(i, request), state, attempts)
                for i, run_id, digest, request, state, attempts in sorted(rows)
            ]

        return await self._run("claiming steps", work)

    async def reply(
        self, job_id: int, *, token: str, attempts: int, reply: dict[str, Any], now: int
    ) -> bool:
        """Answer the job `job_id`; False when it is no longer this claim's.

        Raises:
            ValueError: `reply` holds text the journal cannot keep, or the server refused
                it for its value (SQLSTATE classes 22 and 54: too long, say): written
                again, it would be refused again.
        """
        params = (_json(reply, "reply"), now, job_id, _text(token, "token"), attempts)
        pg = load_psycopg()

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            try:
                async with conn.transaction():
                    cursor = await conn.execute(_REPLY, params)
                    if cursor.rowcount != 1:
                        return False
                    await conn.execute(_NOTIFY, (STEP_JOBS_CHANNEL,))
            except pg.Error as exc:
                if (getattr(exc, "sqlstate", None) or "")[:2] in _REFUSED_CLASSES:
                    raise ValueError(f"a step job's reply cannot be kept: {reason(exc)}") from None
                raise
            return True

        return await self._run("replying to a step", work)

    async def withdrawn(self, ids: Collection[int], *, token: str) -> set[int]:
        """Those of `ids` cancelled, gone, or no longer claimed by `token`."""
        if not ids:
            return set()
        params = (list(ids), _text(token, "token"))

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[int]:
            ours = await (await conn.execute(_STILL_OURS, params)).fetchall()
            return set(ids) - {int(row[0]) for row in ours}

        return await self._run("checking claimed steps", work)

    async def take_back(self, ids: Collection[int], limit: int) -> list[int]:
        """Delete up to `limit` of `ids` no standby has claimed, first offered first."""
        if not ids or limit < 1:
            return []
        params = (list(ids), limit)

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[int]:
            rows = await (await conn.execute(_TAKE_BACK, params)).fetchall()
            return sorted(int(row[0]) for row in rows)

        return await self._run("taking steps back", work)

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a polling bound
        """Until a notification on the channel arrives or `timeout` seconds pass.

        A notification that came since the last call returns at once. A lost listening
        connection returns too (what was notified meanwhile is unknown) and is made again.
        """
        if not self._woken.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), max(timeout, 0.0))
        self._woken.clear()

    def _reply_of(self, job_id: int, text: str) -> dict[str, Any]:
        """A reply as written; one something else wrote fails its step as a crash would.

        Its row is deleted already: raising would lose the other replies taken with it.
        """
        value = _object(text)
        if value is None:
            why = self._corrupt(job_id, "reply")
            _log.warning("%s: its step fails", why)
            return {"crashed": why}
        return value

    def _request_of(self, job_id: int, text: str) -> dict[str, Any]:
        """A request as written; one something else wrote is empty (the standby says so).

        Its row is claimed already: raising would strand the other jobs claimed with it.
        """
        value = _object(text)
        if value is None:
            _log.warning("%s: it is answered as crashed", self._corrupt(job_id, "request"))
            return {}
        return value

    def _corrupt(self, job_id: int, what: str) -> str:
        return (
            f"journal {self.location}: step job {job_id} has a {what} that is not a JSON"
            " object: something other than the orchestrator wrote it"
        )

    # Connections.

    async def _run(
        self, doing: str, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """`work` on the query connection (made again if it was lost), errors translated."""
        pg = load_psycopg()
        async with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                self._conn = None
                conn = await connect(self.url, autocommit=True)
                try:
                    await conn.execute(_IDLE_LIMIT)
                except pg.Error as exc:
                    with contextlib.suppress(Exception):
                        await conn.close()
                    raise failed(self.location, doing, exc, conn) from None
                self._conn = conn
            try:
                return await work(conn)
            except pg.Error as exc:
                raise failed(self.location, doing, exc, conn) from None

    async def _statement(self, doing: str, sql: str, params: Sequence[Any]) -> int:
        """One statement in its own transaction; how many rows it changed."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            return int((await conn.execute(sql, params)).rowcount)

        return await self._run(doing, work)

    async def _notifying(self, doing: str, sql: str, params: Sequence[Any]) -> None:
        """One statement and the channel's notification, in one transaction."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute(sql, params)
                await conn.execute(_NOTIFY, (STEP_JOBS_CHANNEL,))

        await self._run(doing, work)

    async def _check_table(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await _one(await conn.execute("SELECT to_regclass('step_jobs') IS NOT NULL"))
        if not row[0]:
            raise JournalCorrupt(
                f"{self.location} holds no journal with step jobs (an older schema, or none);"
                " run `orchestrator journal migrate --db URL`"
            )

    async def _listening(self) -> psycopg.AsyncConnection[Any]:
        """A new connection listening on the channel (`JournalUnreachable` if none)."""
        conn = self._listening_conn = await connect(self.url, autocommit=True)
        try:
            await conn.execute(f"LISTEN {STEP_JOBS_CHANNEL}")
        except load_psycopg().Error as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            raise failed(self.location, "listening for step jobs", exc, conn) from None
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """Wake `wait` for each notification until closed; reconnect when the line drops."""
        pg = load_psycopg()
        pause = self._retry[0]
        while True:
            if conn is not None:
                try:
                    async for _ in conn.notifies():
                        self._woken.set()
                except pg.Error:
                    pass  # lost: listen again
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
                self._woken.set()  # what was notified while no one listened is unknown
                _log.info("step jobs: listening connection lost; connecting again")
                pause = self._retry[0]
            await asyncio.sleep(pause)
            try:
                conn = await self._listening()
            except JournalError:
                conn, pause = None, min(pause * 2, self._retry[1])
                continue
            self._woken.set()


async def _one(cursor: psycopg.AsyncCursor[Any]) -> Any:
    row = await cursor.fetchone()
    assert row is not None
    return row


def _object(text: str) -> dict[str, Any] | None:
    """The JSON object `text` holds, or None."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _json(value: dict[str, Any], what: str) -> str:
    """`value` as compact JSON text the journal can keep (`ValueError` saying why not)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a step job's {what} cannot be written as JSON: {exc}") from None
    return _text(text, what)


def _fits(text: str) -> bool:
    """Whether a PostgreSQL journal can keep `text` (a key holding what it cannot, matches none)."""
    try:
        _text(text, "key")
    except ValueError:
        return False
    return True


def _text(text: str, what: str) -> str:
    """`text` if a PostgreSQL journal can keep it: no NUL, no lone surrogate."""
    if "\x00" in text:
        raise ValueError(
            f"a step job's {what} holds a NUL character at {text.index(chr(0))}, which a"
            " PostgreSQL journal cannot keep; escape it (JSON writes it as \\u0000)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"a step job's {what} is not valid Unicode: it holds the lone surrogate"
            f" {text[exc.start]!r} at {exc.start}"
        ) from None
    return text

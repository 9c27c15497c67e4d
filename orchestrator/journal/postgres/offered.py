"""What `step_jobs` and `run_tasks` share: work a daemon offers through a table of the journal.

Both tables are offered by the active daemon (each offer fenced by its `daemons` row, taken
``FOR SHARE`` as its writer's batches take it), claimed by standbys (``FOR UPDATE SKIP
LOCKED``), answered with the `attempts` they claimed at, and woken by a ``pg_notify`` on a
channel of their own. `OfferedTable` holds the connections (one for queries, made again when
lost; one listening, made again after a pause doubling from 0.1 s to 5 s), the statements
both tables run alike, and the check of text before anything is sent: a NUL in plain text or
a lone surrogate anywhere is a `ValueError` saying which field.

Every psycopg error is a `JournalError` (`JournalUnreachable` for a lost connection: the
next call connects again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ...errors import JournalCorrupt, JournalError, JournalLocked
from .connection import OFFERING_NAME, connect, describe, failed, load_psycopg
from .daemon_rows import FRESH_STANDBY, standby_alive

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
_log = logging.getLogger(__name__)

# Pauses before a lost listening connection is made again: doubling from the first to the last.
RETRY_SECONDS = (0.1, 5.0)

# The offering daemon's row, share-locked as its writer's batches lock it: a fence waits.
_CHECK = (
    "SELECT epoch, fenced_at, stopped_at, set_config('application_name', %s, true)"
    " FROM daemons WHERE id = %s FOR SHARE"
)
_NOTIFY = "SELECT pg_notify(%s, '')"
# A daemon frozen inside a transaction (an offer share-locks its `daemons` row, a requeue
# locks rows) would hold those locks as long as it is frozen: its fence, and the standbys'
# replies, would wait for it. The server ends such a session instead (its writer's
# connection is ended by the daemon fencing it; this one is not named after its token).
_IDLE_LIMIT = "SET idle_in_transaction_session_timeout = '2s'"


class OfferedTable:
    """A table of offered work: a connection for queries, one listening on its channel.

    A subclass names its `TABLE`, its `CHANNEL` and what a row is (`NOUN`, `PLURAL`), as
    text written into the statements and messages (never a caller's value).
    """

    TABLE: ClassVar[str]
    CHANNEL: ClassVar[str]
    NOUN: ClassVar[str]  # "step job": messages say "step job 7 has a reply that ..."
    PLURAL: ClassVar[str]  # "step jobs"

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
            JournalCorrupt: The database's journal has not the table (migrate it).
        """
        try:
            await self._run(f"opening {self.PLURAL}", self._check_table)
            conn = await self._listening()
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(conn), name=f"{self.TABLE}-listener"
        )

    async def close(self) -> None:
        """Stop listening and disconnect; idempotent, quiet about a lost connection.

        Cancelled meanwhile, it still closes both connections, then is cancelled.
        """
        listener, self._listener = self._listener, None
        try:
            if listener is not None:
                listener.cancel()
                # Not `await listener` under suppress(CancelledError): that would swallow
                # this caller's own cancellation too.
                await asyncio.wait([listener])
        finally:
            listening, self._listening_conn = self._listening_conn, None
            conn, self._conn = self._conn, None
            await close_quietly(listening)
            await close_quietly(conn)

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a polling bound
        """Until a notification on the channel arrives or `timeout` seconds pass.

        A notification that came since the last call returns at once. A lost listening
        connection returns too (what was notified meanwhile is unknown) and is made again.
        """
        if not self._woken.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), max(timeout, 0.0))
        self._woken.clear()

    # What both tables do alike.

    async def _offer(
        self, doing: str, insert: str, rows: list[tuple[Any, ...]], daemon_id: int, epoch: int
    ) -> list[int]:
        """Insert `rows` (`insert` returns each id) as daemon `daemon_id` of `epoch`.

        Raises:
            JournalLocked: The daemon was fenced or stopped, or its epoch moved on.
        """
        if not rows:
            return []

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[int]:
            async with conn.transaction():
                named = OFFERING_NAME.format(daemon=daemon_id)
                row = await (await conn.execute(_CHECK, (named, daemon_id))).fetchone()
                if row is None or row[0] != epoch or row[1] is not None or row[2] is not None:
                    raise JournalLocked(
                        f"journal {self.location}: daemon {daemon_id} (epoch {epoch}) was"
                        f" fenced or stopped; it offers no {self.PLURAL}"
                    )
                cursor = conn.cursor()
                await cursor.executemany(insert, rows, returning=True)
                ids: list[int] = []
                while True:
                    ids.append(int((await one(cursor))[0]))
                    if not cursor.nextset():
                        break
                await self._notify(conn)
            return ids

        return await self._run(doing, work)

    def _offered_row(
        self,
        daemon_id: int,
        now: int,
        run_id: str,
        digest: str,
        request: dict[str, Any],
        state: str,
    ) -> tuple[Any, ...]:
        """The columns every offer starts with, checked (`ValueError` naming the field)."""
        return (
            daemon_id,
            now,
            self._text(run_id, "run id"),
            self._text(digest, "digest"),
            self._json(request, "request"),
            self._text(state, "state"),
        )

    async def cancel(self, ids: Sequence[int]) -> None:
        """Mark the rows `ids` cancelled, claimed or not (their standbys stop them)."""
        if ids:
            sql = f"UPDATE {self.TABLE} SET cancelled = 1 WHERE id = ANY(%s) AND cancelled = 0"
            await self._notifying(f"cancelling {self.PLURAL}", sql, (list(ids),))

    async def forget(self, ids: Sequence[int]) -> None:
        """Delete the rows `ids`, answered or not."""
        if ids:
            sql = f"DELETE FROM {self.TABLE} WHERE id = ANY(%s)"
            await self._statement(f"forgetting {self.PLURAL}", sql, (list(ids),))

    async def clear(self, *, daemon_id: int) -> int:
        """Delete every row offered by a daemon other than `daemon_id`; how many."""
        sql = f"DELETE FROM {self.TABLE} WHERE offered_by <> %s"
        return await self._statement(f"clearing {self.PLURAL}", sql, (daemon_id,))

    async def take_back(self, ids: Collection[int], limit: int) -> list[int]:
        """Delete up to `limit` of `ids` nothing has claimed yet, first offered first."""
        if not ids or limit < 1:
            return []
        sql = (
            f"DELETE FROM {self.TABLE} WHERE id IN (SELECT id FROM {self.TABLE}"
            " WHERE id = ANY(%s) AND claimed_by IS NULL AND reply IS NULL ORDER BY id"
            " LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id"
        )

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[int]:
            rows = await (await conn.execute(sql, (list(ids), limit))).fetchall()
            return sorted(int(row[0]) for row in rows)

        return await self._run(f"taking {self.PLURAL} back", work)

    async def withdrawn(self, ids: Collection[int], *, token: str) -> set[int]:
        """Those of `ids` cancelled, gone, or no longer claimed by `token`."""
        sql = (
            f"SELECT id FROM {self.TABLE} WHERE id = ANY(%s) AND claimed_by = %s AND cancelled = 0"
        )
        token = self._text(token, "token")
        return await self._absent(f"checking claimed {self.PLURAL}", sql, ids, token)

    async def _take(self, ids: Collection[int]) -> list[tuple[int, dict[str, Any]]]:
        """The replies of those of `ids` answered, by id; their rows deleted."""
        if not ids:
            return []
        sql = (
            f"DELETE FROM {self.TABLE} WHERE id = ANY(%s) AND reply IS NOT NULL RETURNING id, reply"
        )

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, dict[str, Any]]]:
            rows = await (await conn.execute(sql, (list(ids),))).fetchall()
            return [(int(i), self._reply_of(i, text)) for i, text in sorted(rows)]

        return await self._run(f"taking {self.NOUN} replies", work)

    async def _requeue(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        daemon_id: int,
        tokens: list[str],
        now: int,
        max_attempts: int,
    ) -> int:
        """Offer again the unanswered rows of `daemon_id` claimed by `tokens`; how many.

        One attempt is counted; a row reaching `max_attempts` is answered ``{"crashed":
        "the daemons serving it stopped N times"}`` instead. Inside the caller's transaction.
        """
        sql = (
            f"UPDATE {self.TABLE} SET attempts = attempts + 1, claimed_by = NULL,"
            " claimed_at = NULL, reply = CASE WHEN attempts + 1 >= %(max)s THEN"
            " '{\"crashed\":\"the daemons serving it stopped ' || (attempts + 1) || ' times\"}'"
            " END, replied_at = CASE WHEN attempts + 1 >= %(max)s THEN %(now)s::bigint END"
            " WHERE offered_by = %(daemon)s AND claimed_by = ANY(%(tokens)s) AND reply IS NULL"
        )
        params = {"max": max_attempts, "now": now, "daemon": daemon_id, "tokens": tokens}
        cursor = await conn.execute(sql, params)
        if cursor.rowcount:
            await self._notify(conn)
        return int(cursor.rowcount)

    async def _abandoned(self, conn: psycopg.AsyncConnection[Any], daemon_id: int) -> list[str]:
        """The tokens serving unanswered rows of `daemon_id` that stopped.

        A standby stopped when its `standbys` row is stale by the server's clock, fenced, or
        gone, or its process is gone from this host.
        """
        sql = (
            "SELECT DISTINCT t.claimed_by, s.pid, s.host,"
            f" coalesce(s.{FRESH_STANDBY} AND s.fenced_at IS NULL, false)"
            f" FROM {self.TABLE} t LEFT JOIN standbys s ON s.token = t.claimed_by"
            " WHERE t.offered_by = %s AND t.claimed_by IS NOT NULL AND t.reply IS NULL"
        )
        serving = await (await conn.execute(sql, (daemon_id,))).fetchall()
        return [t for t, pid, host, fresh in serving if not fresh or not standby_alive(pid, host)]

    def _reply_of(self, row_id: int, text: str) -> dict[str, Any]:
        """A reply as written; one something else wrote is a crash of its work.

        Its row is deleted already: raising would lose the other replies taken with it.
        """
        value = json_object(text)
        if value is None:
            why = self._corrupt(row_id, "reply")
            _log.warning("%s: it is answered as crashed", why)
            return {"crashed": why}
        return value

    def _request_of(self, row_id: int, text: str) -> dict[str, Any]:
        """A request as written; one something else wrote is empty (the standby says so).

        Its row is claimed already: raising would strand the other rows claimed with it.
        """
        value = json_object(text)
        if value is None:
            _log.warning("%s: it is answered as crashed", self._corrupt(row_id, "request"))
            return {}
        return value

    def _corrupt(self, row_id: int, what: str) -> str:
        return (
            f"journal {self.location}: {self.NOUN} {row_id} has a {what} that is not a JSON"
            " object: something other than the orchestrator wrote it"
        )

    def _text(self, text: str, what: str) -> str:
        """`text` if the journal can keep it (`ValueError` naming this table's `what`)."""
        return kept_text(text, f"a {self.NOUN}'s {what}")

    def _json(self, value: dict[str, Any], what: str) -> str:
        """`value` as compact JSON text the journal can keep (`ValueError` saying why not)."""
        return json_text(value, f"a {self.NOUN}'s {what}")

    # Connections.

    async def _run(
        self, doing: str, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """`work` on the query connection (made again if it was lost), errors translated."""
        pg = load_psycopg()
        async with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                self._conn = None
                await close_quietly(conn)
                conn = self._conn = await self._connect(doing, _IDLE_LIMIT)
            try:
                return await work(conn)
            except pg.Error as exc:
                raise failed(self.location, doing, exc, conn) from None

    async def _connect(self, doing: str, setup: str) -> psycopg.AsyncConnection[Any]:
        """A new connection that ran `setup`; closed again if it did not.

        Raises:
            JournalUnreachable: The server cannot be reached (or the connection dropped).
            JournalError: `setup` failed.
        """
        conn = await connect(self.url, autocommit=True)
        try:
            await conn.execute(setup)
        except load_psycopg().Error as exc:
            await close_quietly(conn)
            raise failed(self.location, doing, exc, conn) from None
        except BaseException:  # cancelled meanwhile: the connection is not left open
            await close_quietly(conn)
            raise
        return conn

    async def _absent(self, doing: str, sql: str, ids: Collection[int], *more: Any) -> set[int]:
        """Those of `ids` whose rows `sql` (of the ids, then `more`) does not find."""
        if not ids:
            return set()

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[int]:
            rows = await (await conn.execute(sql, (list(ids), *more))).fetchall()
            return set(ids) - {int(row[0]) for row in rows}

        return await self._run(doing, work)

    async def _statement(self, doing: str, sql: str, params: Sequence[Any]) -> int:
        """One statement in its own transaction; how many rows it changed."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            return int((await conn.execute(sql, params)).rowcount)

        return await self._run(doing, work)

    async def _notifying(self, doing: str, sql: str, params: Sequence[Any]) -> int:
        """One statement, notified on the channel if it changed rows (one transaction)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                count = int((await conn.execute(sql, params)).rowcount)
                if count:
                    await self._notify(conn)
            return count

        return await self._run(doing, work)

    async def _notify(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(_NOTIFY, (self.CHANNEL,))

    async def _check_table(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await one(await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.TABLE,)))
        if not row[0]:
            raise JournalCorrupt(
                f"{self.location} holds no journal with {self.PLURAL} (an older schema, or"
                " none); run `orchestrator journal migrate --db URL`"
            )

    async def _listening(self) -> psycopg.AsyncConnection[Any]:
        """A new connection listening on the channel (`JournalUnreachable` if none)."""
        listen = f"LISTEN {self.CHANNEL}"
        conn = self._listening_conn = await self._connect(f"listening for {self.PLURAL}", listen)
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
                    await close_quietly(conn)
                self._woken.set()  # what was notified while no one listened is unknown
                _log.info("%s: listening connection lost; connecting again", self.PLURAL)
                pause = self._retry[0]
            await asyncio.sleep(pause)
            try:
                conn = await self._listening()
            except JournalError:
                conn, pause = None, min(pause * 2, self._retry[1])
                continue
            self._woken.set()


async def close_quietly(conn: psycopg.AsyncConnection[Any] | None) -> None:
    """Close `conn` if there is one; a connection already lost closes without a word."""
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()


async def one(cursor: psycopg.AsyncCursor[Any]) -> Any:
    """The row a statement surely returns."""
    row = await cursor.fetchone()
    assert row is not None
    return row


def json_object(text: str | None) -> dict[str, Any] | None:
    """The JSON object `text` holds, or None."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def json_text(value: dict[str, Any], what: str) -> str:
    """`value` as compact JSON text the journal can keep; `what` names it in a `ValueError`."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be written as JSON: {exc}") from None
    return kept_text(text, what)


def fits(text: str) -> bool:
    """Whether a PostgreSQL journal can keep `text` (a key holding what it cannot, matches none)."""
    try:
        kept_text(text, "key")
    except ValueError:
        return False
    return True


def kept_text(text: str, what: str) -> str:
    """`text` if a PostgreSQL journal can keep it: no NUL, no lone surrogate (`what` is named)."""
    if "\x00" in text:
        raise ValueError(
            f"{what} holds a NUL character at {text.index(chr(0))}, which a PostgreSQL"
            " journal cannot keep; escape it (JSON writes it as \\u0000)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid Unicode: it holds the lone surrogate"
            f" {text[exc.start]!r} at {exc.start}"
        ) from None
    return text

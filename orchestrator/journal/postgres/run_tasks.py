"""Segments of runs the coordinator offers to executors: the `run_tasks` table.

The coordinator (the active daemon) offers a segment of a run (from a step until the run
pauses or ends) as a row: the run's row and id, its file's digest, an opaque request and
the run's state. An executor (a daemon standing by) claims open rows whose file it has
(``FOR UPDATE SKIP LOCKED``: two executors never claim one task), executes the segment with
its own writer, and replies with the `attempts` it claimed at. Signals for a task reach it
through `patches` (merged by `patch`, taken by `take_patches`, handed over with a claim).

Executors are fenced by their `standbys` row. `requeue_abandoned` judges an executor gone
as step jobs judge standbys (its row stale by the server's clock, gone, or its process gone
from this host), and in one transaction sets its row's `fenced_at` and requeues its tasks.
A fenced executor claims nothing (`JournalLocked`), replies nothing, and `held` tells it it
holds nothing: `held_in` runs at the start of each of its writer's batches, taking its
tasks ``FOR SHARE`` and its `standbys` row ``FOR KEY SHARE``. Every change of those tasks
(a cancel, a patch, a requeue, a clear) waits for a batch in flight, which commits first;
the fence locks the row ``FOR UPDATE`` first, so it waits too, and a batch after it sees
it. The row is only key-share-locked so that the executor's own heartbeat (an UPDATE of
its `seen_at`) does not wait for its batches. An executor frozen inside a batch holds those
locks: its writer's connection wants an ``idle_in_transaction_session_timeout``.

Connections, the statements shared with `step_jobs` and the check of text (a NUL in plain
text or a lone surrogate anywhere is a `ValueError` before anything is sent) are
`offered.OfferedTable`'s. The `*_in` methods run on a caller's connection inside its open
transaction: their psycopg errors are the caller's to translate, as its batch's are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import JournalError, JournalLocked
from ..liveness import HOST
from ..records import RunTask, RunTaskAnswer, RunTaskOffer, RunTaskReply
from .connection import RUN_TASKS_CHANNEL, load_psycopg, reason, refused
from .daemon_rows import FRESH_STANDBY, OWNER_NOT_FENCED, SERVER_NOW_US, standby_alive
from .executor_writer import EXECUTOR_NAME
from .offered import OfferedTable, fits, json_object

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)

_OFFER = (
    "INSERT INTO run_tasks (offered_by, offered_at, run_id, digest, request, state, run_row)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
# The executor's own row, key-share-locked: a fence (which locks the row FOR UPDATE first)
# waits for this transaction, its heartbeat (an UPDATE of `seen_at`) does not.
_STANDBY = "SELECT fenced_at FROM standbys WHERE token = %s FOR KEY SHARE"
_LOCK_GONE = "SELECT token FROM standbys WHERE token = ANY(%s) ORDER BY token FOR UPDATE"
_FENCE = "UPDATE standbys SET fenced_at = %s WHERE token = ANY(%s) AND fenced_at IS NULL"
# An executor's own row: enlisted under a new token each time (a row fenced or deleted is
# never written back: the fence stays), renewed by its loop, deleted when it stops.
# Not for a standby fenced (judged gone by the active daemon): the same process, its
# executor's writes would be refused (`executor_writer._MARK`).
_ENLIST = (
    "INSERT INTO standbys (token, pid, host, started_at, seen_at, executes_for)"
    f" SELECT %s, %s, %s, {SERVER_NOW_US}, {SERVER_NOW_US}, e.executes_for"
    f" FROM (SELECT %s::text AS executes_for) e WHERE {OWNER_NOT_FENCED}"
)
_RENEW = (
    f"UPDATE standbys e SET seen_at = {SERVER_NOW_US}"
    " WHERE e.token = %s AND e.fenced_at IS NULL AND e.executes_for IS NOT NULL"
    f" AND {OWNER_NOT_FENCED}"
)
_LEAVE = "DELETE FROM standbys WHERE token = %s"
_EXECUTORS = (
    "SELECT pid, host FROM standbys e"
    f" WHERE e.executes_for IS NOT NULL AND e.fenced_at IS NULL AND {FRESH_STANDBY}"
    f" AND {OWNER_NOT_FENCED}"
)
_CUT_OFF = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()"
)
_DROP_ABANDONED = (
    "DELETE FROM run_tasks WHERE offered_by = %s AND claimed_by = ANY(%s) AND reply IS NULL"
    " RETURNING id"
)
_OTHERS_CLAIMERS = (
    "SELECT DISTINCT claimed_by FROM run_tasks WHERE offered_by <> %s AND claimed_by IS NOT NULL"
)
_OPEN_PATCHES = (
    "SELECT patches FROM run_tasks WHERE id = %s AND reply IS NULL AND cancelled = 0 FOR UPDATE"
)
_SET_PATCHES = "UPDATE run_tasks SET patches = %s WHERE id = %s"
# Open tasks of live daemons whose file this executor has, oldest first; locked rows
# skipped. Their patches are handed over with the claim (and cleared).
_CLAIM = (
    "UPDATE run_tasks t SET claimed_by = %s, claimed_at = %s, patches = NULL"
    " FROM (SELECT r.id, r.patches FROM run_tasks r JOIN daemons d ON d.id = r.offered_by"
    " WHERE r.claimed_by IS NULL AND r.cancelled = 0 AND r.reply IS NULL"
    " AND r.digest = ANY(%s) AND d.fenced_at IS NULL AND d.stopped_at IS NULL"
    " ORDER BY r.id LIMIT %s FOR UPDATE OF r SKIP LOCKED) picked WHERE t.id = picked.id"
    " RETURNING t.id, t.run_row, t.run_id, t.digest, t.request, t.state, picked.patches,"
    " t.attempts"
)
_TAKE_PATCHES = (
    "WITH old AS (SELECT id, patches FROM run_tasks WHERE id = ANY(%s) AND claimed_by = %s"
    " AND patches IS NOT NULL FOR UPDATE)"
    " UPDATE run_tasks t SET patches = NULL FROM old WHERE t.id = old.id"
    " RETURNING old.id, old.patches"
)
_HELD = (
    "SELECT id, attempts FROM run_tasks WHERE id = ANY(%s) AND claimed_by = %s"
    " AND cancelled = 0 AND reply IS NULL FOR SHARE"
)
_REPLY = (
    "UPDATE run_tasks SET reply = %s, replied_at = %s"
    " WHERE id = %s AND claimed_by = %s AND attempts = %s AND reply IS NULL"
)


class PostgresRunTasks(OfferedTable):
    """`RunTasks` on a PostgreSQL journal: the coordinator's side, then an executor's."""

    TABLE = "run_tasks"
    CHANNEL = RUN_TASKS_CHANNEL
    NOUN = "run task"
    PLURAL = "run tasks"

    async def offer(
        self, tasks: Sequence[RunTaskOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        """The coordinator offers `tasks` (their ids, in order), fenced as step jobs are.

        `cancel`, `forget` and `clear` are `OfferedTable`'s. Text the journal cannot keep
        is a `ValueError`; a daemon fenced, stopped or past `epoch` offers nothing.
        """
        rows = [
            (*self._offered_row(daemon_id, now, t.run_id, t.digest, t.request, t.state), t.run_row)
            for t in tasks
        ]
        return await self._offer("offering run tasks", _OFFER, rows, daemon_id, epoch)

    async def patch(self, task_id: int, patch: dict[str, Any]) -> bool:
        """Merge `patch` into the task's `patches` (its keys win); False if it is not open.

        A task answered, cancelled or gone takes no patch. Patches something else wrote
        (not a JSON object) are logged and replaced by `patch`.

        Raises:
            ValueError: `patch` holds text the journal cannot keep.
        """
        self._json(patch, "patch")

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                row = await (await conn.execute(_OPEN_PATCHES, (task_id,))).fetchone()
                if row is None:
                    return False
                before = json_object(row[0])
                if before is None and row[0] is not None:
                    _log.warning("%s: replaced", self._corrupt(task_id, "patch"))
                merged = self._json({**(before or {}), **patch}, "patch")
                await conn.execute(_SET_PATCHES, (merged, task_id))
                await self._notify(conn)
            return True

        return await self._run("patching a run task", work)

    async def take_replies(self, ids: Collection[int]) -> list[RunTaskReply]:
        """The replies of those of `ids` answered, by id; their rows deleted.

        A reply something else wrote is ``{"crashed": ...}`` saying so.
        """
        return [RunTaskReply(i, reply) for i, reply in await self._take(ids)]

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        """Fence the executors of `daemon_id`'s tasks judged gone; requeue their tasks.

        Gone: its `standbys` row stale by the server's clock, fenced, or gone, or its
        process gone from this host. Its row gets `fenced_at = now` (waiting for a batch of
        it in flight: `held_in`), then its tasks are offered again, one attempt counted;
        at `max_attempts` answered ``{"crashed": "the daemons serving it stopped N
        times"}``. How many tasks moved.
        """

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                gone = await self._abandoned(conn, daemon_id)
                if not gone:
                    return 0
                await conn.execute(_LOCK_GONE, (gone,))  # waits for their batches in flight
                await conn.execute(_FENCE, (now, gone))
                return await self._requeue(
                    conn, daemon_id=daemon_id, tokens=gone, now=now, max_attempts=max_attempts
                )

        return await self._run("requeueing abandoned run tasks", work)

    async def abandon(self, *, daemon_id: int, now: int) -> list[int]:
        """Fence the executors of `daemon_id`'s tasks judged gone; delete their tasks.

        Judged as `requeue_abandoned` judges them. Their writers' connections are ended
        first (one frozen inside a batch holds its row's lock), then their rows are locked
        (a batch in flight commits first) and fenced, and their unanswered tasks deleted:
        the coordinator continues those runs from their last committed checkpoints. The
        ids of the tasks deleted. A task they answered stays, for `take_replies`.
        """

        async def judge(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            return await self._abandoned(conn, daemon_id)

        if not await self._run("looking for executors gone", judge):
            return []

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[int]:
            async with conn.transaction():
                gone = await self._abandoned(conn, daemon_id)
                if not gone:
                    return []
                await self._fence_tokens(conn, gone, now)
                rows = await (await conn.execute(_DROP_ABANDONED, (daemon_id, gone))).fetchall()
                if rows:
                    await self._notify(conn)
            return sorted(int(row[0]) for row in rows)

        await self._cut_off(await self._run("looking for executors gone", judge))
        return await self._run("abandoning run tasks", work)

    async def fence_others(self, *, daemon_id: int, now: int) -> int:
        """A new coordinator's start: fence every executor of another daemon's tasks.

        Then every task of other daemons is deleted (`clear`): those runs continue from
        their last committed checkpoints, and no batch of their old executors lands after
        this returns. How many executors were fenced.
        """

        async def claimers(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            rows = await (await conn.execute(_OTHERS_CLAIMERS, (daemon_id,))).fetchall()
            return sorted(str(row[0]) for row in rows)

        tokens = await self._run("looking for executors of other daemons", claimers)
        if tokens:
            await self._cut_off(tokens)

            async def work(conn: psycopg.AsyncConnection[Any]) -> None:
                async with conn.transaction():
                    await self._fence_tokens(conn, tokens, now)

            await self._run("fencing executors of other daemons", work)
        await self.clear(daemon_id=daemon_id)
        return len(tokens)

    async def executors(self) -> int:
        """How many executors are enlisted (their rows fresh by the server's clock)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            rows = await (await conn.execute(_EXECUTORS)).fetchall()
            return sum(1 for pid, host in rows if standby_alive(pid, host))

        return await self._run("counting executors", work)

    # An executor's side.

    async def enlist(self, *, token: str, executes_for: str) -> None:
        """Add an executor's row under `token` (a new one: a row is never written back).

        Raises:
            JournalLocked: The standby `executes_for` was fenced: it executes nothing more.
        """
        params = (self._text(token, "token"), os.getpid(), HOST, executes_for)
        if await self._statement("enlisting an executor", _ENLIST, params) != 1:
            raise JournalLocked(
                f"journal {self.location}: the active daemon fenced this standby (judged it"
                " gone); it executes no run segments"
            )

    async def renew(self, token: str) -> bool:
        """Renew the executor row of `token`; False if it was fenced or deleted."""
        return await self._statement("renewing an executor", _RENEW, (token,)) == 1

    async def leave(self, token: str) -> None:
        """Delete the executor row of `token` (it stops; its tasks are abandoned)."""
        await self._statement("an executor leaving", _LEAVE, (token,))

    async def claim(
        self, *, token: str, digests: Collection[str], limit: int, now: int
    ) -> list[RunTask]:
        """Claim up to `limit` open tasks of live daemons whose digest is one of `digests`.

        A task claimed comes with the patches merged for it so far (cleared from its row).

        Raises:
            JournalLocked: `token`'s `standbys` row is fenced or gone: it claims nothing
                (it stops its runs and registers again).
        """
        token = self._text(token, "token")
        wanted = [d for d in digests if fits(d)]

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[RunTask]:
            async with conn.transaction():
                self._refuse_fenced(token, await self._standby_fenced(conn, token))
                if not wanted or limit <= 0:
                    return []
                params = (token, now, wanted, limit)
                rows = await (await conn.execute(_CLAIM, params)).fetchall()
            return [
                RunTask(
                    int(i),
                    int(run_row),
                    run_id,
                    digest,
                    self._request_of(i, request),
                    state,
                    self._patches_of(i, patches),
                    attempts,
                )
                for i, run_row, run_id, digest, request, state, patches, attempts in sorted(rows)
            ]

        return await self._run("claiming run tasks", work)

    async def take_patches(self, ids: Collection[int], *, token: str) -> dict[int, dict[str, Any]]:
        """The patches of those of `ids` still claimed by `token`, cleared; by id.

        Nothing while `token` is fenced. Patches something else wrote are logged and left out.
        """
        token = self._text(token, "token")

        async def work(conn: psycopg.AsyncConnection[Any]) -> dict[int, dict[str, Any]]:
            async with conn.transaction():
                return await self.take_patches_in(conn, ids, token=token)

        return await self._run("taking run task patches", work)

    async def take_patches_in(
        self, conn: psycopg.AsyncConnection[Any], ids: Collection[int], *, token: str
    ) -> dict[int, dict[str, Any]]:
        """`take_patches` inside the caller's open transaction on `conn` (its batch's)."""
        _in_transaction(conn, "take_patches_in")
        if not ids or await self._standby_fenced(conn, token):
            return {}
        rows = await (await conn.execute(_TAKE_PATCHES, (list(ids), token))).fetchall()
        taken = {int(i): self._patches_of(i, text) for i, text in rows}
        return {i: patches for i, patches in sorted(taken.items()) if patches}

    async def held(self, claims: Mapping[int, int], *, token: str) -> set[int]:
        """Those of `claims` (task id: attempts claimed at) `token` still holds.

        Still claimed by it at that attempt, not cancelled nor answered, and `token`'s
        `standbys` row not fenced (else none). Standalone: the locks end with its own
        transaction; a batch calls `held_in` in its own.
        """
        token = self._text(token, "token")

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[int]:
            async with conn.transaction():
                return await self.held_in(conn, claims, token=token)

        return await self._run("checking held run tasks", work)

    async def held_in(
        self, conn: psycopg.AsyncConnection[Any], claims: Mapping[int, int], *, token: str
    ) -> set[int]:
        """`held` inside the caller's open transaction on `conn`, its rows share-locked.

        Until that transaction ends, a cancel, patch, requeue or clear of those tasks waits,
        and so does a fence of `token`: the batch commits first, or (called after the
        fence) holds nothing.
        """
        _in_transaction(conn, "held_in")
        if not claims or await self._standby_fenced(conn, token):
            return set()
        rows = await (await conn.execute(_HELD, (list(claims), token))).fetchall()
        return {int(i) for i, attempts in rows if claims.get(int(i)) == attempts}

    async def reply(
        self, task_id: int, *, token: str, attempts: int, reply: dict[str, Any], now: int
    ) -> bool:
        """Answer the task `task_id`; False when no longer this claim's or `token` is fenced.

        Raises:
            ValueError: `reply` holds text the journal cannot keep, or the server refused it.
        """
        answer = RunTaskAnswer(task_id, attempts, reply)
        answered, unkept = await self.reply_all([answer], token=token, now=now)
        if task_id in unkept:
            raise ValueError(unkept[task_id])
        return task_id in answered

    async def reply_all(
        self, answers: Sequence[RunTaskAnswer], *, token: str, now: int
    ) -> tuple[set[int], dict[int, str]]:
        """Write `answers` in one transaction, pipelined: the ids answered, those not kept.

        One transaction for every segment that ended meanwhile, not one per run: under
        load, an executor's replies were its bottleneck (a round trip and a commit each).
        A batch the server refuses for a value (`connection.refused`: a reply too long,
        say) is written again one reply at a time, so only the refused ones are left out:
        written again together, the batch would be refused for ever.
        """
        token = self._text(token, "token")
        texts: list[tuple[RunTaskAnswer, str]] = []
        unkept: dict[int, str] = {}
        for answer in answers:
            try:
                texts.append((answer, self._json(answer.reply, "reply")))
            except ValueError as exc:
                unkept[answer.id] = str(exc)
        if not texts:
            return set(), unkept
        try:
            return await self._replies(texts, token, now), unkept
        except ValueError as exc:
            if len(texts) == 1:
                unkept[texts[0][0].id] = str(exc)
                return set(), unkept
        answered: set[int] = set()
        for each in texts:
            try:
                answered |= await self._replies([each], token, now)
            except ValueError as exc:
                unkept[each[0].id] = str(exc)
        return answered, unkept

    async def _replies(
        self, texts: list[tuple[RunTaskAnswer, str]], token: str, now: int
    ) -> set[int]:
        """`reply_all`'s transaction; `ValueError` if the server refused one of the values."""
        pg = load_psycopg()

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[int]:
            try:
                async with conn.transaction():
                    if await self._standby_fenced(conn, token):
                        return set()
                    async with conn.pipeline():
                        cursors = [
                            (
                                answer.id,
                                await conn.execute(
                                    _REPLY, (text, now, answer.id, token, answer.attempts)
                                ),
                            )
                            for answer, text in texts
                        ]
                    answered = {i for i, cursor in cursors if cursor.rowcount == 1}
                    if answered:
                        await self._notify(conn)
                    return answered
            except pg.Error as exc:
                if refused(exc):
                    raise ValueError(f"a run task's reply cannot be kept: {reason(exc)}") from None
                raise

        return await self._run("replying to run tasks", work)

    async def reply_in(
        self,
        conn: psycopg.AsyncConnection[Any],
        task_id: int,
        *,
        token: str,
        attempts: int,
        reply: str,
        now: int,
    ) -> bool:
        """`reply` inside the caller's open transaction on `conn` (the last checkpoint's).

        `reply` is the JSON text `reply_text` made of the reply, checked beforehand.
        """
        _in_transaction(conn, "reply_in")
        if await self._standby_fenced(conn, token):
            return False
        params = (reply, now, task_id, token, attempts)
        if (await conn.execute(_REPLY, params)).rowcount != 1:
            return False
        await self._notify(conn)
        return True

    def reply_text(self, reply: dict[str, Any]) -> str:
        """`reply` as the text `reply_in` writes (`ValueError` if the journal cannot keep it)."""
        return self._json(reply, "reply")

    # Helpers.

    async def _fence_tokens(
        self, conn: psycopg.AsyncConnection[Any], tokens: list[str], now: int
    ) -> None:
        """Lock `tokens`' rows (waiting for their batches in flight) and fence them."""
        await conn.execute(_LOCK_GONE, (tokens,))
        await conn.execute(_FENCE, (now, tokens))

    async def _cut_off(self, tokens: list[str]) -> None:
        """End the writer connections of the executors `tokens` (best effort: a right)."""
        if not tokens:
            return
        names = [EXECUTOR_NAME.format(token=token) for token in tokens]
        try:
            await self._statement("ending stale executors' connections", _CUT_OFF, (names,))
        except JournalError as exc:  # no right to: the fence waits for their locks
            _log.warning("%s", exc)

    async def _standby_fenced(self, conn: psycopg.AsyncConnection[Any], token: str) -> bool:
        """Whether `token`'s `standbys` row is fenced or gone; the row share-locked."""
        row = await (await conn.execute(_STANDBY, (token,))).fetchone()
        return row is None or row[0] is not None

    def _refuse_fenced(self, token: str, fenced: bool) -> None:
        if fenced:
            raise JournalLocked(
                f"journal {self.location}: standby {token} was fenced (judged gone) or is not"
                " registered; it claims no run tasks (stop its runs and register again)"
            )

    def _patches_of(self, task_id: int, text: str | None) -> dict[str, Any]:
        """Patches as written (none: empty); ones something else wrote are logged, left out."""
        if text is None:
            return {}
        value = json_object(text)
        if value is None:
            _log.warning("%s: left out", self._corrupt(task_id, "patch"))
            return {}
        return value


def _in_transaction(conn: psycopg.AsyncConnection[Any], what: str) -> None:
    """Refuse a call on a connection outside a transaction: its locks would end at once."""
    status = conn.info.transaction_status
    if status != load_psycopg().pq.TransactionStatus.INTRANS:
        raise RuntimeError(f"run tasks: {what} runs inside an open transaction (found {status!r})")

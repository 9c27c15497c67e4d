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

The connections, the statements shared with `run_tasks` and the check of text before
anything is sent are `offered.OfferedTable`'s.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from ..records import StepJob, StepOffer, StepReply
from .connection import STEP_JOBS_CHANNEL, load_psycopg, reason, refused
from .daemon_rows import FRESH_STANDBY, standby_alive
from .offered import OfferedTable, fits

if TYPE_CHECKING:
    import psycopg

_OFFER = (
    "INSERT INTO step_jobs (offered_by, offered_at, run_id, digest, request, state)"
    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
)
_PRESENT = "SELECT id FROM step_jobs WHERE id = ANY(%s)"
_FORGET_STRAYS = (
    "DELETE FROM step_jobs WHERE offered_by = %s AND offered_at < %s AND NOT (id = ANY(%s))"
)
_UNCLAIM_STRAYS = (
    "UPDATE step_jobs SET claimed_by = NULL, claimed_at = NULL"
    " WHERE claimed_by = %s AND reply IS NULL AND NOT (id = ANY(%s))"
)
_SERVERS = f"SELECT pid, host FROM standbys WHERE executes_for IS NULL AND {FRESH_STANDBY}"
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


class PostgresStepJobs(OfferedTable):
    """`StepJobs` on a PostgreSQL journal: a connection for queries, one listening."""

    TABLE = "step_jobs"
    CHANNEL = STEP_JOBS_CHANNEL
    NOUN = "step job"
    PLURAL = "step jobs"

    # The active daemon's side (`cancel`, `forget` and `clear` are `OfferedTable`'s).

    async def offer(
        self, offers: Sequence[StepOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        """Offer `offers` as daemon `daemon_id` of `epoch`: their jobs' ids, in order.

        Text the journal cannot keep is a `ValueError` (nothing offered); a daemon fenced,
        stopped or past `epoch` offers nothing (`JournalLocked`).
        """
        rows = [
            self._offered_row(daemon_id, now, o.run_id, o.digest, o.request, o.state)
            for o in offers
        ]
        return await self._offer("offering steps", _OFFER, rows, daemon_id, epoch)

    async def take_replies(self, ids: Collection[int]) -> list[StepReply]:
        """The replies of those of `ids` answered, by id; their rows deleted.

        A reply something else wrote is ``{"crashed": ...}`` saying so (its step fails).
        """
        return [StepReply(i, reply) for i, reply in await self._take(ids)]

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        """Offer again the jobs of `daemon_id` whose standby stopped; how many moved.

        A standby stopped when its `standbys` row is stale by the server's clock, fenced, or
        gone, or its process is gone from this host. A job reaching `max_attempts` is
        answered ``{"crashed": "the daemons serving it stopped N times"}`` instead.
        """

        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                stopped = await self._abandoned(conn, daemon_id)
                if not stopped:
                    return 0
                return await self._requeue(
                    conn, daemon_id=daemon_id, tokens=stopped, now=now, max_attempts=max_attempts
                )

        return await self._run("requeueing abandoned steps", work)

    async def missing(self, ids: Collection[int]) -> set[int]:
        """Those of `ids` whose jobs are gone."""
        return await self._absent("looking for steps gone", _PRESENT, ids)

    async def forget_strays(self, *, daemon_id: int, keep: Collection[int], before: int) -> int:
        """Delete the jobs `daemon_id` offered before `before` but for `keep`; how many."""
        params = (daemon_id, before, list(keep))
        return await self._statement("forgetting stray steps", _FORGET_STRAYS, params)

    async def unclaim_strays(self, *, token: str, keep: Collection[int]) -> int:
        """Release the unanswered jobs `token` claimed but for `keep`; how many."""
        params = (self._text(token, "token"), list(keep))
        return await self._statement("releasing stray claims", _UNCLAIM_STRAYS, params)

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
        wanted = [d for d in digests if fits(d)]
        if not wanted or limit <= 0:
            return []
        params = (self._text(token, "token"), now, wanted, limit)

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
                it for its value (`connection.refused`: too long, say): written again, it
                would be refused again.
        """
        params = (self._json(reply, "reply"), now, job_id, self._text(token, "token"), attempts)
        pg = load_psycopg()

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            try:
                async with conn.transaction():
                    cursor = await conn.execute(_REPLY, params)
                    if cursor.rowcount != 1:
                        return False
                    await self._notify(conn)
            except pg.Error as exc:
                if refused(exc):
                    raise ValueError(f"a step job's reply cannot be kept: {reason(exc)}") from None
                raise
            return True

        return await self._run("replying to a step", work)

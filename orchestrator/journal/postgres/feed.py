"""The change feed of a PostgreSQL journal: LISTEN/NOTIFY, with a polling fallback.

Every commit of a writer ends with ``pg_notify('orchestrator', '')`` (delivered at
COMMIT, never for a rollback). A listener connection of its own (autocommit, ``LISTEN``)
bumps a local counter for each notification, so `ChangeFeed.data_version` moves as soon
as a commit lands, with no round trip: pollers call it many times a second.

A notification can be lost (the listener's connection drops, the server restarts), so at
most every `POLL_SECONDS` `data_version` also polls the journal: the last ids of the
timeline, events and inbox, and the server's transaction horizon (which moves with every
write transaction that ended, run updates included). A change there bumps the counter
too: a refresh is late by one poll at worst, never lost. A poll that finds nothing new
costs one round trip a second.

The listener is a task this feed owns: started by the first `data_version`, stopped by
`close`. When its connection fails it reconnects after a pause doubling from
`RETRY_SECONDS`' first value to its second; each (re)connection bumps the counter once,
since what was committed while it was away is not known.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ...errors import JournalError
from .connection import NOTIFY_CHANNEL, connect, load_psycopg

if TYPE_CHECKING:
    import psycopg

POLL_SECONDS = 1.0
RETRY_SECONDS = (0.1, 5.0)

# One round trip: what moves when another connection commits.
POLL_SQL = (
    "SELECT (SELECT max(id) FROM timeline), (SELECT max(id) FROM events),"
    " (SELECT max(id) FROM inbox), pg_snapshot_xmax(pg_current_snapshot())::text"
)


class ChangeFeed:
    """`data_version` for one PostgreSQL journal: a listener's counter, a poll's fallback."""

    def __init__(
        self,
        url: str,
        poll: Callable[[], Awaitable[tuple[Any, ...]]],
        *,
        poll_seconds: float = POLL_SECONDS,
        retry_seconds: tuple[float, float] = RETRY_SECONDS,
    ) -> None:
        self._url = url
        self._poll = poll
        self._poll_seconds = poll_seconds
        self._retry = retry_seconds
        # Invariant: only grows; bumped by each notification, each (re)connection of the
        # listener and each poll that saw something new.
        self._version = 0
        self._seen: tuple[Any, ...] | None = None
        self._polled_at: float | None = None
        self._listener: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        """Whether the listener's connection is up and listening now."""
        return self._conn is not None

    @property
    def listener_pid(self) -> int | None:
        """The server process of the listener's connection (None while it is down)."""
        return None if self._conn is None else int(self._conn.info.backend_pid)

    async def data_version(self) -> int:
        """A value that changes whenever a commit lands: no round trip, but a poll a second."""
        if self._listener is None and not self._closed:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="journal-listener"
            )
        now = time.monotonic()
        if self._polled_at is None or now - self._polled_at >= self._poll_seconds:
            seen = tuple(await self._poll())
            # Only a poll that answered counts: after a failed one the next call polls
            # again, so a journal that is down keeps failing (no stale version in between).
            self._polled_at = now
            if self._seen is not None and seen != self._seen:
                self._version += 1
            self._seen = seen
        return self._version

    async def close(self) -> None:
        """Stop the listener and close its connection."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        """Listen until closed, reconnecting after a bounded, doubling pause."""
        pause = self._retry[0]
        while True:
            if await self._listen_once():
                pause = self._retry[0]  # it was up: the next failure starts over
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._retry[1])

    async def _listen_once(self) -> bool:
        """One connection's life: bump for each notification; whether it got to listen."""
        pg = load_psycopg()
        try:
            conn = await connect(self._url, autocommit=True)
        except JournalError:
            return False
        listened = False
        try:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._conn, listened = conn, True
            self._version += 1  # what was committed while no one listened is unknown
            async for _ in conn.notifies():
                self._version += 1
        except pg.Error:
            pass  # the connection failed: reconnect
        finally:
            self._conn = None
            await conn.close()
        return listened

"""An executor's writer: the journal writes of the run segments a standby executes.

A daemon standing by executes the run tasks it claims (`run_tasks.py`) and journals their
checkpoints, logs, timeline notes and outbox itself, with the same group commit as the
active daemon's writer (`PostgresWriter`: one transaction per batch, pipelined). Its fence
is its executor row in `standbys` instead of a `daemons` row. Each batch starts with

    UPDATE standbys SET wrote_at = $beat WHERE token = $me AND fenced_at IS NULL

and commits only if that found the row. The coordinator fences an executor it judges gone
(`PostgresRunTasks.abandon`) by locking the row ``FOR UPDATE`` and setting `fenced_at`,
after ending this writer's connection (named `EXECUTOR_NAME`: a frozen executor's open
batch would otherwise hold the row's lock as long as it is frozen). A batch in flight
commits before the fence; every batch after it finds no row and the writer stops
(`JournalLocked`). A row deleted (a registering daemon removes stale rows) fences as well:
an executor never writes its row back, it enlists again under a new token.

`wrote_at` is also how a writer that lost its connection mid-commit tells whether that
batch landed. The writer never migrates, registers or marks itself stopped; each batch
renews the row's `seen_at`, and so does its executor's own loop while it writes nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...errors import JournalLocked
from ..faults import FaultPoints
from ..protocol import Synchronous
from ..records import Opened
from .daemon_rows import OWNER_NOT_FENCED, SERVER_NOW_US
from .writer import PostgresWriter

if TYPE_CHECKING:
    import psycopg

# The application name of an executor's writer connection (`abandon` ends a stale one's).
EXECUTOR_NAME = "orchestrator-executor-{token}"
# It renews the row's `seen_at` too: an executor busy writing is alive, whatever its loop's
# renewal waits for (under load it queued behind replies, and executors were judged gone).
_MARK = (
    f"UPDATE standbys e SET wrote_at = %s, seen_at = {SERVER_NOW_US} WHERE e.token = %s"
    f" AND e.fenced_at IS NULL AND e.executes_for IS NOT NULL AND {OWNER_NOT_FENCED}"
    " RETURNING e.token"
)
_LANDED = "SELECT wrote_at FROM standbys WHERE token = %s"


class ExecutorWriter(PostgresWriter):
    """The writer of an executor's run segments, fenced by its row in `standbys`."""

    NAME = EXECUTOR_NAME

    def __init__(
        self,
        url: str,
        *,
        token: str,
        synchronous: Synchronous = "FULL",
        faults: FaultPoints | None = None,
    ) -> None:
        super().__init__(url, synchronous=synchronous, faults=faults)
        self._token = token

    async def open(self, *, standby: bool = False) -> Opened:
        """Connect (the journal is migrated and the executor's row enlisted already)."""
        del standby
        self._conn = await self._connect()
        self._renewed_at = time.monotonic()
        return Opened(max_run_row=0)

    async def mark_ready(self) -> None:
        """Nothing to mark: an executor has no `daemons` row."""

    async def _send_fence(
        self, conn: psycopg.AsyncConnection[Any], beat: int
    ) -> psycopg.AsyncCursor[Any]:
        check = conn.cursor()
        await check.execute(_MARK, (beat, self._token))
        return check

    def _fence_holds(self, row: Any) -> bool:
        return row is not None

    def _landed_query(self) -> tuple[str, tuple[Any, ...]]:
        return _LANDED, (self._token,)

    async def _heartbeat_alone(self) -> None:
        """None: the executor's loop renews its row while writes fail."""

    def _fenced(self) -> JournalLocked:
        return JournalLocked(
            f"journal {self.location}: the coordinator fenced this executor (judged it gone);"
            " its run segments stop"
        )

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

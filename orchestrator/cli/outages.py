"""Commands that follow a journal (`logs -f`, `invoke --wait`) outlast its server's restart.

A PostgreSQL server restarted under them (a failover, `pg_ctl restart`) makes their reads
fail for a second or two while the daemons ride it out (their writer waits up to 30 s).
A follower says so once on stderr and reads again, for as long as a daemon's writer
would wait; past that it gives up with the journal's error. SQLite never raises this.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import JournalUnreachable

T = TypeVar("T")

PATIENCE = 30.0  # seconds without an answer before giving up: a daemon's writer waits as long
RETRY_SECONDS = 0.5


class Outages:
    """Reads again while the journal cannot be reached, up to `patience` seconds in a row."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self._patience = patience
        self._since: float | None = None  # when the current outage began
        # When the last outage ended (monotonic): what a follower saw of the daemons before
        # it is old news (their heartbeats are renewed by their first batch after it).
        self.ended_at = float("-inf")

    async def read(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s result, called again while it raises `JournalUnreachable`."""
        while True:
            try:
                result = await call()
            except JournalUnreachable as exc:
                now = time.monotonic()
                if self._since is None:
                    self._since = now
                    print(
                        f"note: {exc}; trying again for {self._patience:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                elif now - self._since > self._patience:
                    raise
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if self._since is not None:
                self._since, self.ended_at = None, time.monotonic()
                print("note: the journal answers again", file=sys.stderr, flush=True)
            return result

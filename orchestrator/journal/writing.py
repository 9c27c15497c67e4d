"""What every backend's group-commit writer shares: its status, its retry pacing, futures.

`sqlite.writer.GroupCommitWriter` and `postgres.writer.PostgresWriter` batch and commit in
their own ways; what they report (`JournalWriter.backlog`, `failure`, `degraded`,
`lease_fresh`) and how they pace retries and log a degradation is the same, here.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import JournalError
from .liveness import STALE_AFTER_US
from .ops import Op

LAZY_FLUSH_SECONDS = 0.005
# A failing batch is tried again after RETRY_FIRST seconds, doubling up to RETRY_MAX.
RETRY_FIRST = 0.05
RETRY_MAX = 5.0
# How long `close` keeps retrying a failing batch before giving it up (and failing).
CLOSE_PATIENCE = 5.0
_log = logging.getLogger("orchestrator.journal")


class WriterStatus:
    """The status half of a `JournalWriter`: what is pending, why it stopped or degrades."""

    def __init__(self) -> None:
        self._pending: list[Op] = []
        self._failure: JournalError | None = None
        # Why writes fail now (None while they succeed), and since when (monotonic).
        self._degraded: str | None = None
        self._degraded_at = 0.0
        # Monotonic time of the last commit that refreshed the lease (or heartbeat).
        self._renewed_at = time.monotonic()

    @property
    def backlog(self) -> int:
        """Ops waiting for the next batch."""
        return len(self._pending)

    @property
    def failure(self) -> JournalError | None:
        """Why the writer stopped, if it did."""
        return self._failure

    @property
    def degraded(self) -> str | None:
        """Why writes are failing now (they are being retried), or None while they succeed."""
        return self._degraded

    def lease_fresh(self) -> bool:
        """Whether the lease was refreshed recently enough that no one can have taken it."""
        if self._failure is not None:
            return False
        return time.monotonic() - self._renewed_at < STALE_AFTER_US / 1_000_000

    def _degrade(self, reason: str) -> None:
        if self._degraded is None:
            self._degraded_at = time.monotonic()
        if reason != self._degraded:
            _log.error("journal writes failing: %s; retrying", reason)
        self._degraded = reason

    def _recover(self) -> None:
        if self._degraded is None:
            return
        self._degraded = None
        _log.warning("journal writes recovered after %.1f s", time.monotonic() - self._degraded_at)


def resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Settle a batch's future (once: a settled one stays as it is)."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # a waiter may be gone; the failure is kept in `failure`

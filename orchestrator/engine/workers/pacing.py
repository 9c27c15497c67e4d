"""How both sides of step jobs and run tasks pace their looks at the journal (`spread`, `serve`).

`news_or` waits for news of jobs or a wake-up in this process, never longer than asked;
`Backoff` spaces the tries while the journal cannot be reached. Neither reads a row.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class _News(Protocol):
    """A table of offered work whose notifications `news_or` waits for."""

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a polling bound
        """Until a notification, or `timeout` seconds."""


BACKOFF_FIRST = 0.5  # seconds before the first try again
BACKOFF_MAX = 5.0  # seconds between tries at most, doubling from the first


class Backoff:
    """Pauses between tries of a failing journal: doubling, bounded; reset when it answers."""

    def __init__(self) -> None:
        self.failures = 0  # in a row, before this pause

    def reset(self) -> None:
        """The journal answered: the next failure starts over."""
        self.failures = 0

    async def pause(self) -> None:
        """Wait before the next try, one failure more counted."""
        seconds = min(BACKOFF_MAX, BACKOFF_FIRST * 2**self.failures)
        self.failures += 1
        await asyncio.sleep(seconds)


async def news_or(event: asyncio.Event, table: _News, seconds: float) -> None:
    """Until `event` is set or news of `table` comes (at most `seconds`); `event` cleared."""
    if not event.is_set():
        news = asyncio.ensure_future(table.wait(seconds))
        woken = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((news, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            news.cancel()
            woken.cancel()
            await asyncio.gather(news, woken, return_exceptions=True)
    event.clear()

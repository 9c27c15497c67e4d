"""``orchestrator logs``: the journaled timeline entries of one run or of all, and following them.

One line an entry (time, short run id, kind, step, message), oldest first, with a failed
step's traceback under its line (``--json``: one object a line). ``-f`` then follows: it
asks the journal's change feed (one cheap ``data_version`` a poll) and reads rows only past
the last row id printed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from ..journal import JournalBackend, JournalQueries, LogEntry
from .outages import Outages
from .output import log_json_lines, log_lines
from .run_ids import SHOWN, resolved

# `-f` asks whether anything was committed (one cheap `data_version`) every FAST seconds
# after it printed, backing off by BACKOFF a quiet poll to SLOW: lines of a busy run print
# within a few tens of ms, and an idle follower polls no more often than before.
FAST_POLL, SLOW_POLL, BACKOFF = 0.02, 0.2, 1.5
POLL_SECONDS = SLOW_POLL  # how long a missing journal is waited for between looks
T = TypeVar("T")


async def print_logs(
    journal: JournalBackend,
    run_text: str | None,
    *,
    follow: bool,
    limit: int,
    out: Callable[[str], None],
    as_json: bool = False,
) -> None:
    """Print the last `limit` entries (of the run `run_text` names, or of all runs).

    With `follow`, keep printing new ones until cancelled (Ctrl-C); a journal that does
    not exist yet is waited for. Without it, a missing journal prints nothing. With
    `as_json`, one JSON object a line.
    """
    outages = Outages() if follow else None  # following, a server's restart is waited out

    async def exists() -> bool:
        return journal.exists()

    while not await _read(outages, exists):
        if not follow:
            return
        await asyncio.sleep(POLL_SECONDS)
    reader = await _read(outages, journal.open_reader)
    try:
        render = log_json_lines if as_json else log_lines
        await _print(
            reader,
            journal.location,
            run_text,
            follow=follow,
            limit=limit,
            out=out,
            render=render,
            outages=outages,
        )
    finally:
        await reader.close()


async def _print(
    reader: JournalQueries,
    location: str,
    run_text: str | None,
    *,
    follow: bool,
    limit: int,
    out: Callable[[str], None],
    render: Callable[[Sequence[LogEntry]], list[str]],
    outages: Outages | None,
) -> None:
    run_id = None
    if run_text is not None:
        run_id = resolved(run_text, await reader.match_runs(run_text, limit=SHOWN), location)
    last, version, batch, pause = 0, None, limit, SLOW_POLL
    while True:
        seen = await _read(outages, reader.data_version)
        pause = min(pause * BACKOFF, SLOW_POLL)
        if seen != version:
            version = seen
            read = partial(reader.log_entries, run_id=run_id, after=last, limit=batch)
            entries = await _read(outages, read)
            if entries:
                last, pause = entries[-1].id, FAST_POLL
                out("\n".join(render(entries)))
                sys.stdout.flush()
        if not follow:
            return
        batch = -1  # once following, every new entry
        await asyncio.sleep(pause)


async def _read(outages: Outages | None, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, through `outages` when following."""
    return await (outages.read(call) if outages is not None else call())

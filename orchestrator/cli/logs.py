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

from ..errors import JournalCorrupt
from ..journal import JournalBackend, JournalQueries, LogEntry
from .outages import Outages
from .output import log_json_lines, log_lines
from .run_ids import SHOWN, resolved

# `-f` asks whether anything was committed (one cheap `data_version`) every FAST seconds
# after it printed, backing off by BACKOFF a quiet poll to SLOW: lines of a busy run print
# within a few tens of ms, and an idle follower polls no more often than before.
FAST_POLL, SLOW_POLL, BACKOFF = 0.02, 0.2, 1.5
POLL_SECONDS = SLOW_POLL  # how long a missing journal is waited for between looks
# A journal made again under the followed name may be caught half made (its file there, its
# schema not yet): it is looked at again for this long before it is called no journal.
REMADE_PATIENCE = 10.0
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
    not exist yet is waited for, a server's restart waited out, and a journal deleted or
    replaced under its name followed anew. Without it, a missing journal prints nothing.
    With `as_json`, one JSON object a line.
    """
    render = log_json_lines if as_json else log_lines
    outages = Outages() if follow else None
    remade = False

    async def exists() -> bool:
        return journal.exists()

    while True:
        while not await _read(outages, exists):
            if not follow:
                return
            await asyncio.sleep(POLL_SECONDS)
        incarnation = journal.incarnation()
        opening = partial(_reopened, journal) if remade else journal.open_reader
        reader = await _read(outages, opening)
        try:
            await _print(
                reader,
                journal.location,
                run_text,
                follow=follow,
                limit=limit,
                out=out,
                render=render,
                outages=outages,
                same=partial(_same, journal, incarnation),
            )
            return
        except _Replaced:
            pass
        finally:
            await reader.close()
        # Deleted or replaced (a restore, a new journal): its reader would read the old
        # file for ever. Follow the journal now under that name, as if started anew.
        print(
            f"note: journal {journal.location} was deleted or replaced; following it anew",
            file=sys.stderr,
        )
        sys.stderr.flush()
        remade = True


async def _reopened(journal: JournalBackend) -> JournalQueries:
    """A reader of a journal made again under the followed name, once it is one.

    Raises:
        JournalCorrupt: After `REMADE_PATIENCE` seconds it is still no journal.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REMADE_PATIENCE
    while True:
        try:
            return await journal.open_reader()
        except JournalCorrupt:
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(POLL_SECONDS)


def _same(journal: JournalBackend, incarnation: object) -> bool:
    return journal.incarnation() == incarnation


class _Replaced(Exception):
    """The journal followed is no longer the file under its name."""


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
    same: Callable[[], bool],
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
        if not same():
            raise _Replaced


async def _read(outages: Outages | None, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, through `outages` when following."""
    return await (outages.read(call) if outages is not None else call())

"""`invoke --wait`: follow a run queued for the daemon until it settles, from another process.

Only the journal is read: the run's row once the daemon created it, the command's outcome
if the daemon refused it, and the lease to tell whether a daemon is there at all.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..journal import JournalBackend, JournalQueries
from ..records import FINAL_STATUSES, RunInfo, RunStatus
from .daemons import db_argument, other_daemon
from .outages import Outages

POLL_SECONDS = 0.05
# How long to wait for a daemon to appear before saying that none runs.
NO_DAEMON_SECONDS = 3.0


@dataclass(frozen=True)
class Outcome:
    """How a waited-for run ended up, as the exit code and a line for the user."""

    ok: bool
    message: str
    state: dict[str, Any] | None = None
    """The run's state where it settled (None if it never ran)."""


async def wait_for_run(journal: JournalBackend, run_id: str) -> Outcome:
    """Wait until run `run_id` completes or pauses (ok), or fails, ends or is refused."""
    outages = Outages()  # the run is queued: a server's restart is waited out
    reader = await outages.read(journal.open_reader)
    try:
        return await _follow(reader, run_id, journal.identity, outages)
    finally:
        await reader.close()


async def _follow(
    reader: JournalQueries, run_id: str, identity: str, outages: Outages | None = None
) -> Outcome:
    daemon_seen = time.monotonic()
    outages = outages or Outages()  # a server's restart is waited out, as the daemons do

    async def look() -> tuple[RunInfo | None, Outcome | None, bool]:
        """The run, how its command ended if the daemon refused it, whether a daemon runs."""
        info = await reader.get_run(run_id)
        if info is not None and (info.status in FINAL_STATUSES or info.status == RunStatus.PAUSED):
            return info, _settled(info), True
        if info is None:
            command = await reader.command_outcome(run_id)
            if command is not None and command.outcome not in (None, "ok"):
                refused = f"the daemon did not start run {run_id}: {command.outcome}"
                return info, Outcome(False, refused), True
        return info, None, await reader.daemon() is not None

    while True:
        info, outcome, daemon_runs = await outages.read(look)
        if outcome is not None:
            return outcome
        if daemon_runs:
            daemon_seen = time.monotonic()
        elif time.monotonic() - max(daemon_seen, outages.ended_at) > NO_DAEMON_SECONDS:
            return Outcome(False, _no_daemon(reader.location, identity, run_id, info))
        await asyncio.sleep(POLL_SECONDS)


def _no_daemon(location: str, identity: str, run_id: str, info: RunInfo | None) -> str:
    where = RunStatus.QUEUED if info is None else info.status
    said = f"no daemon is running on journal {location}: run {run_id} is {where}"
    elsewhere = other_daemon(identity)
    if elsewhere is not None:
        return f"{said} there, but {elsewhere}"
    db = db_argument(location, identity)
    return f"{said} and continues when `orchestrator up DIR --db {db}` runs"


def _settled(info: RunInfo) -> Outcome:
    if info.status in (RunStatus.COMPLETED, RunStatus.PAUSED):
        step = f" in step {info.step}" if info.status == RunStatus.PAUSED and info.step else ""
        return Outcome(True, f"run {info.run_id} {info.status}{step}", info.state)
    code = f" [{info.error_code}]" if info.error_code else ""
    return Outcome(False, f"run {info.run_id} {info.status}: {info.error or ''}{code}", info.state)

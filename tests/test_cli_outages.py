"""`invoke --wait` through a journal server's outage (`cli/outages.py`), on a scripted reader.

The reader answers as a PostgreSQL journal does while its server restarts: unreachable a
while, then the daemon's heartbeat still old (it is renewed by the daemon's next batch),
then the daemon live again and the run completed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.cli import invoking, outages
from orchestrator.errors import JournalUnreachable
from orchestrator.records import RunInfo, RunStatus


class RestartingJournal:
    """Reads of a journal whose server is down for `down` reads, then back."""

    location = "database d on h:5432 as u"

    def __init__(self, down: int) -> None:
        self.down = down
        self.daemon_reads = 0

    async def get_run(self, run_id: str) -> RunInfo | None:
        if self.down > 0:
            self.down -= 1
            raise JournalUnreachable("cannot connect to the PostgreSQL journal: shutting down")
        status = RunStatus.COMPLETED if self.daemon_reads >= 2 else RunStatus.RUNNING
        now = datetime.now(UTC)
        return RunInfo(run_id, "w", "go", status, None, {"n": 1}, None, "v", now, now)

    async def command_outcome(self, run_id: str) -> None:
        return None

    async def daemon(self) -> Any:
        self.daemon_reads += 1
        # The first read after the outage finds the daemon's heartbeat from before it.
        return None if self.daemon_reads == 1 else object()


async def test_invoke_wait_does_not_say_no_daemon_runs_right_after_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outage outlasted NO_DAEMON_SECONDS: the first look after it, finding the daemon's
    heartbeat old, ended the wait with "no daemon is running" while the daemon ran on."""
    monkeypatch.setattr(invoking, "NO_DAEMON_SECONDS", 0.2)
    monkeypatch.setattr(invoking, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(outages, "RETRY_SECONDS", 0.1)  # 3 failed reads: 0.3 s of outage
    outcome = await invoking._follow(RestartingJournal(down=3), "r1", "ident")  # type: ignore[arg-type]
    assert outcome.ok, outcome.message
    assert outcome.message == "run r1 completed"

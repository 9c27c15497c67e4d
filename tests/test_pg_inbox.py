"""Events written by many processes at once reach a daemon on a PostgreSQL journal once each.

PostgreSQL hands out an event's id when the row is inserted, not when it commits, so
concurrent emitters could commit ids out of order; the daemon's inbox takes events by id
(everything after the last one it took). `postgres/commands.py` makes such writes commit
one at a time (an advisory lock), and the inbox's cursor never moves back.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from procs import Daemon, query

from orchestrator.journal import open_journal
from orchestrator.journal.backends import migrate_journal

pytestmark = pytest.mark.slow


JOBS = """\
from orchestrator import Trigger, Workflow


async def work(state, ctx):
    return {**state, "worked": True}


workflow = Workflow(
    id="jobs",
    triggers={"requested": Trigger(event="job.requested")},
    pipelines={"requested": [work]},
)
"""


def test_events_emitted_at_once_on_many_connections_start_one_run_each(
    tmp_path: Path, pg_url: str
) -> None:
    """One daemon, six emitting threads: every event routed, each to one run.

    Without the lock, 8 of these 480 events were never routed while the daemon ran.
    """
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "jobs.py").write_text(JOBS)
    asyncio.run(migrate_journal(pg_url))
    threads, per_thread = 6, 80
    acked: dict[int, str] = {}

    def emit(first: int) -> None:
        commands = open_journal(pg_url).commands
        for job in range(first, first + per_thread):
            acked[job] = commands.emit_event("job.requested", {"job": job})

    with Daemon(flows, pg_url, log=tmp_path / "daemon.log") as daemon:
        daemon.start()
        emitters = [threading.Thread(target=emit, args=(n * per_thread,)) for n in range(threads)]
        for thread in emitters:
            thread.start()
        for thread in emitters:
            thread.join(timeout=120)
        assert len(acked) == threads * per_thread

        def settled() -> bool:
            (pending,) = query(
                pg_url,
                "SELECT (SELECT count(*) FROM events WHERE routed_at IS NULL)"
                " + (SELECT count(*) FROM runs WHERE status != 'completed')",
            )[0]
            return bool(pending == 0)

        try:
            daemon.wait_until(settled, 30, "every event routed, every run completed")
        except AssertionError as exc:
            unrouted = query(pg_url, "SELECT id FROM events WHERE routed_at IS NULL ORDER BY id")
            (last,) = query(pg_url, "SELECT max(id) FROM events WHERE routed_at IS NOT NULL")[0]
            raise AssertionError(
                f"events never routed: {unrouted[:10]} (last routed {last})"
            ) from exc
        assert daemon.stop() == 0, daemon.log()
    runs = query(
        pg_url,
        "SELECT er.event_id, count(*) FROM event_routes er GROUP BY er.event_id",
    )
    assert sorted(acked.values()) == sorted(event_id for event_id, _ in runs)
    twice = [(event_id, n) for event_id, n in runs if n != 1]
    assert not twice, f"events that started more than one run: {twice[:5]}"

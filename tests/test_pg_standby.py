"""Several daemons on one PostgreSQL journal: one active, the others standing by to take over.

Real daemons (``orchestrator up``) and runtimes on the suite's PostgreSQL: a second daemon
waits instead of failing; a standby takes over a daemon that stopped, was SIGKILLed or was
frozen past its heartbeat, and continues its runs; a frozen daemon that wakes up is fenced
and exits 3; a standby stops at once on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pilots import until
from procs import FREEZE_INSIDE_A_BATCH, ROOT, Daemon, cli, frozen_script, query
from test_tui import static_text

from orchestrator import Runtime, StepContext, Workflow
from orchestrator.journal.liveness import HOST
from orchestrator.testing import eventually, eventually_blocking
from tui.app import DashboardApp
from tui.live import JournalBanner

# A daemon's heartbeat is stale after 5 s: a frozen one is taken over after that, plus the
# server cutting off its open transaction (5 s); bounds for the waits below.
TAKE_OVER_TIMEOUT = 60.0

FLOW = """
from orchestrator import Trigger, Workflow


def ask(state, ctx):
    return ctx.pause(event="answer", where={"ticket": ("==", state["ticket"])}, into="answer")


async def answer(state, ctx):
    return {**state, "answered": True}


workflow = Workflow(
    id="ticket",
    triggers={"opened": Trigger(event="ticket.opened")},
    pipelines={"opened": [ask, answer]},
)
"""


def pg(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """One statement on the journal at `url` (its tables are in the ``orchestrator`` schema)."""
    return query(url, sql, params)


def daemon(folder: Path, url: str, name: str) -> Daemon:
    """A daemon with a log of its own (daemons on one folder would share one otherwise)."""
    started = Daemon(folder, url)  # type: ignore[arg-type]  # Daemon takes URLs as well
    started.log_path = folder.parent / f"{name}.daemon"
    return started


def active_and_standby(first: Daemon, second: Daemon) -> None:
    """Start `first`, then `second`, which stands by behind it."""
    first.start()
    second.start(ready=False)
    second.wait_until(partial(standing_by, second), 60, "the second daemon to stand by")


def standing_by(started: Daemon) -> bool:
    return "standby:" in started.log()


def statuses(url: str) -> dict[str, str]:
    return {
        str(run_id): str(status) for run_id, status in pg(url, "SELECT run_id, status FROM runs")
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "ticket.py").write_text(FLOW)
    return flows


def workflows(url: str) -> dict[str, Any]:
    """What `orchestrator workflows --json` shows."""
    done = cli("workflows", "--json", "--db", url)
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def emit(url: str, event_type: str, data: str) -> None:
    done = cli("emit", event_type, data, "--db", url)
    assert done.returncode == 0, done.stderr


def test_a_standby_takes_over_a_killed_daemon_and_its_paused_runs(
    folder: Path, pg_url: str
) -> None:
    with daemon(folder, pg_url, "a") as first, daemon(folder, pg_url, "b") as second:
        active_and_standby(first, second)
        assert f"pid {first.pid} on" in second.log()
        emit(pg_url, "ticket.opened", '{"ticket": 1}')
        first.wait_until(lambda: set(statuses(pg_url).values()) == {"paused"}, 60, "a pause")

        first.kill()
        second.wait_until(second.is_ready, TAKE_OVER_TIMEOUT, "the standby to take over")
        assert "fenced daemon" in second.log()
        emit(pg_url, "answer", '{"ticket": 1}')
        second.wait_until(
            lambda: set(statuses(pg_url).values()) == {"completed"}, 60, "the resumed run's end"
        )
        assert second.stop() == 0


def test_a_standby_stops_at_once_on_sigterm(folder: Path, pg_url: str) -> None:
    with daemon(folder, pg_url, "a") as first, daemon(folder, pg_url, "b") as second:
        active_and_standby(first, second)
        shown = workflows(pg_url)
        assert shown["daemon"]["pid"] == first.pid
        assert [(s["pid"], s["host"]) for s in shown["standbys"]] == [(second.pid, HOST)]
        assert (
            f"standby: pid {second.pid} on {HOST}, since" in cli("workflows", "--db", pg_url).stdout
        )
        assert second.stop(signal.SIGTERM, timeout=30) == 0
        assert "stopped cleanly" in second.log()
        assert workflows(pg_url)["standbys"] == []  # it said goodbye
        assert first.is_ready()  # the active daemon never noticed
        assert first.stop() == 0


def test_a_daemon_stopped_cleanly_hands_over_without_a_fence(folder: Path, pg_url: str) -> None:
    with daemon(folder, pg_url, "a") as first, daemon(folder, pg_url, "b") as second:
        active_and_standby(first, second)
        assert first.stop() == 0
        second.wait_until(second.is_ready, TAKE_OVER_TIMEOUT, "the standby to take over")
        assert "fenced daemon" not in second.log()
        fenced = pg(pg_url, "SELECT count(*) FROM daemons WHERE fenced_at IS NOT NULL")
        assert fenced == [(0,)]


FROZEN = (
    FREEZE_INSIDE_A_BATCH
    + """
from orchestrator import Runtime, StepContext, Workflow


async def step(state):
    return state


async def main() -> None:
    faults = FreezeInsideABatch()
    flow = Workflow(id="w", pipelines={"p": [step]})
    async with Runtime(sys.argv[1], workflows=[flow], faults=faults) as rt:
        print("ready", flush=True)
        faults.armed = True
        try:
            await rt.invoke("w", "p", {})
        except Exception as exc:
            print("refused", getattr(exc, "code", type(exc).__name__), flush=True)
        failure = await asyncio.wait_for(rt.failed(), 30)
        print("failure", failure.code, flush=True)


asyncio.run(main())
"""
)


async def test_a_daemon_frozen_inside_a_batch_is_fenced_and_its_batch_refused(
    tmp_path: Path, pg_url: str
) -> None:
    async with frozen_script(tmp_path, FROZEN, pg_url) as proc:
        # It stopped inside its batch's transaction, holding its daemon row's share lock.
        standby = Runtime(pg_url, standby=True)
        await asyncio.wait_for(standby.start(), TAKE_OVER_TIMEOUT)
        try:
            assert standby.failure is None
            runs = pg(pg_url, "SELECT count(*) FROM runs")
        finally:
            await standby.stop()
        os.kill(proc.pid, signal.SIGCONT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert runs == [(0,)]  # the frozen batch never committed
    assert b"refused JOURNAL_LOCKED" in out, (out, err)
    assert b"failure JOURNAL_LOCKED" in out, (out, err)
    assert pg(pg_url, "SELECT count(*) FROM runs") == [(0,)]  # nor after it woke up


IDLE_DAEMON = """
import asyncio, sys
from orchestrator import Runtime


async def main() -> None:
    async with Runtime(sys.argv[1]):
        print("ready", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
"""


async def test_a_daemon_frozen_inside_an_offer_is_cut_off_and_taken_over(
    tmp_path: Path, pg_url: str
) -> None:
    """An offer holds its daemon's row (FOR SHARE) in a session of its own, which the
    server's idle-in-transaction timeout does not end after a pipelined statement: the
    standby ends it as it ends the frozen writer's, or the fence would wait for good."""
    import psycopg

    from orchestrator.journal.postgres.connection import OFFERING_NAME

    script = tmp_path / "idle.py"
    script.write_text(textwrap.dedent(IDLE_DAEMON))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), pg_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    holder: psycopg.Connection[Any] | None = None
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        ((daemon_id,),) = pg(pg_url, "SELECT id FROM daemons WHERE fenced_at IS NULL")
        os.kill(proc.pid, signal.SIGSTOP)
        # Frozen inside an offer: its transaction named as offers name it, the row held.
        holder = psycopg.connect(pg_url)
        holder.execute(
            "SELECT set_config('application_name', %s, true) FROM orchestrator.daemons"
            " WHERE id = %s FOR SHARE",
            (OFFERING_NAME.format(daemon=daemon_id), daemon_id),
        )
        standby = Runtime(pg_url, standby=True)
        await asyncio.wait_for(standby.start(), TAKE_OVER_TIMEOUT)
        try:
            assert standby.failure is None
            fenced = pg(
                pg_url, "SELECT fenced_at IS NOT NULL FROM daemons WHERE id = ?", (daemon_id,)
            )
            assert fenced == [(True,)]
        finally:
            await standby.stop()
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")  # its session was ended
    finally:
        if holder is not None:
            holder.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_start_waits_while_another_runtime_runs_the_journal(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Workflow(id="w", pipelines={"p": [_pause, _done]})
    first = Runtime(pg_url, workflows=[flow])
    await first.start()
    try:
        paused = await first.invoke("w", "p", {})
        assert paused.status == "paused"
        run_id = paused.run_id
        second = Runtime(pg_url, workflows=[flow], standby=True)
        with caplog.at_level(logging.INFO, logger="orchestrator.journal"):
            starting = asyncio.create_task(second.start())
            await eventually(lambda: "standby:" in caplog.text, what="the standby line")
        assert not starting.done()
    finally:
        await first.stop()
    await asyncio.wait_for(starting, TAKE_OVER_TIMEOUT)
    try:
        await second.resume(run_id, {"answer": 42})
        result = await asyncio.wait_for(second.wait(run_id), 30)
        assert result.state == {"answer": 42, "done": True}
    finally:
        await second.stop()


def _pause(state: dict[str, object], ctx: StepContext) -> object:
    return ctx.pause(event="answer", into="answer")


def _done(state: dict[str, object]) -> dict[str, object]:
    return {**state, "done": True}


def test_standby_needs_a_shared_journal(tmp_path: Path, pg_url: str) -> None:
    with pytest.raises(ValueError, match="several daemons share"):
        Runtime(tmp_path / "j.db", standby=True)
    with pytest.raises(ValueError, match="several daemons share"):
        Runtime(pg_url, standby="yes")  # type: ignore[arg-type]


def test_the_standby_line_names_the_active_daemon_in_every_daemon_log(
    folder: Path, pg_url: str
) -> None:
    with daemon(folder, pg_url, "a") as first:
        first.start()
        third = [daemon(folder, pg_url, name) for name in ("b", "c")]
        try:
            for standby in third:
                standby.start(ready=False)
            for standby in third:
                standby.wait_until(partial(standing_by, standby), 60, "standing by")
            first.kill()
            # Exactly one of the two takes over; the other stands by again, behind it.
            eventually_blocking(
                lambda: any(s.is_ready() for s in third),
                what="one standby to take over",
                timeout=TAKE_OVER_TIMEOUT,
            )
            active = next(s for s in third if s.is_ready())
            other = next(s for s in third if s is not active)
            other.wait_until(
                lambda: f"pid {active.pid} on" in other.log(), 60, "the other to stand by again"
            )
            live = pg(
                pg_url,
                "SELECT count(*) FROM daemons WHERE fenced_at IS NULL AND stopped_at IS NULL",
            )
            assert live == [(1,)]
        finally:
            for standby in third:
                standby.kill()


def test_a_standby_outlives_a_lost_connection(folder: Path, pg_url: str) -> None:
    with daemon(folder, pg_url, "a") as first, daemon(folder, pg_url, "b") as second:
        active_and_standby(first, second)
        (token,) = pg(pg_url, "SELECT token FROM daemons WHERE stopped_at IS NULL")[0]
        # The standby's connection is the other writer connection of this database.
        ended = pg(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'orchestrator-writer-%%'"
            " AND application_name <> %s",
            (f"orchestrator-writer-{token}",),
        )
        assert ended == [(True,)]
        second.wait_until(lambda: "connected to journal" in second.log(), 60, "a new connection")
        assert first.stop() == 0
        second.wait_until(second.is_ready, TAKE_OVER_TIMEOUT, "the standby to take over")
        assert second.stop() == 0


async def test_the_dashboard_counts_the_daemons_standing_by(pg_url: str) -> None:
    async with Runtime(pg_url):
        standby = Runtime(pg_url, standby=True)
        waiting = asyncio.create_task(standby.start())
        app = DashboardApp(pg_url)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: "1 standing by" in banner(app), "the standby in the banner")
            assert "daemon pid" in banner(app)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await until(pilot, lambda: "standing by" not in banner(app), "the standby gone")


def banner(app: DashboardApp) -> str:
    return static_text(app.screen.query_one(JournalBanner))

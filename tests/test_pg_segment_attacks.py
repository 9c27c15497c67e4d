"""Attacks on run segments executed by the daemons standing by (real daemons, PostgreSQL).

Each test drives the daemons of `test_pg_run_segments` into a narrow window (a reply held
back by a row lock the test takes, a kill, a stop) and reads the journal: every run ends
once, where it should, and no pause, signal or step is lost.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import psycopg
import pytest
from postgres import Cluster
from procs import cli, query
from test_pg_run_segments import (
    PRELUDE,
    TAKE_OVER_TIMEOUT,
    continued_on,
    daemons,
    executed_by,
    finals,
    folder,
    open_gate,
    start_runs,
    started_again,
    starts,
)

__all__ = ["folder"]  # the fixture, shared

PAUSING_FLOW = (
    PRELUDE
    + """

async def arm(state, ctx):
    await started(state["n"], ctx)
    (MARKS / f"returned.{state['n']}").write_text("")
    return ctx.pause(event="paid", where={"n": ("==", state["n"])}, into="paid")


async def done(state):
    return {**state, "done": os.getpid()}


workflow = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [arm, done]})
"""
)


@contextmanager
def replies_held(url: str) -> Iterator[None]:
    """Lock every run task's row: an executor's reply (an UPDATE of its row) waits."""
    with psycopg.connect(url, options="-c search_path=orchestrator") as conn:
        conn.execute("SELECT id FROM run_tasks FOR UPDATE").fetchall()
        yield
        conn.rollback()


def run_ids(folder: Path, runs: list[int], pid: int) -> list[str]:
    return [(folder.parent / "marks" / f"{n}.{pid}").read_text() for n in runs]


def replying(folder: Path, url: str, runs: list[int]) -> bool | None:
    """Whether each of `runs` returned from its step, and a reply waits for the test's lock."""
    marks = folder.parent / "marks"
    if not all((marks / f"returned.{n}").exists() for n in runs):
        return None
    waiting = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ?",
        ("UPDATE run_tasks SET reply%",),
    )
    return True if waiting[0][0] >= 1 else None


def statuses(url: str, ids: list[str], among: set[str]) -> dict[str, str] | None:
    rows = dict(query(url, "SELECT run_id, status FROM runs WHERE run_id = ANY(?)", (ids,)))
    return rows if len(rows) == len(ids) and set(rows.values()) <= among else None


def test_a_pause_committed_by_an_executor_killed_before_its_reply_is_kept(
    folder: Path, pg_url: str
) -> None:
    (folder / "job.py").write_text(PAUSING_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        elsewhere = executed_by(started, standby)
        moved = run_ids(folder, elsewhere, standby.pid)
        with replies_held(pg_url):
            open_gate(folder)
            # Its steps return their pauses; its replies wait for the test's lock.
            standby.wait_until(partial(replying, folder, pg_url, elsewhere), 60, "a reply")
            standby.kill()
        # Judged gone, its runs continue here from their checkpoints: still paused.
        ended = active.wait_until(
            partial(statuses, pg_url, moved, {"paused", "completed"}),
            TAKE_OVER_TIMEOUT,
            "the killed executor's runs to pause again, or end",
        )
        assert set(ended.values()) == {"paused"}, ended
        for n in range(1, 7):
            paid = cli("emit", "paid", json.dumps({"n": n}), "--db", pg_url)
            assert paid.returncode == 0, paid.stderr
        final = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
    assert {status for status, _ in final.values()} == {"completed"}
    assert all(state["paid"] == {"n": n} for n, (_, state) in final.items())


LAST_STEP_FLOW = (
    PRELUDE
    + """

async def work(state, ctx):
    await started(state["n"], ctx)
    (MARKS / f"returned.{state['n']}").write_text("")
    return {**state, "ran": os.getpid()}


workflow = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [work]})
"""
)


def executor_backends(url: str) -> list[int]:
    """The server processes of the executors' writer connections."""
    rows = query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE ?",
        ("orchestrator-executor-%",),
    )
    return [int(pid) for (pid,) in rows]


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """Those server processes stopped (SIGSTOP): what they were sent waits for them."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def patch_taken(url: str, run_id: str, before: str) -> bool | None:
    """Whether the task of `run_id` was patched and its patches taken since `before` (xmin)."""
    rows = query(url, "SELECT xmin::text, patches FROM run_tasks WHERE run_id = ?", (run_id,))
    return True if rows and rows[0][0] != before and rows[0][1] is None else None


def test_an_abort_taken_while_the_segments_last_writes_commit_still_ends_the_run(
    folder: Path, pg_url: str
) -> None:
    (folder / "job.py").write_text(LAST_STEP_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby), ThreadPoolExecutor(1) as pool:
        started = start_runs(active, folder, pg_url, 4)
        n = executed_by(started, standby)[0]
        run_id = run_ids(folder, [n], standby.pid)[0]
        backends = executor_backends(pg_url)
        assert len(backends) == 1, backends
        with frozen(backends):
            # Its step returns; its segment's last writes wait for the frozen connection.
            open_gate(folder)
            returned = folder.parent / "marks" / f"returned.{n}"
            standby.wait_until(lambda: returned.exists() or None, 60, "the step's return")
            ((before,),) = query(
                pg_url, "SELECT xmin::text FROM run_tasks WHERE run_id = ?", (run_id,)
            )
            aborting = pool.submit(cli, "abort", run_id, "--db", pg_url)
            standby.wait_until(partial(patch_taken, pg_url, run_id, before), 60, "the abort taken")
        final = active.wait_until(partial(finals, pg_url), 60, "every run to end")
        assert aborting.result().returncode in (0, 1)
    assert final[n][0] in ("completed", "aborted"), final[n]
    assert {status for m, (status, _) in final.items() if m != n} == {"completed"}


def waiting_on_lock(url: str, statement: str) -> bool | None:
    """Whether a statement starting with `statement` waits for a lock."""
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ?",
        (statement + "%",),
    )
    return True if rows[0][0] >= 1 else None


def test_an_abort_racing_a_pause_elsewhere_aborts_the_run(folder: Path, pg_url: str) -> None:
    (folder / "job.py").write_text(PAUSING_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby), ThreadPoolExecutor(1) as pool:
        started = start_runs(active, folder, pg_url, 4)
        elsewhere = executed_by(started, standby)
        run_id = run_ids(folder, elsewhere[:1], standby.pid)[0]
        with replies_held(pg_url):
            open_gate(folder)
            standby.wait_until(partial(replying, folder, pg_url, elsewhere), 60, "a reply")
            aborting = pool.submit(cli, "abort", run_id, "--db", pg_url)
            # The abort's patch waits for the test's lock too, behind the reply.
            active.wait_until(
                partial(waiting_on_lock, pg_url, "SELECT patches FROM run_tasks"), 60, "the patch"
            )
        status = active.wait_until(
            lambda: statuses(pg_url, [run_id], {"aborted", "completed"}), 60, "the abort"
        )
        assert status == {run_id: "aborted"}
        assert aborting.result().returncode == 0, aborting.result().stderr
        for n in range(1, 5):
            paid = cli("emit", "paid", json.dumps({"n": n}), "--db", pg_url)
            assert paid.returncode == 0, paid.stderr
        final = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
    assert sorted(status for status, _ in final.values()) == ["aborted"] + ["completed"] * 3


THREE_STEP_FLOW = (
    PRELUDE
    + """

def first(state):
    return {**state, "first": state.get("first", []) + [os.getpid()]}


async def work(state, ctx):
    await started(state["n"], ctx)
    return {**state, "ran": state.get("ran", []) + [os.getpid()]}


async def done(state):
    return {**state, "done": os.getpid()}


workflow = Workflow(
    id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [first, work, done]}
)
"""
)


def test_a_standby_stopped_hands_its_runs_back_from_their_last_steps(
    folder: Path, pg_url: str
) -> None:
    (folder / "job.py").write_text(THREE_STEP_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        moved = executed_by(started, standby)
        assert standby.stop(signal.SIGTERM, timeout=30) == 0
        # Handed back, each runs the step it was in again here; its first step stays done.
        what = "the stopped standby's runs to start their step again here"
        final = continued_on(active, folder, pg_url, 6, moved, what)
    assert {status for status, _ in final.values()} == {"completed"}
    for n in moved:
        state = final[n][1]
        assert len(state["first"]) == 1 and state["ran"] == [active.pid], state


@pytest.mark.parametrize("gate_in_grace", [True, False], ids=["ending-in-grace", "cut-off"])
def test_a_coordinator_stopped_while_segments_run_elsewhere_ends_every_run_once(
    folder: Path, pg_url: str, gate_in_grace: bool
) -> None:
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        executed_by(started, standby)
        active.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        if gate_in_grace:
            active.wait_until(lambda: "running steps have" in active.log() or None, 30, "grace")
            open_gate(folder)
        assert active.proc.wait(timeout=60) == 0  # type: ignore[union-attr]
        standby.wait_until(standby.is_ready, 60, "the standby's take-over")
        if not gate_in_grace:
            open_gate(folder)
        final = standby.wait_until(partial(finals, pg_url), 60, "the runs to end")
        assert query(pg_url, "SELECT count(*) FROM runs") == [(6,)]
    assert {status for status, _ in final.values()} == {"completed"}, final
    for n, (_, state) in final.items():
        assert isinstance(state["ran"], list) and len(state["ran"]) == 1, (n, state)


def terminate(url: str, names: str) -> int:
    """End the server sessions whose application name is LIKE `names`; how many."""
    rows = query(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name LIKE ? AND pid <> pg_backend_pid()",
        (names,),
    )
    return int(rows[0][0])


@pytest.mark.parametrize("fault", ["server-restart", "executor-sessions-ended"])
def test_segments_survive_the_server_restarting_or_their_sessions_ending(
    folder: Path, own_cluster: Cluster, fault: str
) -> None:
    url = own_cluster.create_database("segments")
    with daemons(folder, url, 2) as (active, standby):
        started = start_runs(active, folder, url, 6)
        executed_by(started, standby)
        if fault == "server-restart":
            own_cluster.halt()
            own_cluster.resume()
        else:
            assert terminate(url, "orchestrator-executor-%") >= 1
        open_gate(folder)
        final = active.wait_until(partial(finals, url), 120, "the runs to end")
        assert query(url, "SELECT count(*) FROM runs") == [(6,)]
        logs = active.log() + standby.log()
    assert {status for status, _ in final.values()} == {"completed"}, final
    assert "Traceback" not in logs, logs
    for n, (_, state) in final.items():
        assert state["done"] in (active.pid, standby.pid), (n, state)


RETRY_SLEEP_FLOW = (
    PRELUDE
    + """
from orchestrator import Step


async def work(state, ctx):
    await started(state["n"], ctx)
    return {**state, "text": "\\u0000 é 😀 " + "x" * 2_000_000}


async def flaky(state, ctx):
    tries = MARKS / f"tries.{state['n']}.{uuid.uuid4().hex}"
    tries.write_text(str(os.getpid()))
    if len(list(MARKS.glob(f"tries.{state['n']}.*"))) == 1:
        await asyncio.sleep(60)  # the first attempt times out
    return {**state, "flaky": os.getpid()}


async def nap(state, ctx):
    return ctx.sleep(0.5)


async def done(state):
    return {**state, "done": os.getpid()}


workflow = Workflow(
    id="job",
    triggers={"go": Trigger(event="job")},
    pipelines={"go": [work, Step(flaky, retries=2, timeout=1, backoff=0), nap, done]},
)
"""
)


def test_retries_timeouts_sleeps_and_large_states_elsewhere(folder: Path, pg_url: str) -> None:
    (folder / "job.py").write_text(RETRY_SLEEP_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        executed_by(started, standby)
        open_gate(folder)
        final = active.wait_until(partial(finals, pg_url), 120, "the runs to end")
        tries = collections.Counter(
            p.name.split(".")[1] for p in (folder.parent / "marks").glob("tries.*")
        )
    assert {status for status, _ in final.values()} == {"completed"}, final
    assert all(tries[str(n)] == 2 for n in range(1, 7)), tries
    for n, (_, state) in final.items():
        assert state["text"] == "\u0000 é 😀 " + "x" * 2_000_000, n
        assert state["flaky"] in (active.pid, standby.pid) and state["done"] in (
            active.pid,
            standby.pid,
        )


def test_the_coordinator_and_an_executor_killed_together_every_run_ends_once(
    folder: Path, pg_url: str
) -> None:
    with daemons(folder, pg_url, 3) as (active, first, second):
        started = start_runs(active, folder, pg_url, 9)
        moved = executed_by(started, first)
        first.kill()
        active.kill()
        second.wait_until(second.is_ready, 60, "the last daemon's take-over")
        second.wait_until(
            lambda: True if all(starts(folder)[n] >= 2 for n in moved) else None,
            TAKE_OVER_TIMEOUT,
            "the killed executor's runs to start again",
        )
        open_gate(folder)
        final = second.wait_until(partial(finals, pg_url), 60, "the runs to end")
        assert query(pg_url, "SELECT count(*) FROM runs") == [(9,)]
    assert {status for status, _ in final.values()} == {"completed"}, final
    for n, (_, state) in final.items():
        assert isinstance(state["ran"], list) and len(state["ran"]) == 1, (n, state)
        assert state["done"] == second.pid, (n, state)  # the gate opened after the kills


@contextmanager
def executor_row_held(url: str, pid: int) -> Iterator[None]:
    """Key-share-lock the executor row of daemon `pid`: a fence of it (FOR UPDATE) waits."""
    with psycopg.connect(url, options="-c search_path=orchestrator") as conn:
        rows = conn.execute(
            "SELECT token FROM standbys WHERE executes_for IS NOT NULL AND pid = %s FOR KEY SHARE",
            (pid,),
        ).fetchall()
        assert len(rows) == 1, rows
        yield
        conn.rollback()


def test_a_new_coordinator_starts_no_recovered_run_before_the_old_executors_are_fenced(
    folder: Path, pg_url: str
) -> None:
    with daemons(folder, pg_url, 3) as (active, first, second):
        started = start_runs(active, folder, pg_url, 9)
        frozen_one, survivor = (
            (first, second)
            if any(pids == {first.pid} for pids in started.values())
            else (second, first)
        )
        moved = executed_by(started, frozen_one)
        with executor_row_held(pg_url, frozen_one.pid):
            os.kill(frozen_one.pid, signal.SIGSTOP)
            try:
                active.kill()
                # Its fence waits for the test's lock: the runs it executes must wait too.
                waiting = "recovered runs wait until the executors of the daemon before"
                seen = survivor.wait_until(
                    lambda: (
                        "waiting"
                        if waiting in survivor.log()
                        else "started"
                        if started_again(folder, range(1, 10), moved[:1], survivor.pid)
                        else None
                    ),
                    60,
                    "the recovered runs to wait for the fence, or to start",
                )
                assert seen == "waiting", "a run started again while its executor was not fenced"
            finally:
                os.kill(frozen_one.pid, signal.SIGCONT)
        what = "the fenced executor's runs to start again"
        final = continued_on(survivor, folder, pg_url, 9, moved, what)
    assert {status for status, _ in final.values()} == {"completed"}, final
    for n, (_, state) in final.items():
        assert state["ran"] == [survivor.pid], (n, state)

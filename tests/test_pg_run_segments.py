"""Whole run segments executed by the daemons standing by (real daemons, PostgreSQL).

An active daemon and standbys behind it share a journal. A workflow's first step (async:
it runs in the event loop of whichever daemon executes the segment) writes a mark naming
that daemon's pid and waits for a gate file; then the test kills, aborts or signals, opens
the gate, and reads the journal: every run ends once, where the test expects.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, cli, query

# A standby's row is stale 5 s after its last renewal; then its runs continue elsewhere.
TAKE_OVER_TIMEOUT = 60.0

# What every flow here starts with: a step calls `started` first, which marks the run as
# started in this daemon (`N.PID`, and one file per start: `N.PID.UUID`), then waits for
# the test's gate file.
PRELUDE = """
import asyncio
import os
import pathlib
import uuid

from orchestrator import Service, Trigger, Workflow

MARKS = pathlib.Path(__file__).resolve().parent.parent / "marks"


async def started(n, ctx):
    (MARKS / f"{n}.{os.getpid()}").write_text(ctx.run_id)
    (MARKS / f"{n}.{os.getpid()}.{uuid.uuid4().hex}").write_text(ctx.run_id)
    for _ in range(6000):
        if (MARKS / "gate").exists():
            return
        await asyncio.sleep(0.02)
"""

FLOW = (
    PRELUDE
    + """

async def work(state, ctx):
    await started(state["n"], ctx)
    return {**state, "ran": state.get("ran", []) + [os.getpid()]}


async def done(state):
    return {**state, "done": os.getpid()}


workflow = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [work, done]})
"""
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "job.py").write_text(FLOW)
    (tmp_path / "marks").mkdir()
    return flows


@contextmanager
def daemons(folder: Path, url: str, count: int) -> Iterator[list[Daemon]]:
    """An active daemon and `count - 1` standbys; once it counts them as executors."""
    with ExitStack() as stack:
        started: list[Daemon] = []
        for index in range(count):
            log = folder.parent / f"daemon-{index}.log"
            each = stack.enter_context(Daemon(folder, url, log=log))
            started.append(each.start(ready=index == 0))
        line = f"run segments: {count - 1} daemons standing by can execute them"
        started[0].wait_until(lambda: line in started[0].log(), 60, "executors counted")
        yield started


def emit(url: str, n: int) -> None:
    done = cli("emit", "job", json.dumps({"n": n}), "--db", url)
    assert done.returncode == 0, done.stderr


def started_on(folder: Path, runs: range) -> dict[int, set[int]] | None:
    """Run `n` -> the pids its first step started in, once each of `runs` started."""
    found: dict[int, set[int]] = {}
    for path in (folder.parent / "marks").iterdir():
        n, _, pid = path.name.partition(".")
        if n.isdigit() and pid.isdigit():
            found.setdefault(int(n), set()).add(int(pid))
    return found if all(n in found for n in runs) else None


def started_again(folder: Path, runs: range, which: Iterable[int], pid: int) -> bool | None:
    """Whether the first step of each of `which` started (again) in daemon `pid`."""
    found = started_on(folder, runs)
    return True if found is not None and all(pid in found[n] for n in which) else None


def has_status(url: str, run_id: str, status: str) -> bool | None:
    rows = query(url, "SELECT status FROM runs WHERE run_id = ?", (run_id,))
    return True if rows == [(status,)] else None


def starts(folder: Path) -> collections.Counter[int]:
    """How many times the first step of each run started."""
    names = [path.name.split(".") for path in (folder.parent / "marks").iterdir()]
    return collections.Counter(
        int(name[0]) for name in names if len(name) == 3 and name[0].isdigit()
    )


def start_runs(active: Daemon, folder: Path, url: str, count: int) -> dict[int, set[int]]:
    """Emit runs 1 to `count`; once each started its first step: run -> the pids it started in."""
    for n in range(1, count + 1):
        emit(url, n)
    return active.wait_until(partial(started_on, folder, range(1, count + 1)), 60, "the runs")


def executed_by(started: dict[int, set[int]], daemon: Daemon) -> list[int]:
    """The runs whose first step started in `daemon` only; at least one."""
    runs = [n for n, pids in started.items() if pids == {daemon.pid}]
    assert runs, f"no run started in daemon {daemon.pid}: {started}"
    return runs


def open_gate(folder: Path) -> None:
    (folder.parent / "marks" / "gate").write_text("go")


def finals(url: str) -> dict[int, tuple[str, dict[str, object]]] | None:
    """Run `n` -> (status, final state), once no run is unfinished."""
    rows = query(url, "SELECT run_id, status FROM runs")
    if not rows or any(status not in ("completed", "failed", "aborted") for _, status in rows):
        return None
    ended: dict[int, tuple[str, dict[str, object]]] = {}
    for run_id, status in rows:
        shown = cli("show", str(run_id), "--json", "--db", url)
        assert shown.returncode == 0, shown.stderr
        state = json.loads(shown.stdout)["state"]
        ended[int(state["n"])] = (str(status), state)
    return ended


def continued_on(
    daemon: Daemon, folder: Path, url: str, count: int, moved: Iterable[int], what: str
) -> dict[int, tuple[str, dict[str, Any]]]:
    """Runs `moved` (of 1..`count`) start their step again on `daemon`; then all end.

    The gate is opened once they started again: returns each run's final status and state.
    """
    daemon.wait_until(
        partial(started_again, folder, range(1, count + 1), moved, daemon.pid),
        TAKE_OVER_TIMEOUT,
        what,
    )
    open_gate(folder)
    ended: dict[int, tuple[str, dict[str, Any]]] = daemon.wait_until(
        partial(finals, url), 60, "the runs to end"
    )
    return ended


def test_runs_past_the_coordinators_share_execute_on_the_standby(folder: Path, pg_url: str) -> None:
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 10)
        where = [pids for _, pids in sorted(started.items())]
        assert all(len(pids) == 1 for pids in where)
        on_standby = sum(1 for pids in where if pids == {standby.pid})
        assert 1 <= on_standby <= 9, where  # both daemons execute runs
        assert all(pids <= {active.pid, standby.pid} for pids in where)
        open_gate(folder)
        ended = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
        assert query(pg_url, "SELECT count(*) FROM run_tasks") == [(0,)]
    assert sorted(ended) == list(range(1, 11))
    assert {status for status, _ in ended.values()} == {"completed"}
    for n, (_, state) in ended.items():
        assert state["ran"] == sorted(started[n]), n  # each step ran once
        assert state["done"] in (active.pid, standby.pid)
    elsewhere = [n for n, pids in started.items() if pids == {standby.pid}]
    run_id = (folder.parent / "marks" / f"{elsewhere[0]}.{standby.pid}").read_text()
    timeline = cli("show", run_id, "--db", pg_url).stdout
    assert f"executing on a daemon standing by: pid {standby.pid} on" in timeline


def test_a_killed_executors_runs_continue_on_the_coordinator(folder: Path, pg_url: str) -> None:
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        moved = executed_by(started, standby)
        standby.kill()
        # Its runs start their first step again, here, once it is judged gone.
        what = "the killed executor's runs to start again here"
        ended = continued_on(active, folder, pg_url, 6, moved, what)
        assert "its executor stopped or was judged gone" in active.log()
    assert {status for status, _ in ended.values()} == {"completed"}
    for n in moved:
        assert ended[n][1]["ran"] == [active.pid]  # the lost step's state never landed
        assert ended[n][1]["done"] == active.pid


def test_an_abort_stops_a_run_its_executor_runs(folder: Path, pg_url: str) -> None:
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 4)
        moved = executed_by(started, standby)[0]
        run_id = (folder.parent / "marks" / f"{moved}.{standby.pid}").read_text()
        aborted = cli("abort", run_id, "--db", pg_url)
        assert aborted.returncode == 0, aborted.stderr
        active.wait_until(partial(has_status, pg_url, run_id, "aborted"), 60, "the abort")
        signalled = next(n for n, pids in started.items() if pids == {standby.pid} and n != moved)
        other = (folder.parent / "marks" / f"{signalled}.{standby.pid}").read_text()
        sent = cli("signal", other, json.dumps({"extra": 7}), "--db", pg_url)
        assert sent.returncode == 0, sent.stderr
        active.wait_until(
            lambda: "run.signalled" in cli("show", other, "--db", pg_url).stdout or None,
            60,
            "the signal journaled",
        )
        open_gate(folder)
        ended = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
    assert ended[moved][0] == "aborted" and "ran" not in ended[moved][1]
    assert ended[signalled][0] == "completed"
    assert ended[signalled][1]["extra"] == 7 and ended[signalled][1]["ran"] == [standby.pid]


PAUSE_SERVICE_FLOW = (
    PRELUDE
    + """

async def arm(state, ctx):
    await started(state["n"], ctx)
    wait = ctx.pause_service.register(event="paid", where={"n": ("==", state["n"])})
    return ctx.pause(wait=wait, into="paid")


async def done(state):
    return {**state, "done": os.getpid()}


workflow = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [arm, done]})
"""
)


def test_a_step_registering_a_wait_ahead_is_handed_back_to_the_coordinator(
    folder: Path, pg_url: str
) -> None:
    (folder / "job.py").write_text(PAUSE_SERVICE_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        executed_by(started, standby)
        open_gate(folder)
        # Handed back, each runs its first step again on the coordinator.
        active.wait_until(
            partial(started_again, folder, range(1, 7), range(1, 7), active.pid),
            60,
            "every run's first step on the coordinator",
        )
        assert "registers waits ahead; its runs execute on the coordinator" in active.log()
        for n in range(1, 7):
            done = cli("emit", "paid", json.dumps({"n": n}), "--db", pg_url)
            assert done.returncode == 0, done.stderr
        ended = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
    assert {status for status, _ in ended.values()} == {"completed"}
    assert all(state["paid"] == {"n": n} for n, (_, state) in ended.items())
    assert os.getpid() not in {state["done"] for _, state in ended.values()}


def test_a_frozen_executors_runs_continue_and_its_late_writes_are_refused(
    folder: Path, pg_url: str
) -> None:
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        moved = executed_by(started, standby)
        os.kill(standby.pid, signal.SIGSTOP)
        try:
            what = "the frozen executor's runs to start again here"
            ended = continued_on(active, folder, pg_url, 6, moved, what)
        finally:
            os.kill(standby.pid, signal.SIGCONT)
        # Woken, its steps see the gate open and end: their checkpoints are refused.
        standby.wait_until(lambda: "fenced" in standby.log() or None, 60, "the fence seen")
        assert finals(pg_url) == ended
    assert {status for status, _ in ended.values()} == {"completed"}
    for n in moved:
        assert ended[n][1]["ran"] == [active.pid], n


def test_a_new_coordinator_fences_the_old_ones_executors_and_every_run_ends_once(
    folder: Path, pg_url: str
) -> None:
    with daemons(folder, pg_url, 3) as (active, first, second):
        started = start_runs(active, folder, pg_url, 9)
        assert any(pids <= {first.pid, second.pid} for pids in started.values()), started
        active.kill()
        survivors = (first, second)
        new = first.wait_until(
            lambda: next((d for d in survivors if d.is_ready()), None), 60, "a take-over"
        )
        # Every run starts its first step again: the old coordinator's tasks are cleared,
        # their executors fenced, the runs recovered from their checkpoints.
        new.wait_until(
            lambda: True if all(starts(folder)[n] >= 2 for n in range(1, 10)) else None,
            TAKE_OVER_TIMEOUT,
            "every run's first step started again",
        )
        open_gate(folder)
        ended = new.wait_until(partial(finals, pg_url), 60, "the runs to end")
    assert sorted(ended) == list(range(1, 10))
    assert {status for status, _ in ended.values()} == {"completed"}
    for _, state in ended.values():
        ran = state["ran"]
        assert isinstance(ran, list) and len(ran) == 1 and ran[0] in (first.pid, second.pid)


CHILDREN_FLOW = (
    PRELUDE
    + """

async def fan(state, ctx):
    n = state["n"]
    await started(n, ctx)
    ids = [ctx.start("child", "one", {"x": n * 10 + i}, key=f"{n}-{i}") for i in range(2)]
    return ctx.join(ids, into="children")


async def total(state):
    return {**state, "total": sum(c["state"]["y"] for c in state["children"])}


async def double(state):
    return {**state, "y": state["x"] * 2, "by": os.getpid()}


parent = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [fan, total]})
child = Workflow(id="child", pipelines={"one": [double]})
"""
)


def test_a_run_executed_elsewhere_starts_and_joins_child_runs(folder: Path, pg_url: str) -> None:
    (folder / "job.py").write_text(CHILDREN_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 6)
        executed_by(started, standby)
        open_gate(folder)
        active.wait_until(
            lambda: (
                True
                if query(pg_url, "SELECT count(*) FROM runs WHERE status = 'completed'") == [(18,)]
                else None
            ),
            60,
            "six parents and their twelve children to complete",
        )
        parents = {
            run_id: json.loads(cli("show", run_id, "--json", "--db", pg_url).stdout)["state"]
            for (run_id,) in query(pg_url, "SELECT run_id FROM runs WHERE workflow_id = 'job'")
        }
    assert sorted(state["total"] for state in parents.values()) == [
        (n * 10) * 2 + (n * 10 + 1) * 2 for n in range(1, 7)
    ]
    assert query(pg_url, "SELECT count(*) FROM runs") == [(18,)]  # each child started once


FAILING_FLOW = (
    PRELUDE
    + """

def opened(ctx):
    pid = os.getpid()
    ctx.on_cleanup(lambda: (MARKS / f"closed.{pid}.{uuid.uuid4().hex}").write_text("closed"))
    return {"by": pid}


async def work(state, ctx):
    conn = await ctx.use("conn")
    await started(state["n"], ctx)
    return {**state, "service_by": conn["by"]}


def shout(state):
    if state["n"] % 2:
        raise RuntimeError(f"card declined for order {state['n']}")
    return {**state, "shouted": os.getppid()}


workflow = Workflow(
    id="job",
    triggers={"go": Trigger(event="job")},
    pipelines={"go": [work, shout]},
    services=[Service("conn", opened, scope="run")],
)
"""
)


def test_a_run_failing_elsewhere_reports_its_error_as_one_failing_here(
    folder: Path, pg_url: str
) -> None:
    (folder / "job.py").write_text(FAILING_FLOW)
    with daemons(folder, pg_url, 2) as (active, standby):
        started = start_runs(active, folder, pg_url, 8)
        elsewhere = executed_by(started, standby)
        open_gate(folder)
        ended = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
        runs = {n: (folder.parent / "marks" / f"{n}.{min(started[n])}").read_text() for n in ended}
        shown = {n: cli("show", runs[n], "--db", pg_url).stdout for n in elsewhere}
    for n, (status, state) in ended.items():
        assert status == ("failed" if n % 2 else "completed"), n
        assert state["service_by"] == min(started[n])  # its run service was its executor's
        if n % 2 == 0 and n in elsewhere:
            assert state["shouted"] == standby.pid  # its isolated step: its executor's workers
    for n in elsewhere:
        if n % 2:
            assert f"card declined for order {n}" in shown[n]
            assert "Traceback" in shown[n] and "RuntimeError" in shown[n]
    closed = [p for p in (folder.parent / "marks").iterdir() if p.name.startswith("closed.")]
    assert sorted(int(p.name.split(".")[1]) for p in closed) == sorted(
        min(pids) for pids in started.values()
    )  # each run's service closed once, where it was made


def test_a_standby_with_another_version_of_the_file_executes_none_of_its_runs(
    folder: Path, tmp_path: Path, pg_url: str
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "job.py").write_text(FLOW + "\n# another version\n")
    with ExitStack() as stack:
        active = stack.enter_context(Daemon(folder, pg_url, log=tmp_path / "a.log")).start()
        standby = stack.enter_context(Daemon(other, pg_url, log=tmp_path / "b.log"))
        standby.start(ready=False)
        line = "run segments: 1 daemons standing by can execute them"
        active.wait_until(lambda: line in active.log() or None, 60, "the executor counted")
        started = start_runs(active, folder, pg_url, 4)
        open_gate(folder)
        ended = active.wait_until(partial(finals, pg_url), 60, "the runs to end")
    assert all(pids == {active.pid} for pids in started.values()), started
    assert {status for status, _ in ended.values()} == {"completed"}

"""Standby daemons run the isolated steps the active daemon offers (real daemons, PostgreSQL).

Each test starts an active daemon with one worker and standbys behind it. A workflow's
sync step (isolated, as `orchestrator up` runs sync steps) writes a mark naming the daemon
whose worker runs it (the worker's parent) and waits for a gate file; then the test kills,
freezes or aborts, opens the gate, and reads the journal: every run completes once, on the
daemon the test expects.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import pytest
from procs import Daemon, cli, query

# A standby's row is stale 5 s after its last renewal; then its steps are offered again.
TAKE_BACK_TIMEOUT = 60.0

FLOW = """
import os
import pathlib
import time

from orchestrator import Trigger, Workflow

MARKS = pathlib.Path(__file__).resolve().parent.parent / "marks"


def work(state):
    # A worker's parent is the daemon that lent it: the mark names who runs this step.
    (MARKS / f"{state['n']}.start").write_text(f"{os.getppid()} {os.getpid()}")
    deadline = time.monotonic() + 120
    while not (MARKS / "gate").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {**state, "daemon": os.getppid()}


async def done(state):
    return {**state, "done": True}


workflow = Workflow(id="job", triggers={"go": Trigger(event="job")}, pipelines={"go": [work, done]})
"""


def flows_folder(tmp_path: Path, flow: str) -> Path:
    """A workflows folder holding `flow` as ``job.py``, and beside it the steps' marks."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "job.py").write_text(flow)
    (tmp_path / "marks").mkdir()
    return flows


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return flows_folder(tmp_path, FLOW)


@contextmanager
def daemons(folder: Path, url: str, *workers: int) -> Iterator[list[Daemon]]:
    """An active daemon, then standbys behind it; `workers`: each one's worker processes.

    The test goes on once the active daemon counts its standbys as able to run steps.
    Whole runs stay on the active daemon (``--no-run-segments``): these tests are about
    the steps it offers (`step_jobs`); tests/test_pg_run_segments.py spreads runs.
    """
    with ExitStack() as stack:
        started: list[Daemon] = []
        for index, count in enumerate(workers):
            log = folder.parent / f"daemon-{index}.log"
            each = stack.enter_context(
                Daemon(folder, url, "--workers", str(count), "--no-run-segments", log=log)
            )
            started.append(each.start(ready=index == 0))
            if index:
                each.wait_until(partial(_standing_by, each), 60, "a standby")
        count = len(workers) - 1
        line = f"isolated steps: {count} daemons standing by can run them"
        started[0].wait_until(lambda: line in started[0].log(), 60, "standbys counted")
        yield started


def _standing_by(daemon: Daemon) -> bool:
    return "standby:" in daemon.log()


def emit(url: str, n: int) -> None:
    done = cli("emit", "job", json.dumps({"n": n}), "--db", url)
    assert done.returncode == 0, done.stderr


def mark(folder: Path, n: int) -> tuple[int, int] | None:
    """(daemon pid, worker pid) of the step of run `n`, once it started."""
    path = folder.parent / "marks" / f"{n}.start"
    try:
        daemon, worker = path.read_text().split()
    except (OSError, ValueError):
        return None
    return int(daemon), int(worker)


def marks(folder: Path, runs: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """The marks of `runs`, once each of their steps started."""
    found = [m for n in runs if (m := mark(folder, n)) is not None]
    return found if len(found) == len(runs) else None


def runs_on(folder: Path, n: int, pid: int) -> bool | None:
    """Whether the step of run `n` runs (or ran) in a worker of daemon `pid`."""
    found = mark(folder, n)
    return True if found is not None and found[0] == pid else None


def open_gate(folder: Path) -> None:
    (folder.parent / "marks" / "gate").write_text("go")


def finals(url: str) -> dict[int, tuple[str, dict[str, object]]]:
    """Run `n` -> (status, final state), for the runs that ended."""
    ended: dict[int, tuple[str, dict[str, object]]] = {}
    for run_id, status in query(url, "SELECT run_id, status FROM runs"):
        shown = cli("show", str(run_id), "--json", "--db", url)
        assert shown.returncode == 0, shown.stderr
        state = json.loads(shown.stdout)["state"]
        if status in ("completed", "failed", "aborted"):
            ended[int(state["n"])] = (str(status), state)
    return ended


def all_ended(url: str, count: int) -> dict[int, tuple[str, dict[str, object]]] | None:
    ended = finals(url)
    return ended if len(ended) == count else None


def second_step(active: Daemon, folder: Path, url: str) -> tuple[int, int]:
    """Run 1's step in the active daemon's worker, then run 2's: its (daemon, worker) pids."""
    emit(url, 1)
    active.wait_until(partial(mark, folder, 1), 60, "the first step")
    emit(url, 2)
    return active.wait_until(partial(mark, folder, 2), 60, "the second step")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_steps_past_the_active_daemons_share_run_on_the_standby(folder: Path, pg_url: str) -> None:
    with daemons(folder, pg_url, 1, 2) as (active, standby):
        for n in (1, 2, 3):
            emit(pg_url, n)
        started = active.wait_until(partial(marks, folder, (1, 2, 3)), 60, "three steps")
        ran_on = sorted(daemon for daemon, _ in started)
        # One step in the active daemon's only worker, two in the standby's.
        assert ran_on == sorted([active.pid, standby.pid, standby.pid])
        shown = cli("workflows", "--json", "--db", pg_url)
        assert [s["running"] for s in json.loads(shown.stdout)["standbys"]] == [2]
        text = cli("workflows", "--db", pg_url).stdout
        assert f"standby: pid {standby.pid} on" in text and ", running 2 steps" in text
        open_gate(folder)
        ended = active.wait_until(partial(all_ended, pg_url, 3), 60, "the runs to end")
    assert {n: status for n, (status, _) in ended.items()} == {
        1: "completed",
        2: "completed",
        3: "completed",
    }
    assert sorted(state["daemon"] for _, state in ended.values()) == ran_on  # type: ignore[type-var]
    assert all(state["done"] for _, state in ended.values())
    stored = query(pg_url, "SELECT count(*) FROM step_jobs")
    assert stored == [(0,)]  # every reply taken


def test_a_killed_standbys_step_runs_on_another_standby(folder: Path, pg_url: str) -> None:
    with daemons(folder, pg_url, 1, 1, 1) as (active, first, second):
        daemon, _ = second_step(active, folder, pg_url)
        assert daemon in (first.pid, second.pid)
        killed, other = (first, second) if daemon == first.pid else (second, first)
        killed.kill()
        active.wait_until(
            partial(runs_on, folder, 2, other.pid),
            TAKE_BACK_TIMEOUT,
            "the step offered again and run by the other standby",
        )
        open_gate(folder)
        ended = active.wait_until(partial(all_ended, pg_url, 2), 60, "the runs to end")
    assert ended[2][0] == "completed" and ended[2][1]["daemon"] == other.pid
    assert ended[1][1]["daemon"] == active.pid


def test_a_frozen_standbys_step_comes_back_and_its_late_reply_is_refused(
    folder: Path, pg_url: str
) -> None:
    with daemons(folder, pg_url, 2, 1) as (active, standby):
        daemon, _ = second_step(active, folder, pg_url)
        assert daemon == standby.pid
        os.kill(standby.pid, signal.SIGSTOP)
        try:
            # Its row goes stale; with no standby left the step runs in the active daemon.
            active.wait_until(
                partial(runs_on, folder, 2, active.pid),
                TAKE_BACK_TIMEOUT,
                "the step taken back",
            )
        finally:
            os.kill(standby.pid, signal.SIGCONT)
        open_gate(folder)  # the standby's worker returns too: its reply comes too late
        ended = active.wait_until(partial(all_ended, pg_url, 2), 60, "the runs to end")
        assert standby.proc is not None and standby.proc.poll() is None  # it stands by still
    assert ended[2][0] == "completed" and ended[2][1]["daemon"] == active.pid
    steps = query(
        pg_url,
        "SELECT count(*) FROM checkpoints WHERE step = 'work'",
    )
    assert steps == [(2,)]  # one checkpoint of `work` per run: the late reply changed nothing


def test_aborting_a_run_kills_the_standbys_worker_running_its_step(
    folder: Path, pg_url: str
) -> None:
    with daemons(folder, pg_url, 1, 1) as (active, standby):
        daemon, worker = second_step(active, folder, pg_url)
        assert daemon == standby.pid
        _, (second,) = query(pg_url, "SELECT run_id FROM runs ORDER BY id")  # emitted second
        aborted = cli("abort", str(second), "--db", pg_url)
        assert aborted.returncode == 0, aborted.stderr
        standby.wait_until(lambda: not alive(worker) or None, 60, "its worker killed")
        open_gate(folder)
        ended = active.wait_until(partial(all_ended, pg_url, 2), 60, "the runs to end")
    assert ended[2][0] == "aborted" and ended[1][0] == "completed"


def test_a_standby_where_the_file_does_not_load_leaves_its_steps_to_others(
    folder: Path, pg_url: str
) -> None:
    # The same file (the same digest) imports a helper that only the active daemon's
    # folder has, as a package missing on the standby's machine would be.
    text = FLOW.replace("import time\n", "import time\n\nimport _only_here  # noqa: F401\n", 1)
    (folder / "job.py").write_text(text)
    (folder / "_only_here.py").write_text("")
    elsewhere = folder.parent / "flows-b"
    elsewhere.mkdir()
    (elsewhere / "job.py").write_text(text)
    log = folder.parent / "standby.log"
    with (
        Daemon(folder, pg_url, "--workers", "1", log=folder.parent / "active.log") as active,
        Daemon(elsewhere, pg_url, "--workers", "1", log=log) as standby,
    ):
        active.start()
        standby.start(ready=False)
        standby.wait_until(lambda: "does not load here" in standby.log() or None, 60, "its load")
        assert "_only_here" in standby.log()
        counted = "isolated steps: 1 daemons standing by can run them"
        active.wait_until(lambda: counted in active.log() or None, 60, "the standby counted")
        emit(pg_url, 1)
        active.wait_until(partial(mark, folder, 1), 60, "the first step")
        emit(pg_url, 2)  # offered: the active daemon's one worker is busy
        unclaimed = "SELECT count(*) FROM step_jobs WHERE claimed_by IS NULL"
        active.wait_until(lambda: query(pg_url, unclaimed) == [(1,)] or None, 60, "the offer")
        open_gate(folder)  # the worker here is free: the step comes back
        ended = active.wait_until(partial(all_ended, pg_url, 2), 60, "the runs to end")
    assert [state["daemon"] for _, state in ended.values()] == [active.pid, active.pid]


def test_a_standby_with_another_version_of_the_file_never_runs_its_steps(
    folder: Path, pg_url: str
) -> None:
    elsewhere = folder.parent / "flows-b"
    elsewhere.mkdir()
    (elsewhere / "job.py").write_text(FLOW + "\n# another version of the file\n")
    with (
        Daemon(folder, pg_url, "--workers", "1", log=folder.parent / "active.log") as active,
        Daemon(elsewhere, pg_url, "--workers", "1", log=folder.parent / "standby.log") as standby,
    ):
        active.start()
        standby.start(ready=False)
        counted = "isolated steps: 1 daemons standing by can run them"
        active.wait_until(lambda: counted in active.log() or None, 60, "the standby counted")
        emit(pg_url, 1)
        active.wait_until(partial(mark, folder, 1), 60, "the first step")
        emit(pg_url, 2)  # offered: the active daemon's one worker is busy
        unclaimed = "SELECT count(*) FROM step_jobs WHERE claimed_by IS NULL"
        active.wait_until(lambda: query(pg_url, unclaimed) == [(1,)] or None, 60, "the offer")
        open_gate(folder)  # the worker here is free: the step comes back
        ended = active.wait_until(partial(all_ended, pg_url, 2), 60, "the runs to end")
    assert [state["daemon"] for _, state in ended.values()] == [active.pid, active.pid]
    assert "step job" not in standby.log()

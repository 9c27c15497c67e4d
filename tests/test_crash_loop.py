"""The crash-loop guard, with real processes: a step that kills its process is not restarted
for ever, and commands written while no process runs are applied before recovery starts
anything.

The worker (`tests/crash_loop_worker.py`) runs a two-step workflow whose steps call
``os._exit(1)`` a chosen number of times; each start of a step is a line in ``DB.effects``,
so the test counts starts across processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import ROOT, Workers, cli, effects, query

WORKER = ROOT / "tests" / "crash_loop_worker.py"
ALWAYS = 1000  # crash this many times: for ever, as far as the guard is concerned

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(db: Path) -> Iterator[Workers]:
    with Workers(WORKER, db) as started:
        yield started


def run_worker(workers: Workers, *args: str) -> int:
    return workers.start(*args).wait(timeout=60)


def the_run(db: Path) -> tuple[str, str, str | None, str | None]:
    [run] = query(db, "SELECT run_id, status, error_code, error FROM runs")
    return run


def starts(db: Path, step: str) -> int:
    return sum(count for (_, name), count in effects(db).items() if name == step)


def test_a_step_that_keeps_killing_its_process_starts_1_plus_3_times(
    db: Path, workers: Workers
) -> None:
    data = json.dumps({"crash": {"boom": ALWAYS}})
    exits = [run_worker(workers, data) for _ in range(4)]
    assert exits == [1, 1, 1, 1], workers.stderr()
    assert starts(db, "boom") == 4
    assert the_run(db)[1] == "running"

    assert run_worker(workers) == 0, workers.stderr()  # the 5th start-up fails the run
    run_id, status, code, error = the_run(db)
    assert (status, code) == ("failed", "CRASH_LOOP")
    assert error is not None and "'boom'" in error and "4 times" in error
    assert starts(db, "boom") == 4 and starts(db, "after") == 0
    kinds = [row[0] for row in query(db, "SELECT kind FROM timeline ORDER BY id")]
    assert kinds.count("run.recovered") == 3 and "run.crash_loop" in kinds
    assert query(db, "SELECT step, count FROM recoveries") == [("boom", 3)]

    assert run_worker(workers) == 0  # a failed run is never recovered again
    assert starts(db, "boom") == 4
    assert the_run(db)[0] == run_id


def test_the_budget_is_per_step(db: Path, workers: Workers) -> None:
    # Each step uses its whole budget (1 + 3 starts), and the run completes.
    data = json.dumps({"crash": {"boom": 3, "after": 3}})
    exits = [run_worker(workers, data) for _ in range(7)]
    assert exits == [1] * 6 + [0], workers.stderr()
    assert (starts(db, "boom"), starts(db, "after")) == (4, 4)
    [(status, state)] = query(
        db,
        "SELECT r.status, c.state FROM runs r JOIN checkpoints c"
        " ON c.run = r.id AND c.position = r.position",
    )
    assert status == "completed" and json.loads(state)["done"] == ["boom", "after"]


def test_a_run_that_crashes_twice_then_succeeds_completes(db: Path, workers: Workers) -> None:
    data = json.dumps({"crash": {"boom": 2}})
    assert [run_worker(workers, data) for _ in range(3)] == [1, 1, 0], workers.stderr()
    assert the_run(db)[1:3] == ("completed", None)
    assert starts(db, "boom") == 3 and starts(db, "after") == 1


@pytest.mark.parametrize("later", [False, True], ids=["workflows-at-start", "register-later"])
def test_an_abort_written_while_down_applies_before_the_step_restarts(
    db: Path, workers: Workers, later: bool
) -> None:
    extra = ("--register-later",) if later else ()
    assert run_worker(workers, json.dumps({"crash": {"boom": ALWAYS}}), *extra) == 1
    run_id = the_run(db)[0]
    done = cli("abort", run_id, "--db", str(db))
    assert done.returncode == 0, done.stderr

    assert run_worker(workers, *extra) == 0, workers.stderr()
    assert the_run(db)[1:3] == ("aborted", "ABORTED")
    assert starts(db, "boom") == 1, "the aborted run's step started again"
    assert query(db, "SELECT outcome FROM inbox") == [("ok",)]

"""Real crashes: a worker process SIGKILLed at random instants, then restarted.

The worker (`tests/crash_worker.py`) starts one run per input and waits for them all; the
test kills it again and again, then lets one run finish, and checks what users rely on:
every input has exactly one run, every run completed with the right state and an unbroken
chain of checkpoints, the file is intact, and every step ran at least once. A second test
kills the worker while a slow step is mid-flight and proves the steps whose checkpoints had
committed are not run again.
"""

from __future__ import annotations

import collections
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import ROOT, Workers, checkpoint_chains, crash_input, effects, query, reap

WORKER = ROOT / "tests" / "crash_worker.py"
STEPS = ("a", "b", "c", "d", "e")
RUNS = 200
CYCLES = 20

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(db: Path) -> Iterator[Workers]:
    with Workers(WORKER, db) as started:
        yield started


def test_random_sigkills_lose_nothing(db: Path, workers: Workers) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with CRASH_SEED={seed})")
    rng = random.Random(seed)
    killed = 0
    for cycle in range(CYCLES):
        proc = workers.start(str(RUNS))
        try:
            rc = proc.wait(timeout=rng.uniform(0.05, 0.6))
        except subprocess.TimeoutExpired:
            reap(proc)
            killed += 1
        else:
            assert rc == 0, f"seed {seed}, cycle {cycle}: worker exited {rc}\n{workers.stderr()}"
    assert killed >= CYCLES // 2, f"seed {seed}: the work ended before most kills could land"
    final = workers.start(str(RUNS))
    assert final.wait(timeout=60) == 0, f"seed {seed}: final run failed\n{workers.stderr()}"

    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "PRAGMA foreign_key_check") == []
    assert query(db, "SELECT count(*) FROM lease") == [(0,)], "a clean exit releases the lease"
    runs = query(db, "SELECT run_id, status, position, step, error FROM runs")
    chains = checkpoint_chains(db)
    inputs = collections.Counter(chains[run[0]][0].state["i"] for run in runs)
    assert sorted(inputs) == list(range(RUNS)), f"seed {seed}: inputs without a run"
    twice = {k: n for k, n in inputs.items() if n > 1}
    assert not twice, f"seed {seed}: inputs with more than one run: {twice}"
    for run_id, status, position, step, error in runs:
        chain = chains[run_id]
        assert (status, position, step, error) == ("completed", len(STEPS), None, None), (
            f"seed {seed}: run {run_id}"
        )
        assert [(c.position, c.step) for c in chain] == list(enumerate((None, *STEPS)))
        assert [c.state["count"] for c in chain[1:]] == list(range(1, len(STEPS) + 1))
        assert len({c.state["i"] for c in chain}) == 1, f"run {run_id} changed input"
        assert all(c.state.get("pad") == crash_input(c.state["i"]).get("pad") for c in chain)
    patches = query(db, "SELECT count(*) FROM checkpoints WHERE base < position")[0][0]
    assert patches >= RUNS, f"seed {seed}: large states journaled whole ({patches} patches)"

    seen = effects(db)
    journaled = {run[0] for run in runs}
    missing = [(run_id, step) for run_id in journaled for step in STEPS if not seen[run_id, step]]
    assert not missing, f"seed {seed}: steps of completed runs never ran: {missing[:5]}"
    reruns = sum(count - 1 for key, count in seen.items() if key[0] in journaled)
    orphans = sum(count for key, count in seen.items() if key[0] not in journaled)
    recovered = query(db, "SELECT count(*) FROM timeline WHERE kind = 'run.recovered'")[0][0]
    print(
        f"{killed}/{CYCLES} cycles killed; {recovered} run recoveries; {reruns} step "
        f"re-executions; {orphans} steps of runs whose creation never committed"
    )


def test_slow_step_killed_mid_flight_resumes_from_last_checkpoint(
    db: Path, workers: Workers
) -> None:
    proc = workers.start("3", "--slow")

    def in_the_slow_step() -> bool:
        if not db.exists() or sum(1 for key in effects(db) if key[1] == "d") != 3:
            return False
        return [p for (p,) in query(db, "SELECT position FROM runs")] == [3, 3, 3]

    workers.wait_until(proc, in_the_slow_step, 20, "the runs to reach the slow step")
    reap(proc)

    # What committed before the kill: the input and steps a, b, c; d was mid-flight.
    rows = query(db, "SELECT run_id, status, position, step FROM runs")
    assert [row[1:] for row in rows] == [("running", 3, "d")] * 3
    before = checkpoint_chains(db)
    for run_id, *_ in rows:
        assert [(c.position, c.step) for c in before[run_id]] == list(
            enumerate((None, "a", "b", "c"))
        )
    assert sorted(effects(db).values()) == [1] * 12

    final = workers.start("3")
    assert final.wait(timeout=30) == 0, workers.stderr()

    seen = effects(db)
    for run_id, *_ in rows:
        assert [seen[run_id, step] for step in STEPS] == [1, 1, 1, 2, 1], run_id
        chain = checkpoint_chains(db)[run_id]
        assert chain[:4] == before[run_id], "committed checkpoints were rewritten"
        assert [c.position for c in chain] == list(range(len(STEPS) + 1))
        assert chain[-1].state["count"] == len(STEPS)
    assert query(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("completed", 3)]
    recovered = query(
        db,
        "SELECT r.run_id, t.position, t.step FROM timeline t"
        " JOIN runs r ON r.id = t.run WHERE t.kind = 'run.recovered'",
    )
    assert sorted(recovered) == sorted((row[0], 3, "d") for row in rows)

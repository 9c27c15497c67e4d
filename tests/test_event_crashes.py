"""Events, waits, timers and schedules across real crashes and restarts.

A worker (`tests/event_worker.py`) holds the journal; the test SIGKILLs it, restarts it,
writes events with the real CLI (``python -m orchestrator emit``) from other processes, and
reads the journal file with plain sqlite3. What users rely on: a paused run waits again
after a crash and resumes on its event; an event written while no runtime runs, or while
runtimes are being killed, is routed once one runs, exactly once; a deadline that passes
while nothing runs fires once on restart; a schedule fires its missed ticks once.

"Exactly once" is read from the journal: an event's routes (``event_routes``), one run per
input, and each run's chain of checkpoints, where a second resume or a second run of a
step would show as an extra checkpoint. The steps' effect log shows re-executions, which
are allowed (steps are at-least-once) and printed.
"""

from __future__ import annotations

import collections
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Workers, checkpoint_chains, cli, effects, no_error, query, reap

from orchestrator.testing import eventually_blocking

WORKER = ROOT / "tests" / "event_worker.py"
EVENT_ID = re.compile(r"[0-9a-f]{32}\n")
Event = tuple[str, str]  # type, JSON data

# Each run's checkpoints as (step, kind), from its input to its end.
ORDER_CHAIN = [
    (None, "step"),
    ("reserve", "step"),
    ("wait_for_payment", "step"),
    (None, "resume"),
    ("ship", "step"),
]
JOB_CHAIN = [(None, "step"), ("work", "step"), ("finish", "step")]

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(db: Path) -> Iterator[Workers]:
    with Workers(WORKER, db) as started:
        yield started


# -- emitting through the CLI -------------------------------------------------------------


def emit(db: Path, event: Event) -> subprocess.CompletedProcess[str]:
    return cli("emit", *event, "--db", str(db))


def acknowledged(out: subprocess.CompletedProcess[str]) -> bool:
    """The CLI acknowledged the event: exit 0, its id alone on stdout, no error on stderr."""
    ok = out.returncode == 0 and EVENT_ID.fullmatch(out.stdout) is not None
    return ok and no_error(out.stderr)


def emit_all(db: Path, events: list[Event], lanes: int = 3) -> list[str]:
    """Emit each event with its own CLI process, a few at a time; their ids, in order."""
    outs: list[subprocess.CompletedProcess[str] | None] = [None] * len(events)

    def lane(first: int) -> None:
        for index in range(first, len(events), lanes):
            outs[index] = emit(db, events[index])

    threads = [threading.Thread(target=lane, args=(first,)) for first in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = [out for out in outs if out is None or not acknowledged(out)]
    assert not bad, f"emits not acknowledged: {bad[:3]}"
    return [out.stdout.strip() for out in outs if out is not None]


class Emitter(threading.Thread):
    """Emits events one CLI call at a time, keeping those acknowledged, with their ids."""

    def __init__(self, db: Path, events: list[Event]) -> None:
        super().__init__(name="emitter")
        self.db, self.events = db, events
        self.acked: list[tuple[Event, str]] = []
        self.failed: list[subprocess.CompletedProcess[str]] = []

    def run(self) -> None:
        for event in self.events:
            out = emit(self.db, event)
            if acknowledged(out):
                self.acked.append((event, out.stdout.strip()))
            else:
                self.failed.append(out)


def order_of(event: Event) -> int:
    match = re.search(r'"(?:order_id|job)": (\d+)', event[1])
    assert match is not None, event
    return int(match[1])


# -- reading the journal ------------------------------------------------------------------


def statuses(db: Path, workflow: str) -> collections.Counter[str]:
    rows = query(
        db, "SELECT status, count(*) FROM runs WHERE workflow_id = ? GROUP BY status", (workflow,)
    )
    return collections.Counter(dict(rows))


def unrouted(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM events WHERE routed_at IS NULL")[0][0])


def routes(db: Path) -> dict[str, list[tuple[str, str]]]:
    """Every event id, with the (action, run id) of each of its routes."""
    found: dict[str, list[tuple[str, str]]] = {
        event_id: [] for (event_id,) in query(db, "SELECT event_id FROM events")
    }
    rows = query(
        db,
        "SELECT er.event_id, er.action, r.run_id FROM event_routes er"
        " JOIN runs r ON r.id = er.run ORDER BY er.event_id, er.action",
    )
    for event_id, action, run_id in rows:
        found[event_id].append((action, run_id))
    return found


def runs_by_input(db: Path, workflow: str, key: str) -> dict[int, str]:
    """A workflow's runs by the value of `key` in their input; asserts one run per value."""
    by_input: dict[int, list[str]] = collections.defaultdict(list)
    rows = query(db, "SELECT run_id FROM runs WHERE workflow_id = ?", (workflow,))
    chains = checkpoint_chains(db)
    for (run_id,) in rows:
        by_input[chains[run_id][0].state[key]].append(run_id)
    twice = {value: ids for value, ids in by_input.items() if len(ids) > 1}
    assert not twice, f"{workflow}: inputs with more than one run: {twice}"
    return {value: ids[0] for value, ids in by_input.items()}


def assert_ended_once(
    db: Path, run_ids: set[str], chain: list[tuple[str | None, str]], status: str = "completed"
) -> None:
    """Each run ended with `status` after exactly these checkpoints: no step twice."""
    chains = checkpoint_chains(db)
    ended = dict(query(db, "SELECT run_id, status FROM runs"))
    for run_id in run_ids:
        assert ended[run_id] == status, run_id
        assert [(c.step, c.kind) for c in chains[run_id]] == chain, run_id
        assert [c.position for c in chains[run_id]] == list(range(len(chain))), run_id


def report_reruns(db: Path) -> None:
    reruns = sum(count - 1 for count in effects(db).values())
    print(f"step re-executions: {reruns}")


# -- 1. paused runs resume after a restart ------------------------------------------------


def test_paused_runs_resume_after_a_restart_on_events_emitted_after_it(
    db: Path, workers: Workers
) -> None:
    n = 50
    first = workers.start("pause", str(n))
    workers.wait_ready(first)
    reap(first)

    # What the kill left behind: every run paused, parked on its (early registered) wait.
    assert statuses(db, "orders") == {"paused": n}
    assert query(db, "SELECT status, count(*) FROM waits GROUP BY status") == [("parked", n)]
    runs = runs_by_input(db, "orders", "order_id")
    assert sorted(runs) == list(range(n))

    # Emitting starts at once: the first events arrive while the worker opens and recovers.
    second = workers.start("serve")
    started = time.monotonic()
    ids = emit_all(db, [("payment.received", f'{{"order_id": {k}}}') for k in range(n)])
    print(f"{n} CLI emits took {time.monotonic() - started:.2f} s")
    workers.wait_until(
        second, lambda: statuses(db, "orders") == {"completed": n}, 30, "every run to complete"
    )

    assert_ended_once(db, set(runs.values()), ORDER_CHAIN)
    chains = checkpoint_chains(db)
    for k, run_id in runs.items():
        assert chains[run_id][-1].state["payment"] == {"order_id": k}
    assert unrouted(db) == 0
    routed = routes(db)
    assert sorted(routed) == sorted(ids)
    for k, event_id in enumerate(ids):
        assert routed[event_id] == [("resumed", runs[k])], f"the payment for order {k}"
    assert query(db, "SELECT count(*) FROM waits WHERE status IN ('armed', 'parked')") == [(0,)]
    seen = effects(db)
    assert all(seen[run_id, "reserve"] >= 1 and seen[run_id, "ship"] >= 1 for run_id in chains)
    report_reruns(db)


# -- 2. events emitted while no runtime runs ----------------------------------------------


def test_events_emitted_while_no_runtime_runs_are_routed_once_it_starts(
    db: Path, workers: Workers
) -> None:
    paused = 10
    first = workers.start("pause", str(paused))
    workers.wait_ready(first)
    reap(first)  # nothing holds the journal from here on

    events = (
        [("payment.received", f'{{"order_id": {k}}}') for k in range(paused)]
        + [("order.created", f'{{"order_id": {100 + k}, "total": 5}}') for k in range(18)]
        + [("order.created", f'{{"order_id": {200 + k}, "total": 0}}') for k in range(2)]
    )
    random.Random(7).shuffle(events)
    ids = emit_all(db, events)
    assert unrouted(db) == len(events) == 30
    assert statuses(db, "orders") == {"paused": paused}

    def settled() -> bool:
        return statuses(db, "orders") == {"completed": paused, "paused": 18} and not unrouted(db)

    second = workers.start("serve")
    workers.wait_ready(second)
    workers.wait_until(second, settled, 20, "the events to be routed")
    eventually_blocking(  # the new runs are parked too (their waits committed)
        lambda: query(db, "SELECT count(*) FROM waits WHERE status = 'parked'") == [(18,)],
        what="the new runs to park",
        timeout=5,
    )

    runs = runs_by_input(db, "orders", "order_id")
    routed = routes(db)
    for event, event_id in zip(events, ids, strict=True):
        if event[0] == "payment.received":
            expected = [("resumed", runs[order_of(event)])]
        elif order_of(event) < 200:
            expected = [("started", runs[order_of(event)])]
        else:
            expected = []  # total 0: no trigger matches; routed all the same, once
        assert routed[event_id] == expected, event
    assert sorted(runs) == [*range(paused), *range(100, 118)]
    assert_ended_once(db, {runs[k] for k in range(paused)}, ORDER_CHAIN)
    assert_ended_once(db, {runs[k] for k in range(100, 118)}, ORDER_CHAIN[:3], "paused")

    # Once routed, never again: another crash and restart changes nothing.
    before = (routed, checkpoint_chains(db), query(db, "SELECT * FROM waits ORDER BY id"))
    third = workers.restart(second, "serve")
    workers.wait_ready(third)  # ready once idle: anything it would route again, it has
    after = (routes(db), checkpoint_chains(db), query(db, "SELECT * FROM waits ORDER BY id"))
    assert after == before


# -- 3. kills during a stream of emits ----------------------------------------------------


def test_sigkills_during_a_stream_of_emits_lose_and_repeat_no_event(
    db: Path, workers: Workers
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with CRASH_SEED={seed})")
    rng = random.Random(seed)
    orders, jobs = 15, 36
    worker = workers.start("pause", str(orders))
    workers.wait_ready(worker)

    events = [("job.requested", f'{{"job": {j}}}') for j in range(jobs)]
    events += [("payment.received", f'{{"order_id": {k}}}') for k in range(orders)]
    rng.shuffle(events)
    emitter = Emitter(db, events)
    emitter.start()
    kills = 0
    try:
        while emitter.is_alive() or kills < 5:
            time.sleep(rng.uniform(0.1, 1.0))  # a kill at a random moment of the stream
            worker = workers.restart(worker, "serve")
            kills += 1
    finally:
        emitter.join()
    print(f"{kills} kills during {len(emitter.acked)} acknowledged emits")
    assert not emitter.failed, f"seed {seed}: emits not acknowledged: {emitter.failed[:3]}"

    def settled() -> bool:
        return (
            not unrouted(db)
            and statuses(db, "jobs") == {"completed": jobs}
            and statuses(db, "orders") == {"completed": orders}
        )

    try:
        workers.wait_until(worker, settled, 30, "every event routed and every run ended")
    except AssertionError as exc:
        counts = f"jobs {statuses(db, 'jobs')}, orders {statuses(db, 'orders')}"
        raise AssertionError(f"seed {seed}: {counts}, unrouted {unrouted(db)}") from exc

    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    routed = routes(db)
    assert sorted(routed) == sorted(event_id for _, event_id in emitter.acked), f"seed {seed}"
    job_runs = runs_by_input(db, "jobs", "job")
    order_runs = runs_by_input(db, "orders", "order_id")
    assert sorted(job_runs) == list(range(jobs)), f"seed {seed}: a job without exactly one run"
    for event, event_id in emitter.acked:
        action = "started" if event[0] == "job.requested" else "resumed"
        run_id = (job_runs if action == "started" else order_runs)[order_of(event)]
        assert routed[event_id] == [(action, run_id)], f"seed {seed}: {event}"
    assert_ended_once(db, set(job_runs.values()), JOB_CHAIN)
    assert_ended_once(db, set(order_runs.values()), ORDER_CHAIN)
    seen = effects(db)
    assert all(seen[run_id, "finish"] >= 1 for run_id in job_runs.values())
    assert all(seen[run_id, "ship"] >= 1 for run_id in order_runs.values())
    report_reruns(db)


# -- 4. deadlines that pass during downtime -----------------------------------------------


def test_deadlines_that_pass_while_nothing_runs_fire_once_on_restart(
    db: Path, workers: Workers
) -> None:
    first = workers.start("timers")
    workers.wait_ready(first)
    reap(first)
    runs = dict(query(db, "SELECT trigger_id, run_id FROM runs WHERE workflow_id = 'timers'"))
    assert statuses(db, "timers") == {"paused": 3}, "the kill came after a deadline"
    time.sleep(2.0)  # every deadline (1 s and 1.5 s after the pauses) passes while down

    def settled() -> bool:
        return statuses(db, "timers") == {"completed": 2, "failed": 1}

    worker = workers.start("serve")
    workers.wait_until(worker, settled, 20, "the overdue deadlines to fire")
    for _ in range(2):  # and later restarts fire nothing again
        worker = workers.restart(worker, "serve")
        workers.wait_ready(worker)  # ready once idle: an overdue deadline has fired by then

    for pipeline in ("nap", "continue"):
        steps = [(None, "step"), (pipeline, "step"), (None, "resume"), ("after", "step")]
        if pipeline == "continue":
            steps[1] = ("pay_or_continue", "step")
        assert_ended_once(db, {runs[pipeline]}, steps)
    assert_ended_once(db, {runs["fail"]}, [(None, "step"), ("pay_or_fail", "step")], "failed")
    assert query(db, "SELECT error_code FROM runs WHERE run_id = ?", (runs["fail"],)) == [
        ("PAUSE_TIMEOUT",)
    ]
    assert checkpoint_chains(db)[runs["continue"]][-1].state["payment"] is None
    seen = effects(db)
    assert [seen[runs[p], "after"] for p in ("nap", "continue", "fail")] == [1, 1, 0]
    resumed = query(
        db,
        "SELECT r.trigger_id, t.source FROM timeline t JOIN runs r ON r.id = t.run"
        " WHERE t.kind = 'run.resumed' ORDER BY r.trigger_id",
    )
    assert resumed == [("continue", "timer"), ("nap", "timer")]


# -- 5. schedule ticks missed during downtime ---------------------------------------------


def test_schedule_ticks_missed_during_downtime_fire_once(db: Path, workers: Workers) -> None:
    # Every run below must fire within one wall-clock minute: start early in a minute.
    if time.time() % 60 > 48:
        time.sleep(60.2 - time.time() % 60)  # schedules fire on the wall clock's minutes
    minute = int(time.time() // 60)

    first = workers.start("schedules")
    workers.wait_ready(first)
    reap(first)
    armed = query(db, "SELECT trigger_id FROM schedule_state ORDER BY trigger_id")
    assert armed == [("each",), ("once",)]
    assert statuses(db, "ticks") == {}, "a schedule armed for the first time fires nothing"

    # A schedule knows time only through the last tick it fired (or when it was armed),
    # journaled in schedule_state, and the clock: moving that tick 3 minutes back is, to
    # the next worker, exactly as if it had been down for those 3 minutes, and the test
    # does not wait for them. The ticks in (now - 3 min, restart] are the starts of this
    # minute and of the two before it.
    query(db, "UPDATE schedule_state SET last_tick = ?", (int((time.time() - 180) * 1e6),))
    missed = [(minute - back) * 60.0 for back in (2, 1, 0)]

    worker = workers.start("schedules")
    workers.wait_ready(worker)
    workers.wait_until(
        worker, lambda: statuses(db, "ticks") == {"completed": 4}, 10, "the missed ticks to fire"
    )
    before = checkpoint_chains(db)
    worker = workers.restart(worker, "schedules")
    workers.wait_ready(worker)  # ready once idle: a tick it would fire again, it has
    assert checkpoint_chains(db) == before, "a restart fired the ticks again"

    fired: dict[str, list[float]] = collections.defaultdict(list)
    for run_id, trigger_id in query(db, "SELECT run_id, trigger_id FROM runs ORDER BY id"):
        state: dict[str, Any] = before[run_id][0].state
        assert int(datetime.fromisoformat(state["fired_at"]).timestamp() // 60) == minute
        fired[trigger_id].append(datetime.fromisoformat(state["scheduled_for"]).timestamp())
    assert fired == {"once": missed[-1:], "each": missed}
    last_tick = int(missed[-1] * 1_000_000)
    assert dict(query(db, "SELECT trigger_id, last_tick FROM schedule_state")) == {
        "once": last_tick,
        "each": last_tick,
    }
    assert_ended_once(db, set(before), [(None, "step"), ("tick", "step")])
    assert all(effects(db)[run_id, "tick"] == 1 for run_id in before)

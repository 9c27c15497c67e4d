"""Chaos: three daemons on one PostgreSQL journal, killed, frozen and restarted under load.

Three real daemons (``orchestrator up DIR --db postgresql://...``, the same folder) share
one journal: one is active, the others are standbys that take over when it dies. Emitter
threads journal about 3,800 events with idempotency keys through the CLI's commands API
(some twice, some with the real ``orchestrator emit``), starting over 2,000 runs of six
workflows that mix what the daemons coordinate:

- ``orders``: a trigger with a condition (``total > 0``); its first step registers a wait
  for the order's payment, the second pauses for it (a 3 s timeout), so a payment emitted
  later resumes it (or one emitted early is kept for it); a third step ends it;
- ``audits``: ``Exclusive(on_busy="reject")``, on the same event with another condition
  (``total > 900``): one event, two runs;
- ``deploys``: ``Serialized()``, ``env == "prod"`` only, with a durable sleep between its
  steps (a paused run keeps the slot);
- ``locks``: ``Exclusive(on_busy="queue_single")``, pausing up to 2 s for a release event;
- ``alerts``: started by the system event of each completed ``deploys`` run; since it
  listens to ``run.completed``, every run's end is journaled as such an event;
- ``ticks``: a cron `Schedule` with ``catch_up=True``; the daemons run through
  ``tests/fast_cron_up.py``, where a cron minute lasts one second.

Meanwhile the test SIGKILLs the active daemon every 2-4 s and starts a new standby in its
place (every fourth time it also kills the daemon taking over, during its recovery), and
once SIGSTOPs the active one past its lease, waits for a standby to take over, SIGCONTs
it: it must exit 3, fenced. The last 300 events come after the last kill (a take-over
routes what its predecessor missed, which would hide a missed event). Once the emits are
done, the schedule disabled and every run final (polled, bounded), the journal must show:
each acknowledged emit is one event with the id its emitter got, routed, starting one run
per matching trigger and none for the others; each run ended once (one ``run.completed``
system event, or one ``run.dropped`` / ``run.rejected`` timeline entry) with the status
its mode allows, its checkpoints ending with its last step; never two active runs of a
``Serialized`` or ``Exclusive`` workflow at once; one run per schedule tick, none missed;
each payment that resumed an order in its state; no write of the frozen daemon after it
was fenced. Steps write the daemon's pid into the state they return, so the checkpoints
say which daemon ran them.

The daemons also spread steps: the sync steps (``ship``, ``audit``, ``build``,
``release``, ``acquire``, ``unlock``, ``tick``: a little CPU work each) run in worker
processes, and with ``--workers 2`` the active daemon keeps one at a time and offers the
next ones to the standbys (``step_jobs``); such a step records its worker's parent, the
daemon that lent it, and when it started. The chaos hits the standbys too: before every
third kill one is SIGKILLed while it holds a step (a new one starts in its place), and
once one holding a step is SIGSTOPped until the step was offered again, then SIGCONTed.
Then: standbys ran a share of the steps (at least two of them), each run's sync steps
were journaled once each, no late reply of the frozen standby was kept, no step failed
``STEP_CRASHED``, and ``step_jobs`` is empty.

``CHAOS_SEED=N`` replays the random choices (the kills' timing, the events' data).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, Daemon, no_error, query

from orchestrator.journal import open_journal
from orchestrator.journal.backends import migrate_journal
from orchestrator.testing import eventually_blocking

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # ~1 min; more on a busy machine

DAEMONS = 3
ORDERS = 1_850  # order.created events: ~95% match `orders`, ~10% `audits`
DEPLOYS = 100  # deploy.requested events: ~80% are for prod and start a run
LOCKS = 250  # lock.requested events
CLI_EMITS = 16  # of the events above, emitted by the real `orchestrator emit`
CALM_EMITS = 300  # the last events, emitted after the last kill
REPEATS = 0.04  # the share of emits sent again with the same key
KILL_EVERY = (2.0, 4.0)  # seconds between SIGKILLs of the active daemon
FREEZE_AT_KILL = 2  # the active daemon is frozen instead of killed at this kill
FREEZE_STANDBY_AT_KILL = 1  # a standby serving a step is frozen past its lease before it
KILL_STANDBY_EVERY = 3  # a standby serving a step is SIGKILLed before every third kill
LEASE_SECONDS = 5.0  # a heartbeat older than this is stale: the daemon is taken over
# The last step of each workflow: a completed run's last checkpoint.
LAST_STEPS = {
    "alerts": "alert",
    "orders": "ship",
    "audits": "audit",
    "deploys": "release",
    "locks": "unlock",
    "ticks": "tick",
}
# What each step that records who ran it writes into the state: `<prefix>_by`, the pid of
# the daemon that ran it; a sync step `<prefix>_at` too, when it started (epoch us).
RECORDS = {
    "alert": "alerted",
    "reserve": "reserved",
    "ship": "shipped",
    "audit": "audited",
    "build": "built",
    "release": "released",
    "acquire": "acquired",
    "unlock": "unlocked",
    "tick": "ticked",
}
# The sync steps (isolated: `orchestrator up` runs them in worker processes, the active
# daemon's or a standby's), each once in its pipeline.
SYNC_STEPS = ["ship", "audit", "build", "release", "acquire", "unlock", "tick"]
# Kills land mid-step on purpose, again and again: a run caught in one step by four kills
# would end CRASH_LOOP (tests/test_crash_loop.py tests that guard), not what this tests.
# Two workers each: the active daemon keeps one step at a time (its share of the three
# daemons' workers) and offers the next ones to the standbys.
DAEMON_OPTIONS = ("--max-recoveries", "1000", "--workers", "2")
LAUNCHER = (str(ROOT / "tests" / "fast_cron_up.py"),)
EVENT_ID = re.compile(r"[0-9a-f]{32}")

WORKFLOWS = {
    # A helper module (`_*.py`), imported by the sync steps: isolated, they run in a worker
    # process, whose parent is the daemon that lent it (the active one, or a standby).
    "_served.py": """\
import os
import time


def served(verb):
    at = time.time_ns() // 1000
    sum(i * i for i in range(20_000))  # a few ms of CPU
    time.sleep(0.02)  # and some waiting: standbys hold steps long enough to be caught at it
    return {f"{verb}_by": os.getppid(), f"{verb}_at": at}
""",
    # Named to load first: every run's end is then journaled as a system event.
    "alerts.py": """\
import os

from orchestrator import Trigger, Workflow


async def alert(state, ctx):
    return {**state, "alerted_by": os.getpid()}


workflow = Workflow(
    id="alerts",
    triggers={"deployed": Trigger(event="run.completed", where={"workflow_id": ("==", "deploys")})},
    pipelines={"deployed": [alert]},
)
""",
    "orders.py": """\
import asyncio
import os

from orchestrator import Trigger, Workflow

from _served import served


async def reserve(state, ctx):
    # The wait is registered now: a payment that arrives before the pause is kept.
    ctx.pause_service.register(
        event="payment.received", where={"order_id": ("==", state["order_id"])}
    )
    await asyncio.sleep(0.005)
    return {**state, "reserved_by": os.getpid()}


async def wait_for_payment(state, ctx):
    return ctx.pause(
        event="payment.received",
        where={"order_id": ("==", state["order_id"])},
        into="payment",
        timeout=3,
    )


def ship(state):
    return {**state, **served("shipped")}


workflow = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created", where={"total": (">", 0)})},
    pipelines={"new": [reserve, wait_for_payment, ship]},
)
""",
    "audits.py": """\
from orchestrator import Exclusive, Trigger, Workflow

from _served import served


def audit(state):
    return {**state, **served("audited")}


workflow = Workflow(
    id="audits",
    triggers={"large": Trigger(event="order.created", where={"total": (">", 900)})},
    pipelines={"large": [audit]},
    mode=Exclusive(on_busy="reject"),
)
""",
    "deploys.py": """\
from orchestrator import Serialized, Trigger, Workflow

from _served import served


def build(state):
    return {**state, **served("built")}


async def settle(state, ctx):
    return ctx.sleep(0.1)


def release(state):
    return {**state, **served("released")}


workflow = Workflow(
    id="deploys",
    triggers={"requested": Trigger(event="deploy.requested", where={"env": ("==", "prod")})},
    pipelines={"requested": [build, settle, release]},
    mode=Serialized(),
)
""",
    "locks.py": """\
from orchestrator import Exclusive, Trigger, Workflow

from _served import served


def acquire(state):
    return {**state, **served("acquired")}


async def hold(state, ctx):
    return ctx.pause(
        event="lock.released", where={"n": ("==", state["n"])}, into="released", timeout=2
    )


def unlock(state):
    return {**state, **served("unlocked")}


workflow = Workflow(
    id="locks",
    triggers={"requested": Trigger(event="lock.requested")},
    pipelines={"requested": [acquire, hold, unlock]},
    mode=Exclusive(on_busy="queue_single"),
)
""",
    "ticks.py": """\
from orchestrator import Schedule, Workflow

from _served import served


def tick(state):
    return {**state, **served("ticked")}


workflow = Workflow(
    id="ticks",
    triggers={"every": Schedule(cron="* * * * *", tz="UTC", catch_up=True)},
    pipelines={"every": [tick]},
)
""",
}


def matching(event_type: str, data: dict[str, Any]) -> set[str]:
    """The workflows whose trigger matches an event: each must start exactly one run."""
    if event_type == "order.created":
        return ({"orders"} if data["total"] > 0 else set()) | (
            {"audits"} if data["total"] > 900 else set()
        )
    if event_type == "deploy.requested":
        return {"deploys"} if data["env"] == "prod" else set()
    if event_type == "lock.requested":
        return {"locks"}
    if event_type == "run.completed":  # a system event
        return {"alerts"} if data["workflow_id"] == "deploys" else set()
    return set()  # payments and releases resume runs, they start none


@dataclass(frozen=True)
class Emit:
    key: str
    type: str
    data: dict[str, Any]


def plan(rng: random.Random) -> list[Emit]:
    """Every event the test emits, in order: payments and releases after what they match."""
    emits: list[Emit] = []
    payments: list[tuple[int, Emit]] = []  # (emit after this many more events, payment)
    deploys = iter(range(DEPLOYS))
    locks = iter(range(LOCKS))
    for order in range(ORDERS):
        total = rng.randint(-60, 1000)
        emits.append(Emit(f"order-{order}", "order.created", {"order_id": order, "total": total}))
        if total > 0 and rng.random() < 0.8:
            payment = {"order_id": order, "amount": total}
            payments.append((rng.randint(0, 60), Emit(f"pay-{order}", "payment.received", payment)))
        if rng.random() < DEPLOYS / ORDERS and (n := next(deploys, None)) is not None:
            env = "prod" if rng.random() < 0.8 else "staging"
            emits.append(Emit(f"deploy-{n}", "deploy.requested", {"n": n, "env": env}))
        if rng.random() < LOCKS / ORDERS and (n := next(locks, None)) is not None:
            emits.append(Emit(f"lock-{n}", "lock.requested", {"n": n}))
            if rng.random() < 0.7:
                payments.append((rng.randint(0, 10), Emit(f"free-{n}", "lock.released", {"n": n})))
        due = [p for p in payments if p[0] <= 0]
        payments = [(left - 1, p) for left, p in payments if left > 0]
        emits.extend(p for _, p in due)
    emits.extend(p for _, p in payments)
    for n in deploys:
        emits.append(Emit(f"deploy-{n}", "deploy.requested", {"n": n, "env": "prod"}))
    for n in locks:
        emits.append(Emit(f"lock-{n}", "lock.requested", {"n": n}))
    return emits


class Emitter(threading.Thread):
    """Emits its share of the plan (the commands API, or the CLI), keeping what it got."""

    def __init__(self, url: str, emits: list[Emit], seed: float, cli_every: int = 0) -> None:
        super().__init__(name="emitter", daemon=True)
        self.url, self.emits, self.rng = url, emits, random.Random(seed)
        self.cli_every = cli_every  # every n-th emit by the real CLI (0: none)
        self.acked: dict[str, str] = {}  # key -> event id
        self.errors: list[str] = []

    def run(self) -> None:
        commands = open_journal(self.url).commands
        for i, emit in enumerate(self.emits):
            try:
                if self.cli_every and i % self.cli_every == 0:
                    event_id = self.cli_emit(emit)
                else:
                    event_id = commands.emit_event(emit.type, emit.data, key=emit.key)
                if self.rng.random() < REPEATS:  # the same key again: the same event
                    again = commands.emit_event(emit.type, emit.data, key=emit.key)
                    if again != event_id:
                        self.errors.append(f"{emit.key}: {event_id} then {again}")
            except Exception as exc:
                self.errors.append(f"{emit.key}: {exc!r}")
                continue
            self.acked[emit.key] = event_id

    def cli_emit(self, emit: Emit) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "emit",
                emit.type,
                json.dumps(emit.data),
                "--key",
                emit.key,
                "--no-wait",
                "--db",
                self.url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        event_id = out.stdout.strip()
        if out.returncode != 0 or not EVENT_ID.fullmatch(event_id) or not no_error(out.stderr):
            raise RuntimeError(f"orchestrator emit exited {out.returncode}: {out.stderr}")
        return event_id


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    for name, text in WORKFLOWS.items():
        (flows / name).write_text(text)
    return flows


class DaemonSlots:
    """The test's daemons: `DAEMONS` slots, each holding its latest daemon process."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder, self.url = folder, url
        self.started: list[Daemon] = []
        self.slots: list[Daemon] = []

    def start(self) -> Daemon:
        n = len(self.started)
        log = self.folder.parent / f"daemon-{n}.log"
        daemon = Daemon(self.folder, self.url, *DAEMON_OPTIONS, launcher=LAUNCHER, log=log)
        self.started.append(daemon)
        return daemon.start(ready=False)

    def replace(self, old: Daemon) -> Daemon:
        new = self.start()
        self.slots[self.slots.index(old)] = new
        return new

    def active(self, *, ready: bool = True) -> Daemon | None:
        """The live daemon the journal names (`ready`: once ready), if it is ours and runs."""
        record = open_journal(self.url).commands.daemon()
        if record is None or (ready and not record.ready):
            return None
        for daemon in self.slots:
            if daemon.pid == record.pid and daemon.proc is not None and daemon.proc.poll() is None:
                return daemon
        return None

    def wait_active(
        self, timeout: float = 60.0, other_than: Daemon | None = None, *, ready: bool = True
    ) -> Daemon:
        """Wait for an active daemon (another than `other_than`), ready or only registered."""

        def found() -> Daemon | None:
            daemon = self.active(ready=ready)
            return daemon if daemon is not other_than else None

        what = "a ready active daemon" if ready else "a daemon taking over"
        return eventually_blocking(found, what=what, timeout=timeout, details=self.logs)

    def logs(self) -> str:
        return "\n".join(
            f"--- {d.log_path.name} (pid {d.pid})\n{d.log()[-3000:]}" for d in self.started
        )

    def kill_all(self) -> None:
        for daemon in self.started:
            daemon.kill()


@pytest.fixture
def cluster(folder: Path, pg_url: str) -> Iterator[DaemonSlots]:
    daemons = DaemonSlots(folder, pg_url)
    try:
        yield daemons
    finally:
        daemons.kill_all()


@dataclass(frozen=True)
class Frozen:
    """The daemon the test froze: its pid, exit code and when it was let go (epoch us)."""

    pid: int
    code: int | None  # None: it did not exit within a minute
    continued_us: int
    takeover_s: float  # from SIGSTOP to another daemon ready
    log: str


def freeze(cluster: DaemonSlots, active: Daemon) -> Frozen:
    """SIGSTOP the active daemon until a standby has taken over, SIGCONT it, wait for its exit."""
    assert active.proc is not None
    active.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        cluster.wait_active(timeout=LEASE_SECONDS + 60, other_than=active)
    finally:
        takeover_s = time.monotonic() - stopped
        continued_us = time.time_ns() // 1000
        active.proc.send_signal(signal.SIGCONT)
    try:
        code: int | None = active.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:  # it must stop once fenced: the test says so below
        code = None
        active.kill()
    cluster.replace(active)
    return Frozen(active.pid, code, continued_us, takeover_s, active.log())


HELD = (
    "SELECT j.id, j.run_id, j.claimed_by FROM step_jobs j JOIN standbys s"
    " ON s.token = j.claimed_by WHERE s.pid = ? AND j.reply IS NULL ORDER BY j.id"
)


def serving(cluster: DaemonSlots, active: Daemon) -> Daemon | None:
    """A standby of ours holding a claimed step not answered yet."""
    for daemon in cluster.slots:
        if daemon is active or daemon.proc is None or daemon.proc.poll() is not None:
            continue
        if query(cluster.url, HELD, (daemon.pid,)):
            return daemon
    return None


def stop_serving(
    cluster: DaemonSlots, active: Daemon, timeout: float, *, going: Callable[[], bool]
) -> tuple[Daemon | None, list[tuple[Any, ...]], int]:
    """SIGSTOP a standby while it holds steps: it, the steps (job, run, token), when (us).

    None once `going` says no more steps are coming (the emits are done).
    """

    def stopped() -> tuple[Daemon | None, list[tuple[Any, ...]], int] | None:
        if not going():
            return None, [], 0
        daemon = serving(cluster, active)
        if daemon is None or daemon.proc is None:
            return None
        daemon.proc.send_signal(signal.SIGSTOP)
        stopped_us = time.time_ns() // 1000
        held = query(cluster.url, HELD, (daemon.pid,))  # it cannot reply while stopped
        if held:
            return daemon, held, stopped_us
        daemon.proc.send_signal(signal.SIGCONT)  # it replied just before: another try
        return None

    return eventually_blocking(stopped, what="a standby serving a step", timeout=timeout)


@dataclass(frozen=True)
class FrozenStandby:
    """The standby the test froze with steps in hand: when, and which steps (job, run)."""

    pid: int
    stopped_us: int
    continued_us: int
    held: list[tuple[int, str]]


def freeze_standby(cluster: DaemonSlots, active: Daemon) -> FrozenStandby:
    """SIGSTOP a standby while it holds a step, until that step was taken from it; SIGCONT.

    The step's worker ends during the freeze (only the daemon is stopped): once continued,
    the standby replies, too late; the reply must be refused.
    """
    daemon, held, stopped_us = stop_serving(cluster, active, timeout=60, going=lambda: True)
    assert daemon is not None and daemon.proc is not None
    jobs, token = [job for job, *_ in held], held[0][2]

    def jobs_state() -> str:
        rows = query(cluster.url, "SELECT * FROM step_jobs WHERE id = ANY(?)", (jobs,))
        standbys = query(cluster.url, "SELECT * FROM standbys")
        return f"its steps {rows}\nstandbys {standbys}\n{cluster.logs()}"

    try:
        eventually_blocking(
            lambda: (
                not query(
                    cluster.url,
                    "SELECT id FROM step_jobs WHERE id = ANY(?) AND claimed_by = ?"
                    " AND reply IS NULL",
                    (jobs, token),
                )
            ),
            what="the frozen standby's steps offered again",
            timeout=LEASE_SECONDS + 60,
            details=jobs_state,
        )
    finally:
        continued_us = time.time_ns() // 1000
        daemon.proc.send_signal(signal.SIGCONT)
    return FrozenStandby(daemon.pid, stopped_us, continued_us, [(j, r) for j, r, _ in held])


def kill_standby(cluster: DaemonSlots, active: Daemon, emitters: list[Emitter]) -> bool:
    """SIGKILL a standby, while it holds a step if one does soon; whether it held one."""

    def going() -> bool:
        return any(emitter.is_alive() for emitter in emitters)

    try:
        daemon, _, _ = stop_serving(cluster, active, timeout=30, going=going)
    except AssertionError:  # no step out at the moment
        daemon = None
    held = daemon is not None
    if daemon is None:  # any standby
        daemon = next(d for d in cluster.slots if d is not active)
    daemon.kill()
    cluster.replace(daemon)
    return held


@dataclass(frozen=True)
class Storm:
    """What the chaos did: the daemons it froze, its SIGKILLs, how long take-overs took."""

    frozen: Frozen
    frozen_standby: FrozenStandby
    sigkills: int
    in_takeover: int  # daemons killed while taking over, before they were ready
    takeovers: list[float]  # seconds from a SIGKILL to the next daemon ready
    standby_kills: int
    serving_kills: int  # standbys killed holding a step


def rage(cluster: DaemonSlots, rng: random.Random, emitters: list[Emitter]) -> Storm:
    """Kill the active daemon every few seconds, freeze it once, until the emitters are done.

    Standbys too: one serving a step is killed now and then, and one is frozen once.
    """
    kills, sigkills, in_takeover, standby_kills, serving_kills = 0, 0, 0, 0, 0
    frozen: Frozen | None = None
    frozen_standby: FrozenStandby | None = None
    takeovers: list[float] = []
    while kills <= FREEZE_STANDBY_AT_KILL or any(emitter.is_alive() for emitter in emitters):
        time.sleep(rng.uniform(*KILL_EVERY))  # the chaos's pace, not a wait for something
        active = cluster.wait_active()
        if kills == FREEZE_STANDBY_AT_KILL:
            frozen_standby = freeze_standby(cluster, active)
            active = cluster.wait_active()
        elif kills % KILL_STANDBY_EVERY == 0:
            serving_kills += kill_standby(cluster, active, emitters)
            standby_kills += 1
        if kills == FREEZE_AT_KILL:
            frozen = freeze(cluster, active)
        else:
            killed_at = time.monotonic()
            active.kill()
            cluster.replace(active)
            sigkills += 1
            if kills % 4 == 3:  # the next one too, as soon as it takes over (its recovery)
                heir = cluster.wait_active(other_than=active, ready=False)
                in_takeover += not heir.is_ready()
                heir.kill()
                cluster.replace(heir)
                sigkills += 1
            else:
                cluster.wait_active(other_than=active)
                takeovers.append(time.monotonic() - killed_at)
        kills += 1
    assert frozen is not None and frozen_standby is not None
    return Storm(
        frozen, frozen_standby, sigkills, in_takeover, takeovers, standby_kills, serving_kills
    )


def test_three_daemons_under_kills_and_a_freeze_keep_every_guarantee(
    cluster: DaemonSlots, pg_url: str
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(2**32)))
    print(f"chaos seed: {seed} (rerun with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    began = time.monotonic()
    emits = plan(rng)
    asyncio.run(migrate_journal(pg_url))  # before the emitters' first write
    cluster.slots = [cluster.start() for _ in range(DAEMONS)]
    cluster.wait_active()
    stormy, calm = emits[:-CALM_EMITS], emits[-CALM_EMITS:]
    share = len(stormy) // 3
    emitters = [
        Emitter(pg_url, stormy[i::3], rng.random(), cli_every=share // CLI_EMITS if i == 0 else 0)
        for i in range(3)
    ]
    for emitter in emitters:
        emitter.start()

    storm = rage(cluster, rng, emitters)
    for emitter in emitters:
        emitter.join(timeout=120)
    frozen = storm.frozen
    chaos_s = time.monotonic() - began
    # The last events come after the last kill: one the daemon missed stays unrouted (a
    # take-over routes what its predecessor left, which would hide it).
    after = [Emitter(pg_url, calm[i::3], rng.random()) for i in range(3)]
    for emitter in after:
        emitter.start()
    for emitter in after:
        emitter.join(timeout=120)
    emitters += after
    errors = [error for emitter in emitters for error in emitter.errors]
    assert not errors, f"seed {seed}: emits failed: {errors[:5]}"
    acked = {key: event_id for emitter in emitters for key, event_id in emitter.acked.items()}
    assert len(acked) == len(emits)

    # The schedule is switched off (through the inbox), so that the journal can settle.
    switched = subprocess.run(
        [sys.executable, "-m", "orchestrator", "disable", "ticks", "--db", pg_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert switched.returncode == 0, switched.stderr

    def settled() -> bool:
        (pending,) = query(
            pg_url,
            "SELECT (SELECT count(*) FROM events WHERE routed_at IS NULL)"
            " + (SELECT count(*) FROM inbox WHERE done_at IS NULL)"
            " + (SELECT count(*) FROM runs WHERE status IN ('queued', 'running', 'paused'))",
        )[0]
        return pending == 0 and cluster.active() is not None

    try:
        eventually_blocking(settled, what="every event routed, every run final", timeout=120)
    except AssertionError as exc:
        by_status = query(pg_url, "SELECT workflow_id, status, count(*) FROM runs GROUP BY 1, 2")
        unrouted = query(pg_url, "SELECT id, type FROM events WHERE routed_at IS NULL")
        raise AssertionError(
            f"seed {seed}: runs {by_status}, unrouted events {unrouted[:10]}\n{cluster.logs()}"
        ) from exc
    for daemon in cluster.slots:
        assert daemon.stop() == 0, cluster.logs()
    total_s = time.monotonic() - began

    workflows = assert_events_routed_once(pg_url, acked)
    assert_runs_final_once(pg_url, workflows)
    assert_one_active_at_a_time(pg_url, ("deploys", "audits", "locks"))
    assert_one_run_per_tick(pg_url)
    assert_payments_reached_their_runs(pg_url)
    assert_no_write_after_the_fence(pg_url, frozen)
    assert frozen.code == 3, f"the frozen daemon exited {frozen.code}:\n{frozen.log}"
    assert "fenced" in frozen.log, frozen.log
    served = assert_isolated_steps_spread(pg_url)
    assert_late_replies_refused(pg_url, storm.frozen_standby)
    assert query(pg_url, "SELECT id, run_id, attempts FROM step_jobs") == [], (
        "every step job's reply was taken or forgotten"
    )
    crashed = query(pg_url, "SELECT run_id, error FROM runs WHERE error_code = 'STEP_CRASHED'")
    assert not crashed, f"steps failed as crashed: {crashed[:5]}"
    assert storm.serving_kills > 0, "a standby was killed while it served a step"
    assert len(workflows) >= 2_000, f"seed {seed}: only {len(workflows)} runs started"
    ((elsewhere,),) = query(pg_url, "SELECT count(*) FROM timeline WHERE kind = 'run.elsewhere'")
    assert elsewhere > 0, "standbys executed a share of the runs' segments"
    by_workflow = collections.Counter(workflows.values())
    print(
        f"{len(acked)} events acknowledged, {len(workflows)} runs ({dict(by_workflow)});"
        f" {storm.sigkills} SIGKILLs ({storm.in_takeover} during a take-over) and a freeze"
        f" (taken over in {frozen.takeover_s:.1f} s) in {chaos_s:.1f} s; SIGKILL to the next"
        f" daemon ready: median {statistics.median(storm.takeovers):.2f} s,"
        f" max {max(storm.takeovers):.2f} s; settled and stopped at {total_s:.1f} s;"
        f" {len(cluster.started)} daemons started"
    )
    print(f"run segments executed on standbys: {elsewhere}")
    on_standbys = sum(n for n, _ in served.values())
    print(
        f"isolated steps: {on_standbys} of {sum(a + b for a, b in served.values())} ran on"
        f" standbys; by daemon (as a standby, as the active one): {served}; standbys killed:"
        f" {storm.standby_kills} ({storm.serving_kills} holding a step); one frozen with"
        f" {len(storm.frozen_standby.held)} steps for"
        f" {(storm.frozen_standby.continued_us - storm.frozen_standby.stopped_us) / 1e6:.1f} s"
    )


def assert_events_routed_once(url: str, acked: dict[str, str]) -> dict[str, str]:
    """Each acknowledged emit is one event; each event routed, one run per matching trigger.

    The system events of run ends (``run.completed``, journaled because ``alerts``
    listens) are held to the same rule. Returns each run's workflow, by run id.
    """
    keys = dict(query(url, "SELECT key, target FROM idempotency_keys WHERE kind = 'emit'"))
    assert keys == acked, "each key names the event its emitter got back"
    events = {
        event_id: (event_type, json.loads(data), source)
        for event_id, event_type, data, source in query(
            url, "SELECT event_id, type, data, source FROM events"
        )
    }
    emitted = {event_id for event_id, (_, _, source) in events.items() if source != "system"}
    assert emitted == set(acked.values()), "the events are exactly the acknowledged ones"
    (unrouted,) = query(url, "SELECT count(*) FROM events WHERE routed_at IS NULL")
    assert unrouted == (0,), "every event was routed"

    started: dict[str, list[str]] = collections.defaultdict(list)
    workflows: dict[str, str] = {}
    by_event: dict[str, str] = {}
    for run_id, workflow, event_id in query(
        url,
        "SELECT r.run_id, r.workflow_id, er.event_id FROM runs r LEFT JOIN event_routes er"
        " ON er.run = r.id AND er.action IN ('started', 'queued', 'dropped', 'rejected')",
    ):
        workflows[run_id] = workflow
        if event_id is None:
            assert workflow == "ticks", f"run {run_id} of {workflow} started by no event"
            continue
        assert run_id not in by_event, f"run {run_id} started by two events"
        by_event[run_id] = event_id
        started[event_id].append(workflow)
    wrong = {
        event_id: (event_type, data, started.get(event_id, []))
        for event_id, (event_type, data, _) in events.items()
        if sorted(started.get(event_id, [])) != sorted(matching(event_type, data))
    }
    assert not wrong, (
        f"events not started once per matching trigger: {list(wrong.items())[:5]}\n"
        + explain(url, list(wrong)[:3])
    )
    return workflows


def explain(url: str, event_ids: list[str]) -> str:
    """The routes of these events and their runs' timelines, for a failure's message."""
    lines = []
    for event_id, created, routed in query(
        url,
        "SELECT event_id, created_at, routed_at FROM events WHERE event_id = ANY(?)",
        (event_ids,),
    ):
        lines.append(f"event {event_id} created {created} routed {routed}")
        for run, run_id, action, status, daemon in query(
            url,
            "SELECT r.id, r.run_id, er.action, r.status, r.daemon FROM event_routes er"
            " JOIN runs r ON r.id = er.run WHERE er.event_id = ? ORDER BY r.id",
            (event_id,),
        ):
            lines.append(f"  run {run} {run_id} {action} {status} daemon {daemon}")
            for entry in query(
                url, "SELECT id, at, kind, message FROM timeline WHERE run = ? ORDER BY id", (run,)
            ):
                lines.append(f"    {entry}")
            for entry in query(
                url,
                "SELECT position, step, kind, started_at, ended_at, state FROM checkpoints"
                " WHERE run = ? ORDER BY position",
                (run,),
            ):
                lines.append(f"    checkpoint {entry}")
            for entry in query(
                url,
                "SELECT w.id, w.status, w.persistent, w.created_at, w.timeout_at,"
                " (SELECT array_agg(event_id) FROM wait_buffer b WHERE b.wait = w.id)"
                " FROM waits w WHERE w.run = ? ORDER BY w.id",
                (run,),
            ):
                lines.append(f"    wait {entry}")
    lines.extend(f"daemon {row}" for row in query(url, "SELECT * FROM daemons ORDER BY id"))
    return "\n".join(lines)


def assert_runs_final_once(url: str, workflows: dict[str, str]) -> None:
    """Each run is final and ended once: one end journaled, its last step's checkpoint last.

    A run that completed has one ``run.completed`` system event (written with its end);
    one that never started has one ``run.dropped`` or ``run.rejected`` timeline entry.
    """
    statuses = dict(query(url, "SELECT run_id, status FROM runs"))
    ends: dict[str, list[str]] = collections.defaultdict(list)
    for event_type, data in query(url, "SELECT type, data FROM events WHERE source = 'system'"):
        ends[json.loads(data)["run_id"]].append(event_type.removeprefix("run."))
    for run_id, kind in query(
        url,
        "SELECT r.run_id, t.kind FROM timeline t JOIN runs r ON r.id = t.run"
        " WHERE t.kind IN ('run.dropped', 'run.rejected')",
    ):
        ends[run_id].append(kind.removeprefix("run."))
    allowed = {
        "orders": {"completed"},
        "deploys": {"completed"},
        "ticks": {"completed"},
        "alerts": {"completed"},
        "audits": {"completed", "rejected"},
        "locks": {"completed", "dropped"},
    }
    wrong = {
        run_id: (workflows[run_id], status, ends.get(run_id))
        for run_id, status in statuses.items()
        if status not in allowed[workflows[run_id]]
        or ends.get(run_id, []) != ([] if workflows[run_id] == "alerts" else [status])
    }
    assert not wrong, f"runs not ended exactly once as expected: {list(wrong.items())[:5]}"
    last = query(
        url,
        "SELECT r.run_id, r.workflow_id, c.step, c.position, c.base, (SELECT count(*)"
        " FROM checkpoints WHERE run = r.id) FROM runs r JOIN checkpoints c ON c.run = r.id"
        " AND c.position = (SELECT max(position) FROM checkpoints WHERE run = r.id)"
        " WHERE r.status = 'completed'",
    )
    assert len(last) == sum(status == "completed" for status in statuses.values())
    broken = [row for row in last if row[2] != LAST_STEPS[row[1]] or row[5] != row[3] + 1 or row[4]]
    assert not broken, (
        f"completed runs whose checkpoints do not end with their last step: {broken[:5]}"
    )


def assert_one_active_at_a_time(url: str, workflows: tuple[str, ...]) -> None:
    """No two runs of a one-at-a-time workflow were ever active at once.

    A run is active from its start (its ``run.started`` entry after a wait in the queue,
    else its creation: its input's checkpoint) to its end (the system event journaled
    with it); a run the chaos interrupted counts as active until it ends, whichever
    daemon ended it. Runs dropped or rejected were never active.
    """
    ends = {
        json.loads(data)["run_id"]: at
        for data, at in query(url, "SELECT data, created_at FROM events WHERE source = 'system'")
    }
    for workflow in workflows:
        spans = []
        for run_id, created, started in query(
            url,
            "SELECT r.run_id, c.started_at, (SELECT min(at) FROM timeline t WHERE t.run = r.id"
            " AND t.kind = 'run.started') FROM runs r JOIN checkpoints c ON c.run = r.id"
            " AND c.position = 0 WHERE r.workflow_id = ? AND r.status = 'completed'",
            (workflow,),
        ):
            spans.append((started or created, ends[run_id], run_id))
        spans.sort()
        assert len(spans) > 1, f"{workflow}: too few runs to test its mode"
        overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
        assert not overlaps, f"{workflow}: two runs active at once: {overlaps[:3]}"


def assert_one_run_per_tick(url: str) -> int:
    """The schedule fired each tick (one a second) exactly once, none missed in between."""
    inputs = query(
        url,
        "SELECT c.state, c.base FROM checkpoints c JOIN runs r ON r.id = c.run"
        " WHERE r.workflow_id = 'ticks' AND c.position = 0",
    )
    assert all(base is None for _, base in inputs), "small states are kept whole"
    ticks = collections.Counter(json.loads(state)["scheduled_for"] for state, _ in inputs)
    repeated = [tick for tick, n in ticks.items() if n > 1]
    assert not repeated, f"schedule ticks fired more than once: {repeated[:5]}"
    seconds = sorted(int(time_of(tick)) for tick in ticks)
    assert len(seconds) > 5, f"too few ticks: {seconds}"
    missed = sorted(set(range(seconds[0], seconds[-1] + 1)) - set(seconds))
    assert not missed, f"ticks missed (catch_up=True fires every one): {missed[:10]}"
    return len(seconds)


def time_of(iso: str) -> float:
    """Epoch seconds of an ISO-8601 time."""
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def assert_payments_reached_their_runs(url: str) -> None:
    """A payment that resumed an order's run (at once, or from its buffer) is in its state.

    A payment that came after the run's pause timed out is only kept for it (buffered).
    """
    rows = query(
        url,
        "SELECT e.event_id, e.data, c.state, c.base FROM event_routes er"
        " JOIN events e ON e.event_id = er.event_id JOIN runs r ON r.id = er.run"
        " JOIN checkpoints c ON c.run = r.id"
        " AND c.position = (SELECT max(position) FROM checkpoints WHERE run = r.id)"
        " WHERE e.type = 'payment.received' AND er.action = 'resumed'"
        " AND r.workflow_id = 'orders'",
    )
    assert rows, "some payments resumed their orders"
    assert all(base is None for *_, base in rows)
    lost = [
        event_id
        for event_id, data, state, _ in rows
        if json.loads(state).get("payment") != json.loads(data)
    ]
    assert not lost, (
        f"{len(lost)} of {len(rows)} payments routed to a run that did not get them:\n"
        + explain(url, lost[:2])
    )


def assert_no_write_after_the_fence(url: str, frozen: Frozen) -> None:
    """The frozen daemon was fenced, and nothing it did after it was continued was kept."""
    rows = query(url, "SELECT heartbeat_at, fenced_at FROM daemons WHERE pid = ?", (frozen.pid,))
    assert len(rows) == 1, rows
    ((heartbeat_at, fenced_at),) = rows
    assert fenced_at is not None, "the frozen daemon was fenced"
    assert heartbeat_at <= fenced_at, "no batch of the frozen daemon committed after its fence"
    late = [
        (run_id, step)
        for run_id, step, state in query(
            url,
            "SELECT r.run_id, c.step, c.state FROM checkpoints c JOIN runs r ON r.id = c.run"
            " WHERE c.ended_at >= ?",
            (frozen.continued_us,),
        )
        # The step's own record: an earlier step's (before the freeze) is carried along.
        if step in RECORDS and json.loads(state)[f"{RECORDS[step]}_by"] == frozen.pid
    ]
    assert not late, f"steps the fenced daemon ran after it was continued were kept: {late[:3]}"


# The sync steps each workflow's completed runs have, once each.
SYNC_PIPELINES = {
    "orders": ["ship"],
    "audits": ["audit"],
    "deploys": ["build", "release"],
    "locks": ["acquire", "unlock"],
    "ticks": ["tick"],
    "alerts": [],
}


def _history(url: str, run_id: str) -> list[tuple[Any, ...]]:
    """A run's checkpoints and timeline, in order: what a failed assertion shows."""
    return query(
        url,
        "SELECT 'checkpoint', c.position, c.step, c.ended_at, c.state FROM checkpoints c"
        " JOIN runs r ON r.id = c.run WHERE r.run_id = ? UNION ALL"
        " SELECT t.kind, t.position, t.step, t.at, t.message FROM timeline t"
        " JOIN runs r ON r.id = t.run WHERE r.run_id = ? ORDER BY 4",
        (run_id, run_id),
    )


def assert_isolated_steps_spread(url: str) -> dict[int, tuple[int, int]]:
    """Each run's sync steps were journaled once each, and standbys ran a share of them.

    A sync step records the daemon whose worker ran it (the worker's parent) and when it
    started: that daemon was a standby then if it registered as the active daemon (its
    ``daemons`` row) only later, or never. Returns, by daemon pid, how many steps it ran
    as a standby and as the active daemon.
    """
    wrong = [
        (run_id, workflow, status, steps)
        for run_id, workflow, status, steps in query(
            url,
            "SELECT r.run_id, r.workflow_id, r.status, array_remove(array_agg(c.step), NULL)"
            " FROM runs r LEFT JOIN checkpoints c ON c.run = r.id AND c.step = ANY(?)"
            " GROUP BY r.id",
            (SYNC_STEPS,),
        )
        if sorted(steps) != (sorted(SYNC_PIPELINES[workflow]) if status == "completed" else [])
    ]
    assert not wrong, (
        f"runs whose sync steps were not journaled once each: {wrong[:5]}; the first one's"
        f" history: {_history(url, wrong[0][0])}"
    )
    active_since = dict(query(url, "SELECT pid, started_at FROM daemons"))
    ran: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for step, state, base in query(
        url, "SELECT step, state, base FROM checkpoints WHERE step = ANY(?)", (SYNC_STEPS,)
    ):
        assert base is None, "small states are kept whole"
        data = json.loads(state)
        by, at = data[f"{RECORDS[step]}_by"], data[f"{RECORDS[step]}_at"]
        ran[by][by in active_since and active_since[by] <= at] += 1
    served = {pid: (standby, here) for pid, (standby, here) in sorted(ran.items())}
    standbys = [pid for pid, (standby, _) in served.items() if standby]
    assert len(standbys) >= 2, f"isolated steps ran on {len(standbys)} standbys: {served}"
    return served


def assert_late_replies_refused(url: str, frozen: FrozenStandby) -> None:
    """No step the frozen standby ran before it was continued was journaled after that.

    Its steps were offered again while it was stopped: its replies, written once it was
    continued, must have been refused (the step's checkpoint is the other daemon's).
    """
    assert frozen.held, "the standby was frozen holding steps"
    late = [
        (run_id, step, ended_at)
        for run_id, step, state, ended_at in query(
            url,
            "SELECT r.run_id, c.step, c.state, c.ended_at FROM checkpoints c"
            " JOIN runs r ON r.id = c.run WHERE c.step = ANY(?) AND c.ended_at >= ?",
            (SYNC_STEPS, frozen.continued_us),
        )
        if json.loads(state)[f"{RECORDS[step]}_by"] == frozen.pid
        and json.loads(state)[f"{RECORDS[step]}_at"] < frozen.continued_us
    ]
    assert not late, f"late replies of the frozen standby were kept: {late[:3]}"

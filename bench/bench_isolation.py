"""What isolated steps (sync steps in worker processes) cost, next to async and threaded steps.

Prints figures; it is not a test. Run: ``python bench/bench_isolation.py [--quick]``
(``--quick``: fewer runs, a smoke run of about 20 s; the full run takes about 2 minutes).
Every measurement opens a fresh journal in a temporary folder at ``synchronous="NORMAL"``
(WAL, no fsync per commit), so the figures are the step's cost, not the disk's. Each
figure is the median of 3 repetitions, each on its own runtime. The step functions live
in ``iso_steps.py`` next to this file: a worker imports an isolated step by module and
name, and the pool passes this process's ``sys.path`` (which holds this folder) to it.

1. **Overhead per step** of a trivial step ``return state``, written as an async step, a
   sync step in a thread (the default) and an isolated sync step (``Step(fn,
   isolate=True)``, warm workers). Runs of 10 such steps run one after the other:
   - *p50 / p99 µs*: from the runtime's ``step.started`` event to its ``step.completed``
     event (``rt.on`` handlers taking ``time.perf_counter_ns()``). That span holds the
     lease check, the call (thread hand-off, or the pipe round trip to the worker and the
     JSON both ways), the new state's encoding and the checkpoint's enqueueing; not the
     commit, which the writer thread does in the background.
   - *µs per added step*: (median 10-step run - median 1-step run) / 9, each from
     ``invoke`` to its return: what one more step adds to a run, commits included.
2. **Runs/s, 100 concurrent runs** of 3 steps, each ``time.sleep(0.001)`` (1 ms of
   blocking I/O) then ``n += 1``: 100 ``invoke`` calls gathered, awaited, 10 times over
   (after one warm-up batch), the setups' repetitions interleaved. Threaded:
   ``max_threads=32`` (the default); isolated: ``Workers(max=N, warm=N)``. *iso/thread*
   is how many times slower isolated is than the default threads (the goal: at most 2x);
   *iso/N threads* compares with ``max_threads=N``, the same number of steps at once:
   what a step costs in a process rather than a thread, parallelism aside. In these
   repetitions a worker runs about 3,300/N steps, so none reaches ``recycle_after_steps``
   (10,000 by default); the *sustained* line runs long enough for every worker to be
   replaced about once at ``recycle_after_steps=1,000`` (the old default), next to the
   default.
3. **Pool start-up**: ``Runtime(isolate=True, workers=Workers(max=N, warm=N))`` from the
   call to ``start()`` until N workers have said they are ready (polled every ms), and
   ``start()`` alone; then one cold worker: spawning ``python -m
   orchestrator.engine.workers.child`` until its ready message, and the first isolated run
   of a runtime with ``warm=0`` (spawn, imports, loading the step's module, the step).
4. **Memory**: resident memory (``VmRSS`` in ``/proc/PID/status``) and proportional set
   size (``Pss`` in ``/proc/PID/smaps_rollup``, shared pages divided among their users) of
   an idle worker, fresh and after it loaded ``iso_steps`` and ran a step; and of this
   process (the daemon) before and after 4 workers started.

Figures 3 and 4 read the runtime's private pool (``rt._workers``) for its readiness and
pids: nothing public says when a warm worker is ready.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import fmt, fresh_dir, machine_line, percentile
from iso_steps import astep, io_step, step

from orchestrator import Runtime, Step, Workers, Workflow
from orchestrator.engine.workers import WorkerPool

REPEAT = 3
SYNC = "NORMAL"


@dataclass(frozen=True)
class Counts:
    overhead_runs: int  # sequential 10-step runs per repetition (as many 1-step runs)
    batches: int  # batches of 100 concurrent runs per repetition
    workers: tuple[int, ...]  # Workers(max=N) tried in figure 2
    sustained: tuple[int, int]  # Workers(max=N), batches: a long run, workers recycled


FULL = Counts(300, 10, (4, 8, 12, 16, 32), (8, 40))
QUICK = Counts(50, 3, (4, 16), (4, 20))

KINDS: dict[str, Callable[[], Any]] = {
    "async": lambda: astep,
    "thread": lambda: step,
    "isolated": lambda: Step(step, isolate=True),
}


def median(values: list[float]) -> float:
    return statistics.median(values)


async def invoke(rt: Runtime, trigger: str, data: dict[str, Any]) -> dict[str, Any]:
    result = await rt.invoke("bench", trigger, data)
    if not result.ok:
        raise RuntimeError(f"run {result.run_id} ended {result.status}: {result.error}")
    return result.state


def runtime(
    db: Path, workflow: Workflow, *, warm: int = 1, workers: int = 4, **options: Any
) -> Runtime:
    recycle = options.pop("recycle_after_steps", Workers.recycle_after_steps)
    return Runtime(
        db,
        workflows=[workflow],
        synchronous=SYNC,
        workers=Workers(max=workers, warm=warm, recycle_after_steps=recycle),
        **options,
    )


# -- 1. overhead per step ------------------------------------------------------------------


@dataclass
class Overhead:
    p50: float
    p99: float
    added: float


async def overhead_once(kind: str, runs: int) -> Overhead:
    make = KINDS[kind]
    wf = Workflow(id="bench", pipelines={"ten": [make() for _ in range(10)], "one": [make()]})
    spans: list[float] = []
    started = [0]

    def on_started(_name: str, _payload: dict[str, Any]) -> None:
        started[0] = time.perf_counter_ns()

    def on_completed(_name: str, _payload: dict[str, Any]) -> None:
        spans.append((time.perf_counter_ns() - started[0]) / 1000)

    with fresh_dir() as tmp:
        async with runtime(tmp / "journal.db", wf) as rt:
            for trigger in ("ten", "one"):
                for _ in range(20):
                    await invoke(rt, trigger, {})
            rt.on("step.started", on_started)
            rt.on("step.completed", on_completed)
            times: dict[str, list[float]] = {"ten": [], "one": []}
            for _ in range(runs):
                for trigger in times:  # interleaved, so drift hits both alike
                    began = time.perf_counter()
                    await invoke(rt, trigger, {})
                    times[trigger].append(time.perf_counter() - began)
    added = (median(times["ten"]) - median(times["one"])) / 9 * 1e6
    return Overhead(percentile(spans, 50), percentile(spans, 99), added)


async def overhead(kind: str, counts: Counts) -> Overhead:
    reps = [await overhead_once(kind, counts.overhead_runs) for _ in range(REPEAT)]
    return Overhead(
        median([r.p50 for r in reps]),
        median([r.p99 for r in reps]),
        median([r.added for r in reps]),
    )


# -- 2. concurrent runs of blocking I/O ----------------------------------------------------


@dataclass(frozen=True)
class IoSetup:
    """One column of figure 2: threads or workers, and how many."""

    isolated: bool
    n: int  # max_threads, or Workers(max=n)
    recycle_after_steps: int = Workers.recycle_after_steps  # the default


async def io_rate_once(setup: IoSetup, batches: int) -> float:
    wf = Workflow(id="bench", pipelines={"three": [Step(io_step, isolate=setup.isolated)] * 3})
    options: dict[str, Any] = {"max_threads": setup.n, "workers": setup.n, "warm": setup.n}
    options["recycle_after_steps"] = setup.recycle_after_steps
    with fresh_dir() as tmp:
        async with runtime(tmp / "journal.db", wf, **options) as rt:
            await batch(rt)  # warm-up: every worker spawned and has loaded the module
            began = time.perf_counter()
            for _ in range(batches):
                await batch(rt)
            return 100 * batches / (time.perf_counter() - began)


async def batch(rt: Runtime, n: int = 100) -> None:
    states = await asyncio.gather(*(invoke(rt, "three", {"n": 0}) for _ in range(n)))
    if any(s["n"] != 3 for s in states):
        raise RuntimeError("a run ended with a wrong state")


async def io_rates(setups: list[IoSetup], batches: int) -> dict[IoSetup, float]:
    """Median runs/s of each setup; repetitions interleaved, so load drift hits all alike."""
    rates: dict[IoSetup, list[float]] = {setup: [] for setup in setups}
    for _ in range(REPEAT):
        for setup in setups:
            rates[setup].append(await io_rate_once(setup, batches))
    return {setup: median(values) for setup, values in rates.items()}


# -- 3. pool start-up ----------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not condition():  # noqa: ASYNC110 - nothing signals readiness: polled
            await asyncio.sleep(0.001)


def idle_workers(rt: Runtime) -> int:
    return len(rt._workers._idle)


async def startup_once(n: int) -> tuple[float, float]:
    """(ms until start() returned, ms until n warm workers were ready)."""
    wf = Workflow(id="bench", pipelines={"one": [Step(step, isolate=True)]})
    with fresh_dir() as tmp:
        rt = runtime(tmp / "journal.db", wf, warm=n, workers=n)
        began = time.perf_counter()
        await rt.start()
        try:
            started = time.perf_counter()
            await until(lambda: idle_workers(rt) >= n)
            ready = time.perf_counter()
        finally:
            await rt.stop()
    return (started - began) * 1000, (ready - began) * 1000


async def cold_spawn_once() -> float:
    pool = WorkerPool(Workers(warm=0))
    began = time.perf_counter()
    worker = await pool._start()
    spent = time.perf_counter() - began
    pool._release(worker, healthy=True)
    await pool.close()
    return spent * 1000


async def first_run_once() -> tuple[float, float]:
    """(ms of the first isolated 1-step run with warm=0, median ms of the next 20)."""
    wf = Workflow(id="bench", pipelines={"one": [Step(step, isolate=True)]})
    with fresh_dir() as tmp:
        async with runtime(tmp / "journal.db", wf, warm=0) as rt:
            began = time.perf_counter()
            await invoke(rt, "one", {})
            first = time.perf_counter() - began
            later = []
            for _ in range(20):
                began = time.perf_counter()
                await invoke(rt, "one", {})
                later.append(time.perf_counter() - began)
    return first * 1000, median(later) * 1000


# -- 4. memory -----------------------------------------------------------------------------


def memory_kib(pid: int | str = "self") -> tuple[int, int | None]:
    """(VmRSS, Pss) of a process in KiB (Pss None where smaps_rollup is missing)."""
    rss = _proc_field(f"/proc/{pid}/status", "VmRSS:")
    try:
        pss: int | None = _proc_field(f"/proc/{pid}/smaps_rollup", "Pss:")
    except OSError:
        pss = None
    return rss, pss


def _proc_field(path: str, name: str) -> int:
    with open(path) as lines:
        for line in lines:
            if line.startswith(name):
                return int(line.split()[1])
    raise OSError(f"{name} not in {path}")


@dataclass
class Memory:
    fresh: tuple[float, float | None]  # an idle worker before its first step
    loaded: tuple[float, float | None]  # an idle worker after loading iso_steps and a step
    daemon_before: float  # this process, runtime started, no worker yet
    daemon_after: float  # the same with 4 workers started and used


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


async def memory_once() -> Memory:
    wf = Workflow(id="bench", pipelines={"three": [Step(io_step, isolate=True)] * 3})
    with fresh_dir() as tmp:
        async with runtime(tmp / "journal.db", wf, warm=0) as rt:
            daemon_before = memory_kib()[0]
            pool = rt._workers
            workers = [await pool._start() for _ in range(4)]
            for worker in workers:
                pool._release(worker, healthy=True)
            fresh = [memory_kib(pid) for pid in pool.pids()]
            await batch(rt)  # 100 runs at once: every worker loads the module
            loaded = [memory_kib(pid) for pid in pool.pids()]
            daemon_after = memory_kib()[0]
    return Memory(_mean_pair(fresh), _mean_pair(loaded), daemon_before, daemon_after)


def _mean_pair(pairs: list[tuple[int, int | None]]) -> tuple[float, float | None]:
    psses = [p for _, p in pairs if p is not None]
    return (
        statistics.mean(r for r, _ in pairs),
        statistics.mean(psses) if len(psses) == len(pairs) else None,
    )


# -- output --------------------------------------------------------------------------------


async def print_overhead(counts: Counts) -> None:
    print()
    print(f"1. overhead per step: `return state`, {counts.overhead_runs} sequential runs of 10")
    print(f"{'':12}{'p50 µs':>10}{'p99 µs':>10}{'µs per added step':>20}")
    for kind in KINDS:
        o = await overhead(kind, counts)
        print(f"{kind:12}{fmt(o.p50, 1):>10}{fmt(o.p99, 1):>10}{fmt(o.added, 1):>20}")


async def print_io(counts: Counts) -> None:
    print()
    print(
        f"2. runs/s: 100 concurrent runs of 3 steps of time.sleep(0.001), "
        f"{counts.batches} batches after 1 warm-up"
    )
    default = IoSetup(False, 32)
    setups = [default]
    for n in counts.workers:
        setups += [IoSetup(True, n)] + ([IoSetup(False, n)] if n != default.n else [])
    rates = await io_rates(setups, counts.batches)
    threaded = rates[default]
    print(f"threads, max_threads=32 (the default): {fmt(threaded)} runs/s")
    print(f"{'N':>4}{'isolated':>10}{'iso/thread':>12}{'N threads':>11}{'iso/N threads':>15}")
    for n in counts.workers:
        iso, same = rates[IoSetup(True, n)], rates[IoSetup(False, n)]
        print(f"{n:>4}{fmt(iso):>10}{threaded / iso:>11.2f}x{fmt(same):>11}{same / iso:>14.2f}x")
    n, batches = counts.sustained
    recycled = [IoSetup(True, n, 1_000), IoSetup(True, n)]
    sustained = await io_rates(recycled, batches)
    steps = 300 * batches // n
    print(
        f"sustained, {batches} batches at Workers(max={n}) (~{steps:,} steps a worker): "
        f"{fmt(sustained[recycled[0]])} runs/s with recycle_after_steps=1,000, "
        f"{fmt(sustained[recycled[1]])} with the default {Workers.recycle_after_steps:,}"
    )


async def print_startup() -> None:
    print()
    print("3. pool start-up (ms)")
    print(f"{'':28}{'start() returned':>18}{'N workers ready':>18}")
    for n in (1, 4, 8):
        reps = [await startup_once(n) for _ in range(REPEAT)]
        returned = median([r[0] for r in reps])
        ready = median([r[1] for r in reps])
        print(f"{f'warm={n}':28}{fmt(returned, 1):>18}{fmt(ready, 1):>18}")
    spawn = median([await cold_spawn_once() for _ in range(REPEAT)])
    print(f"{'one cold worker: spawn to ready':40}{fmt(spawn, 1):>8}")
    firsts = [await first_run_once() for _ in range(REPEAT)]
    first, later = median([f[0] for f in firsts]), median([f[1] for f in firsts])
    print(
        f"{'first isolated run, warm=0':40}{fmt(first, 1):>8}"
        f"   (later runs: {fmt(later, 2)} ms each)"
    )


async def print_memory() -> None:
    print()
    reps = [await memory_once() for _ in range(REPEAT)]
    print("4. memory (MiB; medians)")
    print(f"{'':40}{'RSS':>8}{'PSS':>8}")
    for label, pick in (
        ("idle worker, fresh", lambda m: m.fresh),
        ("idle worker, iso_steps loaded + a step", lambda m: m.loaded),
    ):
        pairs = [pick(m) for m in reps]
        pss = [p for _, p in pairs if p is not None]
        cell = median(pss) if len(pss) == len(pairs) else None
        print(f"{label:40}{mib(median([r for r, _ in pairs])):>8}{mib(cell):>8}")
    before = median([m.daemon_before for m in reps])
    after = median([m.daemon_after for m in reps])
    print(f"{'daemon, before workers':40}{mib(before):>8}")
    print(f"{'daemon, after 4 workers ran 300 steps':40}{mib(after):>8}")


async def main(argv: list[str]) -> None:
    counts = QUICK if "--quick" in argv else FULL
    print(machine_line())
    print(f"synchronous={SYNC}, WAL; medians of {REPEAT} repetitions, each on a fresh journal")
    print(load_line("at the start"))
    sections: list[Callable[[], Awaitable[None]]] = [
        lambda: print_overhead(counts),
        lambda: print_io(counts),
        print_startup,
        print_memory,
    ]
    for section in sections:
        await section()
    print()
    print(load_line("at the end"))


def load_line(when: str) -> str:
    """The machine's load average: other work on it moves every figure here."""
    one, five, _ = os.getloadavg()
    return f"load average {when}: {one:.2f} (1 min), {five:.2f} (5 min)"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

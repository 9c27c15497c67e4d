"""100,000 paused runs: time to park them, ready after a restart, event->resume latency.

Prints figures; it is not a test. Run: ``python bench/bench_parked.py [--quick] [--runs N]``.
Each run pauses on its own key (``ctx.pause(event=..., where={"order_id": ...})``). The
parking phase runs in this process; the restart (ready time, event->resume latency, peak
RSS) runs in a fresh child process on the same journal, so its RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import faulthandler
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_events import ORDERS, PAYMENT, Completions, order
from common import default_synchronous, fresh_dir, machine_line, percentile

from orchestrator import Runtime

FULL, QUICK = 100_000, 10_000
SAMPLES = 1_000  # events emitted one at a time after the restart, each resuming one run
BATCH = 10_000  # runs started at once while parking


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def park_all(db: Path, n: int) -> tuple[float, float]:
    """Seconds to start `n` runs and see each of them paused (committed), and CPU seconds."""
    async with Runtime(db, workflows=[ORDERS]) as rt:
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, BATCH):
            results = await asyncio.gather(
                *(rt.invoke("orders", "pay", order(i)) for i in range(first, min(n, first + BATCH)))
            )
            bad = [r for r in results if r.status != "paused"]
            if bad:
                raise RuntimeError(f"{len(bad)} runs did not pause, e.g. {bad[0]!r}")
        return time.perf_counter() - start, time.process_time() - cpu


async def restart(db: Path, n: int, samples: int, profile: bool) -> dict[str, Any]:
    """Ready time of a Runtime opened on `db`, then `samples` emits timed one at a time."""
    profiler = cProfile.Profile() if profile else None
    start, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    rt = Runtime(db, workflows=[ORDERS])
    await rt.start()
    ready, ready_cpu = time.perf_counter() - start, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    try:
        done_at = Completions(rt)
        latencies = []
        for i in range(samples):
            finished = done_at.until(i + 1)
            began = time.perf_counter()
            await rt.emit(PAYMENT, {"order_id": f"order-{i}", "amount": 10})
            latencies.append(await finished - began)
        completed = await rt.list_runs(status="completed", limit=-1)
        if len(completed) != samples:
            raise RuntimeError(f"{len(completed)} of {samples} runs completed")
        paused = await rt.list_runs(status="paused", limit=1)
        if n > samples and not paused:
            raise RuntimeError("no run is left paused")
    finally:
        await rt.stop()
    return {
        "ready_s": ready,
        "ready_cpu_s": ready_cpu,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "rss_mb": peak_rss_mb(),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="100,000 paused runs: park, ready, resume.")
    parser.add_argument("--quick", action="store_true", help="10,000 runs")
    parser.add_argument("--runs", type=int, default=None, help="runs to park")
    parser.add_argument("--profile", action="store_true", help="cProfile the restart")
    parser.add_argument("--restart", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.runs or (QUICK if args.quick else FULL)
    samples = min(SAMPLES, n)
    if args.restart is not None:  # the child: restart on a parked journal
        faulthandler.dump_traceback_later(900, exit=True)  # a hang ends with its stacks
        print(json.dumps(asyncio.run(restart(args.restart, n, samples, args.profile))))
        return
    print(machine_line())
    print(
        f"ours: synchronous={default_synchronous()}, WAL; {n:,} runs of [wait_for_payment, "
        f"done], each paused on {PAYMENT} where order_id == its own"
    )
    with fresh_dir() as tmp:
        db = tmp / "journal.db"
        park_s, park_cpu = asyncio.run(park_all(db, n))
        park_rss = peak_rss_mb()
        command = [sys.executable, __file__, "--runs", str(n), "--restart", str(db)]
        if args.profile:
            command.append("--profile")
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        child = json.loads(out.stdout)
    print(
        f"park {n:,} runs (start + pause, committed)   {park_s:8.2f} s   ({n / park_s:,.0f}/s, "
        f"CPU {park_cpu:.2f} s)"
    )
    print(f"peak RSS while parking                         {park_rss:8.0f} MB")
    print(
        f"restart: ready with {n:,} paused              {child['ready_s']:8.3f} s   "
        f"(CPU {child['ready_cpu_s']:.3f} s, all threads)"
    )
    print(
        f"event -> resumed run completed ({samples:,} samples, {n:,} parked): "
        f"p50 {child['p50_ms']:.2f} ms, p99 {child['p99_ms']:.2f} ms, max {child['max_ms']:.2f} ms"
    )
    print(f"peak RSS of the restarted process              {child['rss_mb']:8.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])

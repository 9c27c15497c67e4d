"""Save-to-live latency: how long after a workflow file is saved its new version is live.

Prints figures; it is not a test. Run: ``python bench/bench_reload.py [--saves N]``.

A real daemon (``orchestrator up DIR --headless``, its own process) serves a fresh folder
holding one workflow file. The file is saved again and again, each time with a new
version (a new ``VERSION`` constant, so a new content hash), in two ways: a plain write
(open, truncate, write, close: what ``echo > file`` does) and an atomic save (write a
hidden temporary file in the same folder, then rename it over the original: what most
editors do). From the moment the save returned, the journal's ``workflows`` table is
polled (plain sqlite3, every millisecond) until it names the new version: the daemon
commits that row when it registers the version, so from then on triggers and invokes use
it. Each version is then checked end to end: a run invoked through the inbox (what
``orchestrator invoke`` writes) must record the new version. Saves are 0.2-0.4 s apart,
so each is its own burst for the watcher.

Start-up is measured too: from starting ``orchestrator up`` to its ready flag in the
lease, on a folder of one file and on a folder of many (their probes run in parallel,
up to one per core; their imports in order).

The daemon imports each version twice: once in a probe subprocess (``python -m
orchestrator.folder.probe``), so a file that hangs or exits at import cannot take the daemon
down, then in process. The probe's cost alone is printed too, with the interpreter's bare
start-up beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import daemon, fresh_dir, latency_row, machine_line, read_journal, wall_ms

from orchestrator.folder.loader import PARALLEL_PROBES, FolderConfig, digest_of, probe
from orchestrator.journal.sqlite.commands import queue_invoke

WORKFLOW = """\
from orchestrator import Workflow

VERSION = {version}


async def step(state):
    return {{**state, "version": VERSION}}


workflow = Workflow(id="reload", pipelines={{"go": [step]}})
"""
GOAL_MS = 1_000


def plain_write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def atomic_save(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temp, path)


SAVES: dict[str, Callable[[Path, bytes], None]] = {
    "plain write": plain_write,
    "write temp + rename": atomic_save,
}


def is_live(db: Path, version: str) -> bool:
    rows = read_journal(db, "SELECT version FROM workflows WHERE workflow_id = 'reload'")
    return rows == [(version,)]


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)


def run_version(db: Path) -> str:
    """Invoke through the inbox; the version the run recorded."""
    run_id = queue_invoke(db, "reload", "go", {})
    found: list[tuple[str]] = []

    def done() -> bool:
        found[:] = read_journal(
            db, "SELECT version FROM runs WHERE run_id = ? AND status = 'completed'", (run_id,)
        )
        return bool(found)

    wait_for(done, f"run {run_id}")
    return found[0][0]


def measure_saves(
    folder: Path, db: Path, save: Callable[[Path, bytes], None], n: int, first: int
) -> tuple[list[float], int]:
    """Latencies in ms of `n` saves, and how many invoked runs missed the new version."""
    path = folder / "reload.py"
    latencies, missed = [], 0
    for version in range(first, first + n):
        data = WORKFLOW.format(version=version).encode()
        digest = digest_of(data)
        time.sleep(random.uniform(0.2, 0.4))
        save(path, data)
        saved = time.perf_counter()
        wait_for(functools.partial(is_live, db, digest), f"version {version}")
        latencies.append((time.perf_counter() - saved) * 1000)
        missed += run_version(db) != digest
    return latencies, missed


def startup_ms(tmp: Path, files: int, starts: int) -> list[float]:
    """Milliseconds from starting a daemon on a folder of `files` files until it is ready."""
    folder = tmp / f"start-{files}"
    folder.mkdir()
    for index in range(files):
        source = WORKFLOW.format(version=index).replace('"reload"', f'"flow_{index}"')
        (folder / f"flow_{index}.py").write_text(source)
    times = []
    for start in range(starts):
        began = time.perf_counter()
        with daemon(folder, tmp / f"start-{files}-{start}.db"):
            times.append((time.perf_counter() - began) * 1000)
    return times


def probe_costs(folder: Path, n: int) -> list[float]:
    path = folder / "reload.py"
    data = path.read_bytes()
    costs = []
    for _ in range(n):
        began = time.perf_counter()
        asyncio.run(probe(path, data, FolderConfig()))
        costs.append((time.perf_counter() - began) * 1000)
    return costs


def row(label: str, values: list[float], extra: str = "") -> str:
    return f"{latency_row(label, values, label_width=34, median_width=11)}  {extra}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Save-to-live latency of a workflow file.")
    parser.add_argument("--saves", type=int, default=30, help="saves per kind (default 30)")
    parser.add_argument("--probes", type=int, default=20, help="probe runs (default 20)")
    parser.add_argument("--files", type=int, default=20, help="files in a big folder (20)")
    parser.add_argument("--starts", type=int, default=5, help="start-ups per folder (5)")
    parser.add_argument("--quick", action="store_true", help="10 saves per kind, 5 probes")
    args = parser.parse_args(argv)
    saves, probes = (10, 5) if args.quick else (args.saves, args.probes)
    starts = 2 if args.quick else args.starts

    print(machine_line())
    print(
        f"a daemon in its own process; {saves} saves of each kind, 0.2-0.4 s apart; 'live' ="
        " the journal's workflows table names the new version (polled every 1 ms); then a"
        f" run invoked through the inbox must record it. Goal: under {GOAL_MS:,} ms."
    )
    print()
    print(f"{'save -> live (ms)':34}{'saves':>7}{'median':>11}{'p95':>9}{'max':>9}")
    with fresh_dir() as tmp:
        folder, db = tmp / "flows", tmp / "journal.db"
        folder.mkdir()
        (folder / "reload.py").write_text(WORKFLOW.format(version=0))
        with daemon(folder, db):
            first = 1
            for label, save in SAVES.items():
                latencies, missed = measure_saves(folder, db, save, saves, first)
                first += saves
                print(row(label, latencies, f"runs on an older version: {missed}"), flush=True)
        print()
        print(f"{'cost alone (ms)':34}{'runs':>7}{'median':>11}{'p95':>9}{'max':>9}")
        print(row("probe subprocess (loader.probe)", probe_costs(folder, probes)))
        print(
            row(
                "python -c pass (interpreter start)",
                wall_ms([sys.executable, "-c", "pass"], probes),
            )
        )
        print()
        print(f"{'start -> ready (ms)':34}{'starts':>7}{'median':>11}{'p95':>9}{'max':>9}")
        for files in (1, args.files):
            label = f"a folder of {files} file{'s' if files > 1 else ''}"
            print(row(label, startup_ms(tmp, files, starts), f"parallel probes: {PARALLEL_PROBES}"))


if __name__ == "__main__":
    main(sys.argv[1:])

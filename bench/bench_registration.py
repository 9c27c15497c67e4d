"""How long a folder of many workflows takes to be ready, and to reload after an edit.

Prints figures; it is not a test. Run: ``python bench/bench_registration.py [--quick]``
(``--counts 100,1000`` and ``--timeout SECONDS`` to choose).

Each case is a fresh folder and journal, served in this process by ``Runtime(db,
workflows_dir=folder)`` (the daemon's loading path: the watcher, the probe subprocesses,
the import, the registration). Every workflow has an event trigger and a `FileTrigger`
(on shared folders, as is typical) and every tenth a schedule, so each part of the
registration is exercised. Two layouts of N workflows:

- **one file**: a single file defining all N;
- **100 files**: N / 100 workflows in each of 100 files.

- **ready**: from entering ``async with Runtime(...)`` until it returns (the journal
  lease marked ready, every workflow registered and committed).
- **reload**: one file is saved again with a new version (a plain write); the time from
  the write until every workflow of that file is registered at the new version, as the
  runtime's watcher picks it up. In the one-file layout that is all N workflows; in the
  100-file layout N / 100 of them.
- **probe**: one probe subprocess of that file alone (``loader.probe``), part of both
  figures above: each version of a file is first imported in a subprocess (at start, a
  folder's files are probed in a few batches, one subprocess per core, up to 8). The
  folder's ``orchestrator.toml`` sets ``probe_timeout = 120``: importing 10,000 workflows
  can take longer than the default 5 s on a busy small machine.

A case that does not finish within ``--timeout`` seconds is printed as ``> T``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path

from common import fresh_dir, machine_line

from orchestrator import Runtime
from orchestrator.folder.loader import FolderConfig, probe

FILES = 100
PROBE_TIMEOUT = 120


def source(ids: range, version: int) -> str:
    """One file defining a workflow for each id."""
    lines = [
        "from orchestrator import FileTrigger, Schedule, Trigger, Workflow\n\n",
        f"VERSION = {version}\n\n\n",
        "def step(state):\n    return state\n\n\n",
    ]
    for i in ids:
        triggers = f'"ev": Trigger(event="e{i % 10}"), "f": FileTrigger(dir="in", glob="*.{i % 4}")'
        pipelines = '"ev": [step], "f": [step]'
        if i % 10 == 0:
            triggers += ', "cron": Schedule(cron="0 3 * * *")'
            pipelines += ', "cron": [step]'
        lines.append(
            f'w{i} = Workflow(id="flow_{i}", triggers={{{triggers}}}, pipelines={{{pipelines}}})\n'
        )
    return "".join(lines)


def layout(folder: Path, n: int, files: int) -> list[tuple[Path, range]]:
    """Write `n` workflows over `files` files; each file with its ids."""
    per = max(1, n // files)
    written = []
    for index, start in enumerate(range(0, n, per)):
        path = folder / f"flows_{index:03}.py"
        ids = range(start, min(n, start + per))
        path.write_text(source(ids, 1))
        written.append((path, ids))
    return written


async def measure(tmp: Path, n: int, files: int, limit: float) -> tuple[float, float, float]:
    """Seconds to ready, to reload one file after an edit, and to probe that file."""
    folder = tmp / f"flows-{n}-{files}"
    folder.mkdir()
    written = layout(folder, n, files)
    # A file of 10,000 workflows takes seconds to import on a small machine: more than the
    # probe's default time limit (5 s) allows when the machine is busy.
    (folder / "orchestrator.toml").write_text(f"probe_timeout = {PROBE_TIMEOUT}\n")
    began = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            rt = await _enter(Runtime(tmp / f"journal-{n}-{files}.db", workflows_dir=folder))
    except TimeoutError:
        return float("inf"), float("nan"), float("nan")
    ready = time.perf_counter() - began
    if not rt.has_workflow(f"flow_{n - 1}"):
        await rt.stop()
        raise SystemExit(f"{n} workflows in {files} files did not all load (see the log)")
    try:
        path, ids = written[0]
        old = rt.registry(f"flow_{ids[0]}").version
        path.write_text(source(ids, 2))
        saved = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                await _reloaded(rt, [f"flow_{ids[0]}", f"flow_{ids[-1]}"], old)
            reload = time.perf_counter() - saved
        except TimeoutError:
            reload = float("inf")
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await rt.stop()
    began = time.perf_counter()
    await probe(path, path.read_bytes(), FolderConfig())
    return ready, reload, time.perf_counter() - began


async def _reloaded(rt: Runtime, workflow_ids: list[str], old: str) -> None:
    """Return once each workflow is registered at a version other than `old` (polled)."""
    while True:
        if all(rt.registry(workflow_id).version != old for workflow_id in workflow_ids):
            return
        await asyncio.sleep(0.005)


async def _enter(rt: Runtime) -> Runtime:
    await rt.start()
    return rt


def seconds(value: float, timeout: float) -> str:
    if value == float("inf"):
        return f"> {timeout:,.0f}"
    return f"{value:,.2f}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Ready and reload time of many workflows.")
    parser.add_argument("--counts", default="100,1000,10000", help="workflow counts")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per figure")
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 only")
    args = parser.parse_args(argv)
    counts = [100, 1000] if args.quick else [int(c) for c in args.counts.split(",")]
    logging.basicConfig(level=logging.ERROR)
    print(machine_line())
    print("in process: Runtime(db, workflows_dir=...); seconds; reload = one file saved again")
    print()
    header = f"{'workflows':>10}  {'layout':10}{'ready s':>10}{'reload s':>10}{'probe s':>10}"
    print(header)
    for n in counts:
        for files in (1, FILES):
            with fresh_dir() as tmp:
                ready, reload, probed = asyncio.run(measure(tmp, n, files, args.timeout))
            label = "one file" if files == 1 else f"{files} files"
            print(
                f"{n:>10,}  {label:10}{seconds(ready, args.timeout):>10}"
                f"{seconds(reload, args.timeout):>10}{probed:>10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])

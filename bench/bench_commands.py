"""Cross-process command latency, and the CLI's start-up time.

Prints figures; it is not a test. Run: ``python bench/bench_commands.py [--commands N]``.

A real daemon (``orchestrator up DIR --headless``, its own process) serves a fresh folder
with one workflow, ``quick``: one trivial async step, started by the event ``tick``. This
process writes commands into the journal exactly as the CLI does, by calling the functions
``orchestrator emit`` and ``orchestrator invoke`` call (`emit_event`, `queue_invoke`), and
notes the wall time the moment each returns, that is just after its transaction
committed. The daemon notices other processes' commits by polling ``PRAGMA data_version``
every 10 ms, routes the event or applies the command, and journals the new run with its
``created_at`` (wall time, µs). The figures, from the journal once all have completed:

- **commit -> run created**: the run's ``created_at`` minus the time the write returned;
- **commit -> run completed**: the run's final ``updated_at`` minus the same.

Commands are written one at a time, 10-30 ms apart (random, so they do not fall into step
with the daemon's poll), never two in flight. Then the CLI's own start-up, with no daemon:
the wall time of ``python -m orchestrator emit x {}`` into a new journal each time (which
it creates) and into an existing one, of ``python -m orchestrator --help``, of the
installed ``orchestrator`` script, of a bare ``python -c pass``, and the import times
``python -X importtime -c "import orchestrator.cli.main"`` reports.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import daemon, fresh_dir, latency_row, machine_line, read_journal, wall_ms

from orchestrator.journal.sqlite.commands import emit_event, queue_invoke

WORKFLOW = """\
from orchestrator import Trigger, Workflow


async def bump(state):
    return {**state, "bumped": True}


quick = Workflow(id="quick", triggers={"tick": Trigger(event="tick")}, pipelines={"tick": [bump]})
"""
GOAL_MS = 100
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def now_us() -> int:
    return time.time_ns() // 1000


def send_emits(db: Path, n: int) -> dict[str, int]:
    """Emit `n` ticks; each event id with the time its write returned."""
    sent = {}
    for i in range(n):
        event_id = emit_event(db, "tick", {"i": i})
        sent[event_id] = now_us()
        time.sleep(random.uniform(0.01, 0.03))
    return sent


def send_invokes(db: Path, n: int) -> dict[str, int]:
    """Invoke `quick` `n` times through the inbox; each run id with its return time."""
    sent = {}
    for i in range(n):
        run_id = queue_invoke(db, "quick", "tick", {"i": i})
        sent[run_id] = now_us()
        time.sleep(random.uniform(0.01, 0.03))
    return sent


def runs_of_events(db: Path) -> dict[str, tuple[int, int, str]]:
    rows = read_journal(
        db,
        "SELECT er.event_id, r.created_at, r.updated_at, r.status FROM event_routes er"
        " JOIN runs r ON r.id = er.run",
    )
    return {row[0]: row[1:] for row in rows}


def runs_by_id(db: Path) -> dict[str, tuple[int, int, str]]:
    rows = read_journal(db, "SELECT run_id, created_at, updated_at, status FROM runs")
    return {row[0]: row[1:] for row in rows}


def latencies(
    db: Path, sent: dict[str, int], runs: Callable[[Path], dict[str, tuple[int, int, str]]]
) -> tuple[list[float], list[float]]:
    """(commit -> created, commit -> completed) in ms, once every run has completed."""
    deadline = time.monotonic() + 60
    while True:
        found = runs(db)
        if all(key in found and found[key][2] == "completed" for key in sent):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the runs did not all complete within 60 s")
        time.sleep(0.05)
    created = [(found[key][0] - at) / 1000 for key, at in sent.items()]
    completed = [(found[key][1] - at) / 1000 for key, at in sent.items()]
    return created, completed


def import_times(n: int) -> tuple[list[float], list[float]]:
    """Per run, ms: the cumulative import of orchestrator.cli.main, and all imports of the run."""
    cli, total = [], []
    for _ in range(n):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import orchestrator.cli.main"],
            check=True,
            capture_output=True,
            text=True,
        ).stderr
        lines = [m for m in map(IMPORT_LINE.match, out.splitlines()) if m is not None]
        cli.append(next(int(m[2]) for m in lines if m[4] == "orchestrator.cli.main") / 1000)
        total.append(sum(int(m[1]) for m in lines) / 1000)
    return cli, total


def startup(n: int) -> None:
    """Print the CLI's start-up figures, each over `n` runs."""
    python = [sys.executable]
    emit = [*python, "-m", "orchestrator", "emit", "x", "{}", "--db"]
    with fresh_dir() as tmp:
        journals = iter(range(n))
        fresh = wall_ms(emit, n, lambda: [str(tmp / f"new{next(journals)}.db")])
        print(row("python -m orchestrator emit x {} (new journal)", fresh))
        print(
            row(
                "python -m orchestrator emit x {} (existing)",
                wall_ms([*emit, str(tmp / "new0.db")], n),
            )
        )
    print(
        row("python -m orchestrator --help", wall_ms([*python, "-m", "orchestrator", "--help"], n))
    )
    script = Path(sys.executable).parent / "orchestrator"
    if script.exists():
        print(row("orchestrator --help (installed script)", wall_ms([str(script), "--help"], n)))
    print(row("python -c pass (interpreter start)", wall_ms([*python, "-c", "pass"], n)))
    cli_import, all_imports = import_times(n)
    print(row("-X importtime: orchestrator.cli.main, cumulative", cli_import))
    print(row("-X importtime: every import of the run", all_imports))


def row(label: str, values: list[float]) -> str:
    return latency_row(label, values, label_width=46)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Cross-process command latency; CLI start-up.")
    parser.add_argument("--commands", type=int, default=200, help="per kind (default 200)")
    parser.add_argument("--cli-runs", type=int, default=10, help="start-up runs (default 10)")
    parser.add_argument("--quick", action="store_true", help="50 commands, 5 start-up runs")
    args = parser.parse_args(argv)
    commands, cli_runs = (50, 5) if args.quick else (args.commands, args.cli_runs)

    print(machine_line())
    print(
        f"a daemon in its own process; {commands} commands of each kind, one at a time,"
        f" 10-30 ms apart; goal: each applied within {GOAL_MS} ms of its commit"
    )
    print()
    print(f"{'latency (ms)':46}{'n':>7}{'median':>9}{'p95':>9}{'max':>9}")
    with fresh_dir() as tmp:
        folder, db = tmp / "flows", tmp / "journal.db"
        folder.mkdir()
        (folder / "quick.py").write_text(WORKFLOW)
        with daemon(folder, db):
            send_emits(db, 10)  # warm-up
            emitted = latencies(db, send_emits(db, commands), runs_of_events)
            invoked = latencies(db, send_invokes(db, commands), runs_by_id)
        print(row("emit: commit -> run created", emitted[0]))
        print(row("emit: commit -> run completed", emitted[1]))
        print(row("invoke: commit -> run created", invoked[0]))
        print(row("invoke: commit -> run completed", invoked[1]))
        late = sum(ms > GOAL_MS for ms in emitted[0] + invoked[0])
        print(f"runs created later than {GOAL_MS} ms after the commit: {late}", flush=True)

    print()
    print(f"{'CLI start-up, wall (ms)':46}{'runs':>7}{'median':>9}{'p95':>9}{'max':>9}")
    startup(cli_runs)


if __name__ == "__main__":
    main(sys.argv[1:])

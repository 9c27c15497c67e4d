"""Other processes on a daemon's journal: ``python tests/journal_clients.py ROLE DB ARGS...``.

Each role calls what the CLI calls (the SQLite backend's `commands` and `JournalReader`), so
a test can put hundreds of writes a second on a journal a daemon holds without starting a
process per write. A role prints one JSON object on stdout when it is done and exits 0;
any error is printed to stderr and ends it with exit 1, so a test checks both. Roles:

- ``feed DB RATE SECONDS THREADS``: emit ``tick`` events at up to RATE per second for
  SECONDS, from THREADS threads; prints ``{"acked": N, "seconds": S}``.
- ``commands DB PLAN``: apply the commands listed in the JSON file PLAN, one after the
  other, ``pause`` seconds apart; prints ``{"emitted": [event ids], "invoked": [run ids],
  "queued": N}``.
- ``read DB SECONDS``: list the 50 newest runs every 0.1 s for SECONDS, and the loaded
  workflows every second; prints ``{"polls": N}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.journal.sqlite.commands import emit_event, queue_command, queue_invoke
from orchestrator.journal.sqlite.reader import JournalReader


def feed(db: Path, rate: float, seconds: float, threads: int) -> dict[str, Any]:
    """Emit ``tick`` events at `rate` per second in all, each thread on its own schedule."""
    acked = [0] * threads
    errors: list[BaseException] = []
    start = time.monotonic()

    def lane(index: int) -> None:
        interval = threads / rate
        due = start + index * interval / threads
        try:  # behind schedule (a busy machine), it emits fewer: the time is what is fixed
            while due < start + seconds and time.monotonic() < start + seconds:
                time.sleep(max(0.0, due - time.monotonic()))  # paced: RATE per second
                emit_event(db, "tick", {"lane": index, "n": acked[index]}, source="feeder")
                acked[index] += 1
                due += interval
        except BaseException as exc:
            errors.append(exc)

    lanes = [threading.Thread(target=lane, args=(i,)) for i in range(threads)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()
    if errors:
        raise errors[0]
    return {"acked": sum(acked), "seconds": time.monotonic() - start}


def commands(db: Path, plan_path: Path) -> dict[str, Any]:
    """Apply a plan: ``{"pause": S, "commands": [[name, arg...], ...]}``."""
    plan = json.loads(plan_path.read_text())
    emitted: list[str] = []
    invoked: list[str] = []
    queued = 0
    for name, *args in plan["commands"]:
        if name == "emit":
            emitted.append(emit_event(db, args[0], args[1]))
        elif name == "invoke":
            invoked.append(queue_invoke(db, args[0], args[1], args[2]))
        else:  # resume, signal, abort: run id, then the payload if any
            queue_command(db, name, args[0], args[1] if len(args) > 1 else None)
            queued += 1
        time.sleep(plan["pause"])  # paced: the plan spreads its commands over the load
    return {"emitted": emitted, "invoked": invoked, "queued": queued}


async def read(db: Path, seconds: float) -> dict[str, Any]:
    """Poll the journal as a dashboard would, at 10 Hz, on one read-only connection."""
    reader = await JournalReader.open(db)
    polls = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            runs = await reader.list_runs(limit=50)
            if runs:
                await reader.get_run(runs[0].run_id)
            if polls % 10 == 0:
                await reader.workflows()
            polls += 1
            await asyncio.sleep(0.1)  # a dashboard's refresh rate: the load under test
    finally:
        await reader.close()
    return {"polls": polls}


def main(argv: list[str]) -> None:
    role, db = argv[0], Path(argv[1])
    if role == "feed":
        report = feed(db, float(argv[2]), float(argv[3]), int(argv[4]))
    elif role == "commands":
        report = commands(db, Path(argv[2]))
    elif role == "read":
        report = asyncio.run(read(db, float(argv[2])))
    else:
        raise SystemExit(f"unknown role {role!r}")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])

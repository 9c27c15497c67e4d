r"""Ingest: every CSV dropped into inbox/ is summarised into outbox/, then filed away.

What it shows: a `FileTrigger`, sync steps that read and write files (they run in a worker
thread, so a big file never stalls the daemon), and steps that are safe to run twice.

Try it with the daemon running (``orchestrator up examples/``; it creates the folders)::

    printf 'sku,qty,price\nA-1,2,9.5\nB-7,1,20\n' > examples/inbox/.sales.csv
    mv examples/inbox/.sales.csv examples/inbox/sales.csv    # complete files only
    cat examples/outbox/sales.json
    ls examples/inbox/done/

Writing under a dot-name and renaming keeps a half-written file from being picked up
(``*.csv`` does not match ``.sales.csv``). The file is moved to ``inbox/done/`` once it is
summarised, so files still in ``inbox/`` are the ones not processed yet. Each file is one
event exactly once, even one dropped while the daemon is down: it is found at the next start.
"""

import csv
import json
import os
from pathlib import Path

from orchestrator import FileTrigger, Workflow


def _open_source(state):
    # Steps run at least once: after a crash a run goes on from its last committed
    # checkpoint, which may be older than the move to done/ (checkpoints commit in
    # batches), so look there too.
    path = Path(state["path"])
    moved = path.parent / "done" / path.name
    return path if path.exists() or not moved.exists() else moved


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def summarize(state):
    # State starts as the event's data: {"path", "size", "dir", "glob"}.
    with _open_source(state).open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    columns = list(rows[0]) if rows else []
    totals = {}
    for column in columns:
        values = [_number(row[column] or "") for row in rows]
        if values and all(value is not None for value in values):
            totals[column] = round(sum(values), 6)
    summary = {
        "file": Path(state["path"]).name,
        "rows": len(rows),
        "columns": columns,
        "totals": totals,
    }
    return {**state, "summary": summary}


def write_summary(state):
    # outbox/ sits next to inbox/. Write a temporary file and rename it, so a reader
    # never sees half a summary.
    outbox = Path(state["dir"]).parent / "outbox"
    outbox.mkdir(exist_ok=True)
    target = outbox / (Path(state["path"]).stem + ".json")
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(state["summary"], indent=2) + "\n", encoding="utf-8")
    os.replace(partial, target)
    return {**state, "summary_path": str(target)}


def archive(state):
    # inbox/done/ is a subfolder: moving the file there raises no new event.
    source = Path(state["path"])
    done = source.parent / "done"
    done.mkdir(exist_ok=True)
    if source.exists():
        os.replace(source, done / source.name)
    return {**state, "archived_to": str(done / source.name)}


workflow = Workflow(
    id="ingest",
    # A relative dir is relative to this file: examples/inbox/.
    triggers={"csv": FileTrigger(dir="inbox", glob="*.csv")},
    pipelines={"csv": [summarize, write_summary, archive]},
)

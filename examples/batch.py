r"""Batch: each CSV dropped into batches/ fans out, one child run per row, joined into a summary.

What it shows: child runs. The first step starts one run of the ``row`` pipeline per row
(`ctx.start`), tells of it (`ctx.emit`) and parks until every child is final
(`ctx.join`); the last step writes the summary. Each row is a durable run of its own: a
crash re-runs only the rows not done, and `orchestrator show` lists them. The workflow's
mode lets at most four rows run at once; a parent waiting on its join holds no slot.

Try it with the daemon running (``orchestrator up examples/``; it creates the folder)::

    printf 'sku,qty,price\nA-1,2,9.5\nB-7,1,20\nC-3,x,1\n' > examples/batches/.prices.csv
    mv examples/batches/.prices.csv examples/batches/prices.csv    # complete files only
    orchestrator runs --workflow batch
    orchestrator show RUN_ID      # the csv run: its children, how many are final, failures
    cat examples/batches/done/prices.json

Row C-3 fails (its qty is not a number): the summary counts it, with its error, and the
total is that of the rows that priced. The CSV is moved to ``batches/done/`` with it.
"""

import csv
import json
import os
from pathlib import Path

from orchestrator import FileTrigger, Transient, Workflow


def fan_out(state, ctx):
    # State starts as the event's data: {"path", "size", "dir", "glob"}.
    path = Path(state["path"])
    if not path.exists():  # summarised already: the step runs again after a crash
        path = path.parent / "done" / path.name
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    ids = [ctx.start("batch", "row", {"line": n + 2, **row}) for n, row in enumerate(rows)]
    ctx.emit("batch.split", {"file": path.name, "rows": len(ids)})
    return ctx.join(ids, into="rows")


def price(state):
    # A child: one row. A bad number fails this row's run only.
    return {
        "line": state["line"],
        "sku": state["sku"],
        "amount": float(state["qty"]) * float(state["price"]),
    }


def summarize(state):
    rows = state["rows"]  # each {"run_id", "status", "state", "error", "error_code"}
    priced = [row["state"] for row in rows if row["status"] == "completed"]
    failed = [
        {"run_id": row["run_id"], "error": row["error"]}
        for row in rows
        if row["status"] != "completed"
    ]
    source = Path(state["path"])
    done = source.parent / "done"
    done.mkdir(exist_ok=True)
    summary = {
        "file": source.name,
        "rows": len(rows),
        "priced": len(priced),
        "total": round(sum(row["amount"] for row in priced), 6),
        "failed": failed,
    }
    target = done / (source.stem + ".json")
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, target)
    if source.exists():  # done/ is a subfolder: the move raises no new event
        os.replace(source, done / source.name)
    return {"summary": summary}


workflow = Workflow(
    id="batch",
    # A relative dir is relative to this file: examples/batches/.
    triggers={"csv": FileTrigger(dir="batches", glob="*.csv")},
    pipelines={"csv": [fan_out, summarize], "row": [price]},
    mode=Transient(concurrency=4),
)

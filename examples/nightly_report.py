"""Nightly report: at 02:00 every night, sum up what `ingest` wrote to outbox/.

What it shows: a `Schedule` trigger, and the same steps as an invoke-only pipeline (a
pipeline without a trigger of its name can only be started by hand).

Try it now, with the daemon running (``orchestrator up examples/``)::

    orchestrator invoke nightly_report now --wait
    cat examples/reports/*.json

A scheduled run starts with ``{"scheduled_for": ..., "fired_at": ...}`` (ISO-8601). If the
daemon was down at 02:00 it runs once when it starts again (``catch_up=True`` would run
once per missed night instead).
"""

import json
import os
from datetime import datetime
from pathlib import Path

from orchestrator import Schedule, Workflow

HERE = Path(__file__).resolve().parent


def collect(state):
    # One summary per ingested CSV (see ingest.py); an empty or missing outbox is fine.
    summaries = sorted((HERE / "outbox").glob("*.json"))
    rows = sum(json.loads(path.read_text(encoding="utf-8"))["rows"] for path in summaries)
    return {**state, "files": len(summaries), "rows": rows}


def write_report(state, ctx):
    # Scheduled runs are named after the night they stand for; runs by hand after today.
    day = (state.get("scheduled_for") or datetime.now().astimezone().isoformat())[:10]
    reports = HERE / "reports"
    reports.mkdir(exist_ok=True)
    target = reports / f"report-{day}.json"
    report = {"day": day, "files": state["files"], "rows": state["rows"], "run": ctx.run_id}
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, target)  # a reader never sees half a report
    ctx.log.info("%s: %d files, %d rows", target.name, state["files"], state["rows"])
    return {**state, "report": str(target)}


workflow = Workflow(
    id="nightly_report",
    # tz=None: 02:00 in the machine's local time zone.
    triggers={"nightly": Schedule(cron="0 2 * * *")},
    pipelines={
        "nightly": [collect, write_report],
        "now": [collect, write_report],  # no trigger "now": invoke-only
    },
)

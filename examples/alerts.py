"""Alerts: one line in alerts/alerts.log for every run in the folder that fails or is aborted.

What it shows: system events. When a run ends, the runtime emits ``run.completed``,
``run.failed`` or ``run.aborted`` (source ``system``) with ``run_id``, ``workflow_id``,
``trigger_id``, ``status``, ``error`` and ``error_code``, journaled with the run's end. A
`Trigger` on them makes a folder-wide alert without a hook in every workflow. A workflow's
own runs never trigger it, so an alert that fails cannot alert about itself for ever.

Try it with the daemon running (``orchestrator up examples/``)::

    orchestrator invoke deploy request '{}'                  # no service: its build fails
    orchestrator emit order.created '{"order_id": 9, "total": 5}'
    orchestrator runs --workflow orders --status paused      # note its run id, then
    orchestrator abort RUN_ID                                # (4+ characters of it do)
    cat examples/alerts/alerts.log                           # a line for each
"""

from pathlib import Path

from orchestrator import Trigger, Workflow

ALERTS = Path(__file__).resolve().parent / "alerts" / "alerts.log"


def alert(state, ctx):
    line = (
        f"{state['workflow_id']} run {state['run_id']} {state['status']}"
        f" [{state['error_code']}]: {state['error']}"
    )
    ALERTS.parent.mkdir(exist_ok=True)
    # A step may run again after a crash: one line per run, however often it runs.
    seen = ALERTS.read_text() if ALERTS.exists() else ""
    if state["run_id"] not in seen:
        with ALERTS.open("a") as log:
            log.write(line + "\n")
    ctx.log.warning(line)  # also in the alert run's timeline and the daemon's log
    return {**state, "alerted": True}


workflow = Workflow(
    id="alerts",
    # source="system": an `orchestrator emit run.failed ...` by hand starts nothing.
    triggers={
        "failed": Trigger(event="run.failed", source="system"),
        "aborted": Trigger(event="run.aborted", source="system"),
    },
    pipelines={"failed": [alert], "aborted": [alert]},
)

"""Consumer: one loop drains a local work queue; pokes that arrive meanwhile join it.

What it shows: `SingletonLoop(on_busy="signal")`. Producers drop job files into queue/ and
emit ``queue.poke`` with ``{"more": true}``. The first poke starts a run; while that run is
active (running or paused), further pokes start no run: their data is merged into the
active run's state (a *signal*), and the loop reads ``more`` to decide whether to drain
again before it ends.

Try it with the daemon running (``orchestrator up examples/``)::

    mkdir -p examples/queue
    echo '{"task": "resize", "image": "cat.png"}' > examples/queue/job-001.json
    orchestrator emit queue.poke '{"more": true}'
    orchestrator runs --workflow consumer      # one run at a time, however many pokes
    cat examples/queue/done.log

Why "signal": with "drop", pokes while the loop is active would be thrown away (each one a
``dropped`` run in the journal), and jobs dropped in while it lingers would wait for the next
poke; with "replace", a poke would abort a drain half-way. One gap stays: a poke that lands
during the last drain reaches a run that is ending, and its job waits for the next poke. If
that is not acceptable, use ``Exclusive(on_busy="queue_single")``: it keeps one run queued
behind the active one.
"""

import json
import os
from pathlib import Path

from orchestrator import SingletonLoop, Trigger, Workflow

QUEUE = Path(__file__).resolve().parent / "queue"


def _drain(ctx):
    """Process job files oldest name first, until the queue is empty; returns how many."""
    handled = 0
    while jobs := sorted(QUEUE.glob("*.json")):
        for job in jobs:
            task = json.loads(job.read_text(encoding="utf-8"))
            with (QUEUE / "done.log").open("a", encoding="utf-8") as log:
                log.write(f"{job.name} {task.get('task')} run={ctx.run_id}\n")
            os.remove(job)
            handled += 1
    return handled


def drain(state, ctx):
    QUEUE.mkdir(exist_ok=True)
    handled = state.get("handled", 0) + _drain(ctx)
    ctx.log.info("drained: %d jobs so far", handled)
    # Clear the flag: a poke signalled while this step runs sets it again (a signal is
    # newer than what the step returns, so it wins).
    return {**state, "handled": handled, "more": False}


def linger(state, ctx):
    # Stay the active run a little after draining: a burst of pokes lands here as signals
    # (the run is paused, and keeps the loop's slot) instead of starting runs one by one.
    return ctx.sleep(float(ctx.env.get("CONSUMER_LINGER_SECONDS") or 5))


def drain_again(state, ctx):
    if not state.get("more"):
        return state  # no poke since the first drain: done
    return drain(state, ctx)


workflow = Workflow(
    id="consumer",
    triggers={"poke": Trigger(event="queue.poke")},
    pipelines={"poke": [drain, linger, drain_again]},
    mode=SingletonLoop(on_busy="signal"),
)

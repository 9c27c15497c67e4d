"""Steps of the fan-out tests: a parent that starts children and joins them, and a child.

A worker process imports isolated steps by module and name, so they live at the top level
of this small module. Paths a step needs (kill markers) come in its state: a step that
finds its marker missing creates it and SIGKILLs its own process, once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from orchestrator import Step, StepContext, Transient, Workflow

State = dict[str, Any]


def _kill_once(marker: str | None) -> None:
    if marker and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


def split(state: State, ctx: StepContext) -> Any:
    """Start one child per number, emit one event, and join the children."""
    child = {"kill": state.get("kill_child")}
    ids = [ctx.start("child", "one", {"n": n, **child}) for n in range(state["count"])]
    ctx.emit("batch.split", {"count": len(ids)})
    _kill_once(state.get("kill_split"))  # a crash before the step's checkpoint
    return ctx.join(ids, into="results")


def square(state: State) -> State:
    """A child: its number squared; every fifth number fails."""
    _kill_once(state.get("kill"))  # a crash once the parent's fan-out has committed
    if state["n"] % 5 == 4:
        raise ValueError(f"{state['n']} is unlucky")
    return {"n": state["n"], "square": state["n"] ** 2}


def summary(state: State) -> State:
    """The parent's last step: what the join brought back."""
    results = state["results"]
    done = [r for r in results if r["status"] == "completed"]
    return {
        "count": len(results),
        "completed": len(done),
        "failed": [r["error_code"] for r in results if r["status"] != "completed"],
        "total": sum(r["state"]["square"] for r in done),
    }


def workflows(*, isolate: bool = False, concurrency: int | None = None) -> list[Workflow]:
    """The parent (``parent``/``go``) and child (``child``/``one``) workflows."""
    parent = Workflow(
        id="parent",
        pipelines={"go": [Step(split, isolate=isolate), Step(summary, isolate=isolate)]},
    )
    mode = Transient() if concurrency is None else Transient(concurrency=concurrency)
    child = Workflow(id="child", pipelines={"one": [Step(square, isolate=isolate)]}, mode=mode)
    return [parent, child]


def keyed_split(state: State, ctx: StepContext) -> Any:
    """Start the child of key ``state["key"]`` (once, whoever asks) and join it."""
    child = ctx.start("child", "one", {"n": state["n"]}, key=state["key"])
    ctx.emit("keyed.event", {"n": state["n"]}, key=state["key"])
    return ctx.join([child], into="got")


def keyed_workflows(*, isolate: bool) -> list[Workflow]:
    """A parent (``keyed``/``go``) whose step starts a child under a key, and the child."""
    keyed = Workflow(id="keyed", pipelines={"go": [Step(keyed_split, isolate=isolate)]})
    return [keyed, workflows()[1]]

"""Steps for `test_isolation.py` that a worker process imports by module and name.

An isolated step of a workflow defined in code is found again in the worker by its module
and qualified name, so these live at the top level of a small module that imports nothing
heavy (a worker imports it once). Paths a step needs (pid files, markers) come in its state.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator import Service, Step, StepContext, Workflow

State = dict[str, Any]
MB = 1024 * 1024
COUNT_FILE = "ISO_TEST_COUNT_FILE"  # where the workflow-scope service notes each build

_kept: list[bytes] = []  # memory a step keeps alive in its worker


def pid(state: State) -> State:
    return {**state, "pid": os.getpid()}


def pid_with_ctx(state: State, ctx: StepContext) -> State:
    return {**state, "pid": os.getpid()}


def pid_inline(state: State) -> State:
    return {**state, "inline_pid": os.getpid()}


async def pid_async(state: State) -> State:
    return {**state, "async_pid": os.getpid()}


def exit_1(state: State) -> State:
    os._exit(1)


def segfault(state: State) -> State:
    ctypes.string_at(0)
    return state


def memory_bomb(state: State) -> State:
    _kept.append(b"x" * (1024 * MB))
    return state


def _note_pid(state: State) -> None:
    Path(state["pidfile"]).write_text(str(os.getpid()))


def block(state: State) -> State:
    """Say which process runs it (``state["pidfile"]``), then hold it for a minute."""
    _note_pid(state)
    time.sleep(60)
    return state


def block_with_child(state: State) -> State:
    """Like `block`, with a process of its own (``state["childfile"]``) that outlives it."""
    child = subprocess.Popen(["sleep", "60"])
    Path(state["childfile"]).write_text(str(child.pid))
    return block(state)


def spawn_then_exit(state: State) -> State:
    """Start a process (``state["childfile"]``) that would run for a minute, then die."""
    child = subprocess.Popen(["sleep", "60"])
    Path(state["childfile"]).write_text(str(child.pid))
    os._exit(1)


def fork_then_exit(state: State) -> State:
    """Fork a copy of the worker that lives on for a minute, then die."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    Path(state["childfile"]).write_text(str(child))
    os._exit(1)


def crash_once(state: State) -> State:
    """Kill its process the first time (``state["marker"]`` says it did), then succeed."""
    marker = Path(state["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return {**state, "pid": os.getpid()}


def hang_once(state: State) -> State:
    """Hang the first time (``state["marker"]`` says it did, with its pid), then succeed."""
    marker = Path(state["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(60)
    return {**state, "pid": os.getpid()}


def keep_100_mb(state: State) -> State:
    _kept.append(b"x" * (100 * MB))
    return {**state, "pid": os.getpid()}


def with_ctx(state: State, ctx: StepContext) -> State:
    ctx.log.info("hello from pid %d", os.getpid())
    ctx.log.warning("second line")
    return {
        **state,
        "pid": os.getpid(),
        "key": ctx.idempotency_key,
        "region": ctx.env.get("REGION"),
        "from_runtime": ctx.env.get("ISO_RUNTIME_SETTING"),
        "attempt": ctx.attempt,
    }


def raise_value_error(state: State) -> State:
    raise ValueError(f"bad input in pid {os.getpid()}")


def system_exit(state: State) -> State:
    sys.exit(3)


def keyboard_interrupt(state: State) -> State:
    raise KeyboardInterrupt


def prints(state: State) -> State:
    print("printed by the step")
    sys.stdout.write("written to stdout\n")
    sys.stdout.flush()
    os.write(1, b"written to fd 1\n")
    return {**state, "printed": True}


def big_state(state: State) -> State:
    return {**state, "blob": "y" * (9 * MB)}


def not_json(state: State) -> State:
    return {**state, "when": {1, 2}}


def log_9_mb(state: State, ctx: StepContext) -> State:
    ctx.log.info("x" * (9 * MB))
    return {**state, "pid": os.getpid()}


def wait_for_release(state: State) -> State:
    """Say which process runs it, then return once ``state["release"]`` exists."""
    _note_pid(state)
    release = Path(state["release"])
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {**state, "released": release.exists()}


def log_later(state: State, ctx: StepContext) -> State:
    """Leave a thread that logs once ``state["release"]`` exists, then notes ``state["logged"]``."""

    def later() -> None:
        release = Path(state["release"])
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        ctx.log.info(f"late line of run {ctx.run_id}")
        Path(state["logged"]).touch()

    threading.Thread(target=later, daemon=True).start()
    return {**state, "pid": os.getpid()}


def leaky(state: State, ctx: StepContext) -> State:
    ctx.log.info("calling with token %s and %s", ctx.env.get("API_TOKEN"), ctx.env.get("PLAIN"))
    raise PermissionError(f"denied for {ctx.env.get('API_TOKEN')} / {ctx.env.get('DB_PASS')}")


def ask_for_payment(state: State, ctx: StepContext) -> Any:
    return ctx.pause("order.paid", where={"order": ("==", state["order"])}, into="payment")


def ask(state: State, ctx: StepContext) -> Any:
    return ctx.pause("reply.sent", into="reply")


def nap(state: State, ctx: StepContext) -> Any:
    return ctx.sleep(30)


def uses_pause_service(state: State, ctx: StepContext) -> State:
    ctx.pause_service.register("reply.sent")
    return state


# -- services: the workflow must be a module global, so the worker finds its services -------


def _counted(ctx: Any) -> object:
    with open(os.environ[COUNT_FILE], "a") as file:
        file.write(f"{os.getpid()}\n")
    return object()


def _run_scoped(ctx: Any) -> object:
    log = Path(ctx.state["cleanups"])
    ctx.on_cleanup(lambda: log.write_text(log.read_text() + "closed\n"))
    log.write_text(log.read_text() + "opened\n")
    return object()


async def use_shared(state: State, ctx: StepContext) -> State:
    shared = await ctx.use("shared")
    return {**state, "pid": os.getpid(), "shared": id(shared)}


async def use_per_run(state: State, ctx: StepContext) -> State:
    await ctx.use("per_run")
    return state


def read_cleanups(state: State) -> State:
    return {**state, "seen": Path(state["cleanups"]).read_text().split()}


services_workflow = Workflow(
    id="services",
    pipelines={
        "shared": [Step(use_shared, isolate=True)],
        "per_run": [Step(use_per_run, isolate=True), read_cleanups],
    },
    services=[
        Service("shared", _counted, scope="workflow"),
        Service("per_run", _run_scoped, scope="run"),
    ],
    isolate=True,
)

"""A worker process for the event crash tests: ``python tests/event_worker.py DB ACTION [N]``.

It opens ``Runtime(DB, workflows=[...])``, so its workflows are registered before any event
or command written by another process is routed, does ACTION, announces that it is ready
(its pid, appended to ``DB.ready``) once its runtime is idle (what it recovered has run,
every pending event is routed, every overdue deadline has fired), and then serves for ever
(events and commands from the journal's inbox, timers, schedules) until the test SIGKILLs
it. ACTION is one of:

- ``serve``: nothing more.
- ``pause N``: start an ``orders`` run for each order id in range(N) that has no run yet,
  each waiting for its ``payment.received`` once it has reserved.
- ``timers``: start one run of each pipeline of ``timers``: a 1.5 s sleep, and two pauses
  with a 1 s timeout (one continues, one fails); each has paused when the worker is ready.
- ``schedules``: also register ``ticks``, whose two schedules fire every minute (one of
  them catching up every missed tick).

Each step with an effect appends ``run_id step`` to ``DB.effects`` (`procs.EffectLog`).
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import procs

from orchestrator import PauseRequest, Runtime, Schedule, StepContext, Trigger, Workflow

State = dict[str, Any]
_effects: procs.EffectLog


async def reserve(state: State, ctx: StepContext) -> State:
    _effects.record(ctx.run_id, ctx.step_name)
    # Registered before the pause, so a payment that arrives meanwhile is kept.
    ctx.pause_service.register(
        event="payment.received", where={"order_id": ("==", state["order_id"])}
    )
    return {**state, "reserved": True}


def wait_for_payment(state: State, ctx: StepContext) -> PauseRequest:
    return ctx.pause(
        event="payment.received", where={"order_id": ("==", state["order_id"])}, into="payment"
    )


def ship(state: State, ctx: StepContext) -> State:
    _effects.record(ctx.run_id, ctx.step_name)
    return {**state, "shipped": True}


async def work(state: State, ctx: StepContext) -> State:
    _effects.record(ctx.run_id, ctx.step_name)
    await asyncio.sleep(random.uniform(0.0, 0.05))  # so kills land mid-step too
    return {**state, "worked": True}


def finish(state: State, ctx: StepContext) -> State:
    _effects.record(ctx.run_id, ctx.step_name)
    return {**state, "finished": True}


def nap(state: State, ctx: StepContext) -> PauseRequest:
    return ctx.sleep(1.5)


def pay_or_continue(state: State, ctx: StepContext) -> PauseRequest:
    return ctx.pause(
        event="payment.received", where={"order_id": ("==", -1)}, into="payment", timeout=1
    )


def pay_or_fail(state: State, ctx: StepContext) -> PauseRequest:
    return ctx.pause(
        event="payment.received",
        where={"order_id": ("==", -1)},
        into="payment",
        timeout=1,
        on_timeout="fail",
    )


def after(state: State, ctx: StepContext) -> State:
    _effects.record(ctx.run_id, ctx.step_name)
    return {**state, "after": True}


def tick(state: State, ctx: StepContext) -> State:
    _effects.record(ctx.run_id, ctx.step_name)
    return state


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created", where={"total": (">", 0)})},
    pipelines={"new": [reserve, wait_for_payment, ship]},
)
JOBS = Workflow(
    id="jobs",
    triggers={"requested": Trigger(event="job.requested")},
    pipelines={"requested": [work, finish]},
)
TIMERS = Workflow(
    id="timers",
    pipelines={
        "nap": [nap, after],
        "continue": [pay_or_continue, after],
        "fail": [pay_or_fail, after],
    },
)
TICKS = Workflow(
    id="ticks",
    triggers={
        "once": Schedule(cron="* * * * *"),
        "each": Schedule(cron="* * * * *", catch_up=True),
    },
    pipelines={"once": [tick], "each": [tick]},
)


async def pause_orders(rt: Runtime, n: int) -> None:
    have = {run.state.get("order_id") for run in await rt.list_runs(workflow="orders", limit=-1)}
    results = await asyncio.gather(
        *(rt.invoke("orders", "new", {"order_id": k}) for k in range(n) if k not in have)
    )
    for result in results:
        if result.status != "paused":
            raise SystemExit(f"run {result.run_id} ended {result.status}: {result.error}")


async def start_timers(rt: Runtime) -> None:
    results = await asyncio.gather(
        *(rt.invoke("timers", trigger) for trigger in ("nap", "continue", "fail"))
    )
    for result in results:
        if result.status != "paused":
            raise SystemExit(f"run {result.run_id} ended {result.status}: {result.error}")


async def main(db: str, action: str, n: int) -> None:
    flows = [ORDERS, JOBS, TIMERS, *([TICKS] if action == "schedules" else [])]
    # Kills land at random instants; the crash-loop guard is not what this worker tests.
    async with Runtime(db, workflows=flows, shutdown_grace=1.0, max_recoveries=1000) as rt:
        if action == "pause":
            await pause_orders(rt, n)
        elif action == "timers":
            await start_timers(rt)
        elif action not in ("serve", "schedules"):
            raise SystemExit(f"unknown action {action!r}")
        await rt.idle(timeout=60)
        procs.announce_ready(db)
        await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    db_path, what = sys.argv[1], sys.argv[2]
    _effects = procs.EffectLog(db_path)
    asyncio.run(main(db_path, what, int(sys.argv[3]) if len(sys.argv) > 3 else 0))

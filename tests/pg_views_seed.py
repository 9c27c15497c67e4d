"""A rich journal for the dashboard's differential tests: SQLite written, copied to PostgreSQL.

A real `Runtime` writes it: runs completed, failed (errors with ``%``, ``_``, ``\\``, upper
case and non-ASCII text), paused on events (with and without timeouts), queued behind a
serialized one, aborted, retried and forked; a fan-out parent joined on children still
running; a schedule's next tick; disabled workflows and triggers; a load error; states
large enough to be stored as checkpoint deltas; events routed, buffered and unrouted, some
with non-ASCII types; commands left pending for a daemon that is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import Runtime, Schedule, Serialized, Step, Trigger, Workflow
from orchestrator.journal import open_journal

BIG = "é" * 3000  # a state this large is written as merge patches against a snapshot
# Error messages the search must find as written: LIKE's wildcards, its escape, case, Unicode.
ERRORS = (
    "100% declined",
    "card_declined",
    "back\\slash",
    "CARD Declined",
    "Zahlung abgelehnt: Größe",
    "ÉCHEC total",
)


def grow(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "big": BIG, "n": state.get("n", 0) + 1, "nested": {"a": 1, "b": [1, 2]}}


def touch(state: dict[str, Any]) -> dict[str, Any]:
    nested = {"a": 2, "c": "日本語"}
    return {**state, "n": state["n"] + 1, "nested": nested, "gone": None}


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="zahlung.eingegangen.ü", where={"order": ("==", state["order"])}, into="payment"
    )


def wait_with_timeout(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="Approval.Given", into="approval", timeout=3600, on_timeout="fail")


def fail(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(state.get("message", "failed"))


def fan(state: dict[str, Any], ctx: Any) -> Any:
    ids = [ctx.start("Orders-EU_1", "hold", {"n": n, "order": 900 + n}) for n in range(3)]
    ids.append(ctx.start("billing", "quick", {"n": 9}))
    return ctx.join(ids, into="results")


def quick(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "quick": True}


def collect(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "rows": 3}


WORKFLOWS = [
    Workflow(
        id="orders",
        triggers={"new": Trigger(event="order.created")},
        pipelines={
            "new": [grow, wait_for_payment, touch],
            "bad": [grow, fail],
            "approve": [grow, wait_with_timeout, touch],
        },
    ),
    Workflow(
        id="Orders-EU_1",
        triggers={"Hold_Trigger": Trigger(event="Événement.créé")},
        pipelines={"hold": [wait_for_payment, touch], "Hold_Trigger": [quick]},
    ),
    Workflow(id="billing", pipelines={"quick": [quick], "charge": [Step(fail)]}),
    Workflow(id="parent.fan", pipelines={"go": [fan]}),
    Workflow(
        id="reports",
        triggers={"nightly": Schedule(cron="0 2 * * *", tz="UTC")},
        pipelines={"nightly": [collect]},
    ),
    Workflow(
        id="deploys",
        triggers={"release": Trigger(event="deploy.requested")},
        pipelines={"release": [grow, wait_with_timeout]},
        mode=Serialized(),
    ),
]


async def seed(db: Path) -> dict[str, str]:
    """Write the journal at `db` (a new file); some run ids by what happened to them."""
    ids: dict[str, str] = {}
    async with Runtime(db, workflows=WORKFLOWS) as rt:
        for order in range(4):
            await rt.emit("order.created", {"order": order, "title": f"Bestellung {order} ü"})
        await rt.emit("zahlung.eingegangen.ü", {"order": 0, "amount": 12})
        await rt.emit("zahlung.eingegangen.ü", {"order": 77})  # matches no wait
        for n, message in enumerate(ERRORS):
            flow, trigger = ("billing", "charge") if n % 2 else ("orders", "bad")
            run = await rt.invoke(flow, trigger, {"message": message, "order": 100 + n})
            ids[f"failed{n}"] = run.run_id
        for n in range(12):  # a page's worth of plain runs
            await rt.invoke("billing", "quick", {"n": n})
        ids["approve"] = (await rt.invoke("orders", "approve", {"order": 5})).run_id
        ids["parent"] = (await rt.invoke("parent.fan", "go", {})).run_id
        ids["deploy"] = (await rt.invoke("deploys", "release", {"order": 6})).run_id
        await rt.emit("deploy.requested", {"order": 7})  # queued behind the first
        aborted = await rt.invoke("orders", "new", {"order": 8})
        await rt.abort(aborted.run_id)
        ids["aborted"] = aborted.run_id
        retried = await rt.retry(ids["failed0"], {"message": "retried 100% again"})
        ids["retried"] = retried.run_id
        ids["fork"] = await rt.fork(ids["failed1"], None, {"message": "forked_run"})
        await rt.emit("Événement.créé", {"x": "ü"})
        await rt.emit("nobody.listens", {"ping": [1, {"y": None}]}, key="once")
        await rt.disable("orders", trigger="bad")
        await rt.disable("deploys")
        rt.report_load(Path("workflows/refunds.py"), 12, "SyntaxError: invalid syntax ü")
        await rt.emit("nobody.listens", {"n": 2})  # commits the load error with it
        await rt.idle()
    commands = open_journal(db).commands
    commands.emit_event("order.created", {"order": 99}, source="cli")  # never routed
    commands.queue_command("abort", ids["approve"])
    return ids

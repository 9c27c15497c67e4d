"""A small journal written the same way every time, for the dashboard's snapshots.

A real `Runtime` writes it, so the rows are what users see, with fixed run and event ids
(the id source is patched for the duration) and a clock that moves `TICK` at every reading
(so every timestamp is fixed and distinct, and durations look like durations). Every step is
async and every call is awaited one after the other, so the clock is read in the same order
on every run. Used by ``tests/test_tui_snapshots.py`` and ``scripts/screenshot``.

Times are shown in local time: pin ``TZ=UTC`` (`pinned_utc`) before drawing.

Run as a script, it writes the README's screenshot (``scripts/screenshot`` does)::

    python tests/dashboard_seed.py docs/dashboard.svg
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from pilots import until
from textual.widgets import DataTable

from orchestrator import Runtime, Schedule, Serialized, Transient, Trigger, Workflow
from orchestrator.testing import FakeClock
from tui.app import DashboardApp

START = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
TICK = timedelta(milliseconds=137)
NOW = START + timedelta(minutes=3)  # the dashboard's frozen clock
SCREENSHOT_SIZE = (140, 20)
# The modules that bind `orchestrator.clock.new_id` at import, under the names they use.
_ID_SOURCES = (
    "orchestrator.engine.admission.make_id",
    "orchestrator.engine.supervisor.new_id",
    "orchestrator.engine.control.new_id",
)


class TickingClock(FakeClock):
    """A fake clock that moves `step` at every reading."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        super().__init__(start)
        self._step_us = step // timedelta(microseconds=1)

    def now_us(self) -> int:
        now = super().now_us()
        self._now_us += self._step_us
        return now


@contextlib.contextmanager
def fixed_ids() -> Iterator[None]:
    """Run and event ids that look random but are the same, in the order they are made."""
    counter = iter(range(1, 1_000_000))

    def next_id() -> str:
        return hashlib.sha256(b"dashboard-seed-%d" % next(counter)).hexdigest()[:32]

    with contextlib.ExitStack() as stack:
        for target in _ID_SOURCES:
            stack.enter_context(mock.patch(target, next_id))
        yield


@contextlib.contextmanager
def pinned_utc() -> Iterator[None]:
    """Local time is UTC while the block runs (the dashboard shows local times)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


async def validate(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "valid": True}


async def reserve(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.log.info("reserving %s item(s) for order %s", state["items"], state["order_id"])
    return {**state, "reserved": True, "warehouse": "north"}


async def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="payment.received",
        where={"order_id": ("==", state["order_id"]), "amount": (">=", state["total"])},
        into="payment",
    )


async def ship(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "shipped": True, "tracking": f"TRK-{state['order_id']}"}


async def charge(state: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"card declined for invoice {state['invoice']}")


async def collect(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "orders": 3, "revenue": 95}


async def build(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "artifact": f"app-{state['version']}.tar.gz"}


async def approve(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="deploy.approved", where={"version": ("==", state["version"])})


async def release(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "released": True}


WORKFLOWS = [
    Workflow(
        id="orders",
        triggers={"new": Trigger(event="order.created", where={"total": (">", 0)})},
        pipelines={"new": [validate, reserve, wait_for_payment, ship]},
        mode=Transient(concurrency=10, capacity=100),
    ),
    Workflow(
        id="billing",
        triggers={"charge": Trigger(event="invoice.due")},
        pipelines={"charge": [validate, charge]},
    ),
    Workflow(
        id="reports",
        triggers={"nightly": Schedule(cron="0 2 * * *", tz="UTC")},
        pipelines={"nightly": [collect]},
    ),
    Workflow(
        id="deploys",
        triggers={"release": Trigger(event="deploy.requested")},
        pipelines={"release": [build, approve, release]},
        mode=Serialized(),
    ),
]


async def seed(db: Path) -> dict[str, str]:
    """Write the journal at `db` (a new file); the run ids by what happened to them."""
    clock = TickingClock(START, TICK)
    with fixed_ids():
        async with Runtime(db, workflows=WORKFLOWS, clock=clock) as rt:
            return await _story(rt)


async def _story(rt: Runtime) -> dict[str, str]:
    order = {"total": 40, "items": 2}
    shipped = await rt.invoke("orders", "new", {**order, "order_id": 1001})
    await rt.emit("payment.received", {"order_id": 1001, "amount": 40})
    await rt.wait(shipped.run_id)
    failed = await rt.invoke("billing", "charge", {"invoice": 77, "order_id": 1003})
    report = await rt.invoke("reports", "nightly", {"scheduled_for": "2026-11-22T02:00:00Z"})
    waiting = await rt.invoke("orders", "new", {**order, "order_id": 1002})
    await rt.emit("payment.received", {"order_id": 1002, "amount": 25})  # not enough
    deploy = await rt.invoke("deploys", "release", {"version": "1.4.0"})
    await rt.emit("deploy.requested", {"version": "1.4.1"})  # queued behind 1.4.0
    aborted = await rt.invoke("orders", "new", {**order, "order_id": 1004})
    await rt.abort(aborted.run_id)
    await rt.emit("order.created", {"order_id": 1005, "total": 0})  # where total > 0
    await rt.emit("order.created", {"order_id": 1006, "total": 15, "items": 1})
    rt.report_load(Path("workflows/refunds.py"), 12, "SyntaxError: invalid syntax")
    await rt.emit("nobody.listens", {"ping": 1})  # commits the load error with it
    runs = {r.run_id: r for r in await rt.list_all_runs()}
    ids = {
        "shipped": shipped.run_id,
        "failed": failed.run_id,
        "report": report.run_id,
        "waiting": waiting.run_id,
        "deploy": deploy.run_id,
        "aborted": aborted.run_id,
    }
    known = set(ids.values())
    for run in runs.values():
        if run.run_id not in known:
            ids["queued" if run.workflow_id == "deploys" else "triggered"] = run.run_id
    return ids


async def screenshot(target: Path, size: tuple[int, int] = SCREENSHOT_SIZE) -> None:
    """Seed a journal and save the runs screen as an SVG at `target`."""
    target = target.resolve()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp), pinned_utc():
        db = Path("orchestrator.db")  # relative: the banner shows it as the CLI's default
        runs = len(await seed(db))
        app = DashboardApp(db, now=lambda: NOW)
        async with app.run_test(size=size) as pilot:
            await until(
                pilot,
                lambda: app.screen.query_one("#runs", DataTable).row_count == runs,
                "the runs to show",
            )
            await pilot.pause()
            app.save_screenshot(target.name, str(target.parent))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.svg")
    out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(screenshot(out))
    print(out)

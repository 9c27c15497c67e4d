"""Routing and starting stay flat as workflows sharing event types multiply: counted, never timed.

1,000 workflows, one per tenant, listening to the same event type each for its own
``tenant``: an event that starts one run must cost what it costs with a few workflows (the
lines of the engine and of the conditions that run), and a runtime given N workflows
commits them together, not one commit each. How long it takes is `bench/bench_routing.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_registration_scale import PACKAGE, counting_lines

from orchestrator import Runtime, Trigger, Workflow

ROUTING = (str(PACKAGE / "engine"), str(PACKAGE / "define"))
EMITS = 20


async def step(state: dict[str, Any]) -> dict[str, Any]:
    return state


def tenants(n: int) -> list[Workflow]:
    return [
        Workflow(
            id=f"tenant_{k}",
            triggers={
                "created": Trigger(event="order.created", where={"tenant": ("==", k)}),
                "paid": Trigger(event="order.paid", where={"tenant": ("==", k), "n": (">", 0)}),
            },
            pipelines={"created": [step], "paid": [step]},
        )
        for k in range(n)
    ]


async def lines_to_route(tmp_path: Path, n: int) -> int:
    """Lines run while `EMITS` events each start one run of one of `n` tenants' workflows."""
    async with Runtime(tmp_path / f"journal-{n}.db", workflows=tenants(n)) as rt:
        await rt.idle()
        with counting_lines(ROUTING) as count:
            for i in range(EMITS):
                await rt.emit("order.created", {"tenant": i % n, "n": i})
                await rt.emit("order.paid", {"tenant": i % n, "n": i + 1})
            await rt.idle()
        runs = await rt.list_runs(status="completed", limit=-1)
    assert len(runs) == 2 * EMITS
    return count[0]


async def test_an_event_costs_the_same_among_10_or_400_workflows(tmp_path: Path) -> None:
    few = await lines_to_route(tmp_path, 10)
    many = await lines_to_route(tmp_path, 400)
    # A scan of every trigger would be about 40x the routing part; a lookup costs the same.
    assert many < 1.2 * few, (few, many)


async def test_workflows_given_to_the_runtime_commit_together(tmp_path: Path) -> None:
    runtime = Runtime(tmp_path / "journal.db", workflows=tenants(100))
    writer: Any = runtime._writer
    apply, commits = writer._apply, []

    def counted(ops: list[Any]) -> None:
        apply(ops)
        commits.append(len(ops))

    writer._apply = counted
    async with runtime:
        assert len(runtime.list_workflows()) == 100
    # Opening, the workflows, ready, stop: a few commits, not one per workflow.
    assert len(commits) < 10, commits

"""A few durable runs through the Python API (files starting with `_` are not workflows).

    python examples/_demo.py   # journal: $ORCHESTRATOR_DB, else examples/orchestrator.db
"""

import asyncio
import os
import random

from orchestrator import Runtime, Step, Workflow


async def reserve(state, ctx):
    ctx.log.info("reserving stock for order %s", state["order_id"])
    return {**state, "reserved": True}


def charge(state, ctx):
    # A sync step runs in a worker thread: blocking here never freezes the runtime.
    if random.random() < 0.3:
        raise ConnectionError("payment gateway timed out")
    return {**state, "charged": state["total"], "receipt": ctx.idempotency_key}


async def ship(state):
    return {**state, "shipped": True}


orders = Workflow(
    id="orders",
    pipelines={"new": [reserve, Step(charge, retries=3, backoff=0.05), ship]},
)


async def main() -> None:
    db = os.environ.get("ORCHESTRATOR_DB", "examples/orchestrator.db")
    async with Runtime(db) as rt:
        await rt.register(orders)
        results = await asyncio.gather(
            *(rt.invoke("orders", "new", {"order_id": n, "total": 10 * n}) for n in range(1, 6))
        )
        for result in results:
            print(f"{result.run_id}  {result.status:<9}  {result.state}")
    print(f"\njournal: {db}   try: orchestrator show {results[0].run_id} --db {db}")


if __name__ == "__main__":
    asyncio.run(main())

"""Orders: reserve stock, wait for the payment, then ship, or cancel if nobody pays.

What it shows: a `Trigger` with a `where` condition, a workflow-scoped `Service`, a wait
registered early with the pause service, a pause with a timeout that cancels the order,
`env=` settings and an `on_complete` hook.

Try it with the daemon running (``./scripts/up``, or ``orchestrator up examples/``)::

    orchestrator emit order.created '{"order_id": 7, "total": 12}'     # starts a run
    orchestrator runs --workflow orders                                 # ... now paused
    orchestrator emit payment.received '{"order_id": 7, "amount": 12}' # resumes it: shipped
    orchestrator emit order.created '{"order_id": 8, "total": 0}'      # no run: total is 0

An order nobody pays for is cancelled after ``PAYMENT_TIMEOUT_SECONDS`` (default one hour;
start the daemon with ``PAYMENT_TIMEOUT_SECONDS=20`` to watch it happen).
"""

import logging

from orchestrator import Service, Trigger, Workflow

# Lines logged under "orchestrator." reach the daemon's log (stderr).
log = logging.getLogger("orchestrator.examples.orders")


class Stockroom:
    """A stand-in for your inventory system: reservations by order id, in memory."""

    def __init__(self):
        self.reserved = {}

    def reserve(self, order_id, warehouse):
        # Idempotent: a step may run again after a crash, so reserving twice is harmless.
        return self.reserved.setdefault(order_id, f"{warehouse}/{order_id}")

    def release(self, order_id):
        return self.reserved.pop(order_id, None) is not None


def make_stockroom(ctx):
    # scope="workflow": one Stockroom for all the orders, built on first use.
    return Stockroom()


async def reserve(state, ctx):
    order_id = state["order_id"]
    # Register the payment wait before doing anything slow: a payment that arrives while
    # we reserve is kept for the pause below, not missed.
    ctx.pause_service.register(event="payment.received", where={"order_id": ("==", order_id)})
    stock = await ctx.use("stock")
    reservation = stock.reserve(order_id, warehouse=ctx.env.get("WAREHOUSE"))
    ctx.log.info("order %s: reserved %s", order_id, reservation)
    return {**state, "reservation": reservation}


def wait_for_payment(state, ctx):
    # Same event and conditions as the wait registered above, so buffered payments count.
    # After the timeout the run continues with state["payment"] = None.
    timeout = float(ctx.env.get("PAYMENT_TIMEOUT_SECONDS") or 3600)
    return ctx.pause(
        event="payment.received",
        where={"order_id": ("==", state["order_id"])},
        into="payment",
        timeout=timeout,
        on_timeout="continue",
    )


async def cancel_if_unpaid(state, ctx):
    if state.get("payment") is not None:
        return state
    stock = await ctx.use("stock")
    stock.release(state["order_id"])
    ctx.log.warning("order %s: no payment in time, cancelled", state["order_id"])
    return {**state, "status": "cancelled", "reservation": None}


def ship(state, ctx):
    if state.get("status") == "cancelled":
        return state
    # A sync step runs in a worker thread: a slow call to a carrier would not block anyone.
    ctx.log.info("order %s: shipping from %s", state["order_id"], ctx.env.get("WAREHOUSE"))
    return {**state, "status": "shipped", "carrier": ctx.env.get("CARRIER")}


def log_outcome(result):
    # on_complete fires for every finished run: completed, failed or aborted.
    order = result.state.get("order_id")
    log.info(
        "order %s: run %s %s (%s)",
        order,
        result.run_id,
        result.status,
        result.state.get("status") or result.error,
    )


workflow = Workflow(
    id="orders",
    # Only orders worth something start a run; other order.created events are ignored.
    triggers={"new": Trigger(event="order.created", where={"total": (">", 0)})},
    pipelines={"new": [reserve, wait_for_payment, cancel_if_unpaid, ship]},
    services=[Service("stock", make_stockroom, scope="workflow")],
    # The workflow's env wins over the daemon's environment (ctx.env.get).
    env={"WAREHOUSE": "berlin-1", "CARRIER": "parcel-post"},
    on_complete=log_outcome,
)

"""Approval: a request waits for a human decision, then goes one way or the other.

What it shows: a run that pauses for days at no cost (it is a row in the journal, not a
task), resumed either by an event or by hand from the CLI, and `ctx.log` lines that land in
the run's timeline (``orchestrator show RUN_ID``).

Try it with the daemon running (``orchestrator up examples/``)::

    orchestrator emit approval.requested '{"request_id": "r-1", "what": "refund", "amount": 80}'
    orchestrator runs --workflow approval --status paused     # note the RUN_ID

then either decide by event (as a chat bot or a web form would)::

    orchestrator emit approval.decided '{"request_id": "r-1", "approved": true, "by": "ana"}'

or by hand::

    orchestrator resume RUN_ID '{"approved": false}'

A request nobody decides within ``APPROVAL_TIMEOUT_SECONDS`` (default three days) expires.
"""

from orchestrator import Trigger, Workflow


def ask(state, ctx):
    ctx.log.info(
        "approval needed: %s of %s (request %s)",
        state.get("what"),
        state.get("amount"),
        state["request_id"],
    )
    return {**state, "asked": True}


def wait_for_decision(state, ctx):
    # The decision event's data lands in state["decision"]; after the timeout it is None.
    return ctx.pause(
        event="approval.decided",
        where={"request_id": ("==", state["request_id"])},
        into="decision",
        timeout=float(ctx.env.get("APPROVAL_TIMEOUT_SECONDS") or 3 * 24 * 3600),
    )


def _approved(state):
    # By event the answer is in state["decision"]; `orchestrator resume RUN_ID
    # '{"approved": true}'` merges it into the state itself.
    decision = state.get("decision") or state
    return decision.get("approved") is True


def act(state, ctx):
    # The branch: the step after the pause looks at what was decided.
    if _approved(state):
        ctx.log.info("request %s approved: carrying it out", state["request_id"])
        return {**state, "outcome": "approved"}
    if state.get("decision") is None and "approved" not in state:
        ctx.log.warning("request %s expired without a decision", state["request_id"])
        return {**state, "outcome": "expired"}
    ctx.log.warning("request %s rejected", state["request_id"])
    return {**state, "outcome": "rejected"}


workflow = Workflow(
    id="approval",
    triggers={
        "request": Trigger(event="approval.requested", where={"request_id": ("exists", True)})
    },
    pipelines={"request": [ask, wait_for_decision, act]},
)

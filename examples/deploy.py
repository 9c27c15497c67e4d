"""Deploy: deployment requests queue up and run one at a time, in the order they came.

What it shows: `Serialized()` (first in, first out, one run at a time; a queued run is a
``queued`` row in the journal, so the queue survives a restart), a `Step` with retries and
backoff, and a short `ctx.sleep` that keeps the slot while the new version settles.

Try it with the daemon running (``orchestrator up examples/``)::

    orchestrator emit deploy.requested '{"service": "api", "version": "1.4.2"}'
    orchestrator emit deploy.requested '{"service": "api", "version": "1.4.3", "flaky": true}'
    orchestrator runs --workflow deploy        # one running (or paused), the other queued
    cat examples/releases/api.log

``"flaky": true`` makes the first push to the (pretend) registry fail, so the timeline of
that run (``orchestrator show RUN_ID``) shows the retry. ``DEPLOY_BAKE_SECONDS`` (default 3)
sets how long a release bakes before the next deploy may start.
"""

from datetime import UTC, datetime
from pathlib import Path

from orchestrator import Serialized, Step, Trigger, Workflow

RELEASES = Path(__file__).resolve().parent / "releases"


def build(state, ctx):
    # Sync steps run in a worker thread: a real build (a subprocess) would go here.
    artifact = f"{state['service']}-{state['version']}.tar.gz"
    ctx.log.info("built %s", artifact)
    return {**state, "artifact": artifact}


def run_tests(state, ctx):
    ctx.log.info("tests passed for %s", state["artifact"])
    return {**state, "tested": True}


def release(state, ctx):
    if state.get("flaky") and ctx.attempt == 1:
        raise ConnectionError("registry answered 503 (pretend)")  # retried after the backoff
    RELEASES.mkdir(exist_ok=True)
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    # One line per release; ctx.idempotency_key is the same if this step ever runs again
    # (after a crash), so a real registry could ignore the repeat.
    with (RELEASES / f"{state['service']}.log").open("a", encoding="utf-8") as log:
        log.write(f"{at} {state['version']} {ctx.idempotency_key}\n")
    return {**state, "released_at": at}


def bake(state, ctx):
    # A paused run keeps the Serialized slot: the next deploy waits until this one is done.
    return ctx.sleep(float(ctx.env.get("DEPLOY_BAKE_SECONDS") or 3))


def verify(state, ctx):
    ctx.log.info("%s %s is live", state["service"], state["version"])
    return {**state, "live": True}


workflow = Workflow(
    id="deploy",
    triggers={"request": Trigger(event="deploy.requested", where={"version": ("exists", True)})},
    pipelines={
        "request": [build, run_tests, Step(release, retries=2, backoff=1.0), bake, verify],
    },
    mode=Serialized(),
)

"""What a coordinator and an executor say about a run segment (`engine.segments.wire`).

A reply is read back as it was written; any other JSON object (a row something else
wrote) is `Unreadable`, which the coordinator treats as the loss of its executor: never
another exception, never a run moved to a state no executor could have left it in.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import Workflow
from orchestrator.define.waits import join_request, pause_request, sleep_request
from orchestrator.engine.executor import ActiveRun, Finished
from orchestrator.engine.registry import register
from orchestrator.engine.segments import wire
from orchestrator.journal import ops
from orchestrator.records import RunCode, RunStatus


async def _step(state: dict[str, Any]) -> dict[str, Any]:
    return state


def a_run(state: str = '{"n":1}') -> ActiveRun:
    registered = register(Workflow(id="w", pipelines={"p": [_step, _step]}))
    loop = asyncio.new_event_loop()
    settled: asyncio.Future[Any] = loop.create_future()
    loop.close()  # the future is never awaited: only its run's fields are read
    return ActiveRun(
        row=3,
        run_id="r",
        workflow=registered,
        trigger_id="p",
        steps=registered.steps("p"),
        step_index=1,
        position=4,
        state_text=state,
        settled=settled,
        recovered_at=("_step", 2),
    )


def through_the_journal(reply: dict[str, Any]) -> wire.Reply:
    return wire.read_reply(json.loads(json.dumps(reply)))


def test_an_end_is_read_back_as_written() -> None:
    run = a_run()
    finished = Finished(
        RunStatus.FAILED, "step '_step' failed: boom", RunCode.STEP_FAILED, "_step", "tb"
    )
    reply = through_the_journal(wire.end_reply(run, finished, 3))
    assert reply.outcome == finished and reply.signals == 3 and not reply.back
    assert reply.progress == wire.Progress(1, 4, '{"n":1}')
    done = through_the_journal(wire.end_reply(run, Finished(RunStatus.COMPLETED), 0))
    assert done.outcome == Finished(RunStatus.COMPLETED)


@pytest.mark.parametrize(
    "pause",
    [
        pause_request(
            event="paid",
            where={"n": ("==", 1)},
            into="paid",
            timeout=3,
            on_timeout="fail",
            wait=None,
            label="t",
        ),
        sleep_request(5, label="t"),
        join_request(["a", "b"], into="kids", timeout=None, on_timeout="continue", label="t"),
    ],
)
def test_a_pause_is_read_back_as_written(pause: Any) -> None:
    reply = through_the_journal(wire.pause_reply(a_run(), pause, 0, None))
    assert reply.outcome is not None and not isinstance(reply.outcome, Finished)
    assert reply.carried is None
    again = wire.pause_reply(a_run(), reply.outcome, 0, None)
    assert again == wire.pause_reply(a_run(), pause, 0, None)


def test_a_pausing_steps_writes_travel_with_its_pause() -> None:
    """Its checkpoint and outbox commit with the pause on the coordinator, as written."""
    carried = [
        *ops.checkpoint(
            3, 5, "_step", started_at=1, ended_at=2, state='{"n":"\u0000é"}', next_step="_step"
        ),
        *ops.outbox_event("e1", "paid", '{"n":1}', 2, key="k"),
        *ops.outbox_invoke("r", "w", "p", "{}", 2),
        ops.add_child("c", "r", 2, 0),
    ]
    reply = through_the_journal(wire.pause_reply(a_run(), sleep_request(5, label="t"), 0, carried))
    assert reply.carried == carried


def test_aborted_and_handed_back_are_told_apart() -> None:
    aborted = through_the_journal(wire.stopped_reply(a_run(), back=False, signals=1))
    assert aborted.outcome is None and not aborted.back
    back = through_the_journal(wire.stopped_reply(a_run(), back=True, signals=0))
    assert back.back and not back.coordinator
    pinned = through_the_journal(
        wire.stopped_reply(a_run(), back=True, signals=0, coordinator=True)
    )
    assert pinned.back and pinned.coordinator


def test_the_request_names_where_the_run_is() -> None:
    request = wire.request_of(a_run())
    assert request == {
        "workflow": "w",
        "trigger": "p",
        "step_index": 1,
        "position": 4,
        "commit_next": False,
        "recovered_at": ["_step", 2],
    }


PROGRESS = {"step_index": 1, "position": 2, "state": "{}"}


@pytest.mark.parametrize(
    "reply",
    [
        {},
        {"crashed": "the daemons serving it stopped 3 times"},
        {"progress": PROGRESS},  # no outcome
        {"progress": {**PROGRESS, "state": "[1]"}, "aborted": True},  # not an object
        {"progress": {**PROGRESS, "state": "{" * 100_000}, "aborted": True},  # too deep
        {"progress": {**PROGRESS, "step_index": -1}, "aborted": True},
        {"progress": {**PROGRESS, "position": "2"}, "aborted": True},
        {
            "progress": PROGRESS,
            "end": {"status": "paused", "error": None, "code": None, "step": None, "trace": None},
        },
        {
            "progress": PROGRESS,
            "end": {"status": "failed", "error": 7, "code": None, "step": None, "trace": None},
        },
        {
            "progress": PROGRESS,
            "end": {"status": "failed", "error": "x", "code": "NOPE", "step": None, "trace": None},
        },
        {"progress": PROGRESS, "pause": {"event": "e"}},
        *(
            {
                "progress": PROGRESS,
                "pause": wire.pause_to_json(sleep_request(5, label="t")),
                "carried": bad,
            }
            for bad in (
                {"SET_PROGRESS": [1]},
                [["SET_STATUS", [3, "completed", 1]]],  # not a step's write
                [["NOPE", []]],
                [["SET_PROGRESS", [1, {"x": 1}, 2, 2, 3]]],
                [["SET_PROGRESS", 1]],
                [["SET_PROGRESS"]],
            )
        ),
        {
            "progress": PROGRESS,
            "pause": {
                "event": None,
                "conditions": [],
                "into": "k",
                "timeout": None,
                "on_timeout": "continue",
                "joins": None,
            },
        },
    ],
)
def test_a_reply_no_executor_writes_is_unreadable(reply: dict[str, Any]) -> None:
    with pytest.raises(wire.Unreadable):
        wire.read_reply(reply)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["progress", "end", "pause", "aborted", "back", "signals", "coordinator", "carried"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(KEYS, JSON, max_size=5), st.dictionaries(st.sampled_from(list(PROGRESS)), JSON)
)
def test_any_json_object_is_a_reply_or_unreadable(
    reply: dict[str, Any], progress: dict[str, Any]
) -> None:
    if "progress" in reply and isinstance(reply["progress"], dict):
        reply["progress"] = {**PROGRESS, **progress}
    try:
        read = wire.read_reply(reply)
    except wire.Unreadable:
        return
    assert read.progress.step_index >= 0 and isinstance(read.progress.state, str)

"""Failing steps for `test_tracebacks.py`, at the top level: a worker process imports them.

`parse` raises from a helper one call down, so a traceback shows two frames of this file;
its message carries the state's ``token``, which the test makes a secret.
"""

from __future__ import annotations

from typing import Any

from orchestrator import Step, Workflow

State = dict[str, Any]
RAISING_LINE = 'raise ValueError(f"cannot parse {token}")'


def _check(token: str) -> None:
    raise ValueError(f"cannot parse {token}")


def parse(state: State) -> State:
    _check(state["token"])
    return state


async def parse_async(state: State) -> State:
    _check(state["token"])
    return state


WORKFLOW = Workflow(
    id="tb",
    pipelines={
        "inline": [Step(parse, inline=True)],
        "thread": [parse],
        "async": [parse_async],
        "isolated": [Step(parse, isolate=True)],
    },
)

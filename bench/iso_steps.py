"""Step functions of bench_isolation.py, in a module of their own so a worker process imports them.

An isolated step of a workflow defined in code runs in a worker process, which imports it by
module and qualified name: these are top-level functions of an importable module (the
benchmark's folder is on ``sys.path``, which the pool passes to its workers).
"""

from __future__ import annotations

import time
from typing import Any

State = dict[str, Any]


async def astep(state: State) -> State:
    """A trivial async step."""
    return state


def step(state: State) -> State:
    """A trivial sync step."""
    return state


def io_step(state: State) -> State:
    """1 ms of blocking I/O (a sleep stands for it), then n += 1."""
    time.sleep(0.001)
    return {**state, "n": state["n"] + 1}

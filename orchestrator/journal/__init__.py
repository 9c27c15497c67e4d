"""The journal: the one home of SQL and of the only aiosqlite import.

`GroupCommitWriter` owns the write connection and the lease; `JournalReader` answers
queries on its own read-only connection; `ops` builds the writes. Names are imported on
first use, so the CLI's writing commands (`commands`) load neither aiosqlite nor asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import ops
    from .connection import Synchronous
    from .faults import FaultPoints, SimulatedCrash
    from .reader import (
        CommandOutcome,
        CommandRecord,
        DaemonRecord,
        EventRecord,
        JournalReader,
        LoadErrorRecord,
        UnfinishedRun,
        WaitRecord,
        WorkflowRecord,
    )
    from .writer import GroupCommitWriter

_EXPORTS = {
    "CommandOutcome": ".reader",
    "CommandRecord": ".reader",
    "DaemonRecord": ".reader",
    "EventRecord": ".reader",
    "FaultPoints": ".faults",
    "GroupCommitWriter": ".writer",
    "JournalReader": ".reader",
    "LoadErrorRecord": ".reader",
    "SimulatedCrash": ".faults",
    "Synchronous": ".connection",
    "UnfinishedRun": ".reader",
    "WaitRecord": ".reader",
    "WorkflowRecord": ".reader",
}

__all__ = [
    "CommandOutcome",
    "CommandRecord",
    "DaemonRecord",
    "EventRecord",
    "FaultPoints",
    "GroupCommitWriter",
    "JournalReader",
    "LoadErrorRecord",
    "SimulatedCrash",
    "Synchronous",
    "UnfinishedRun",
    "WaitRecord",
    "WorkflowRecord",
    "ops",
]


def __getattr__(name: str) -> Any:
    if name == "ops":
        return importlib.import_module(".ops", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

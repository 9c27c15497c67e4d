"""The journal: the one home of SQL and of the only aiosqlite import.

`GroupCommitWriter` owns the write connection and the lease; `JournalReader` answers
queries on its own read-only connection; `ops` builds the writes. Names are imported on
first use, so the CLI's writing commands (`commands`) load neither aiosqlite nor asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, {**_EXPORTS, "ops": ".ops"})

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
    from .faults import FaultPoints, SimulatedCrash
    from .sqlite.connection import Synchronous
    from .sqlite.reader import (
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
    from .sqlite.writer import GroupCommitWriter

_EXPORTS = {
    "CommandOutcome": ".sqlite.reader",
    "CommandRecord": ".sqlite.reader",
    "DaemonRecord": ".sqlite.reader",
    "EventRecord": ".sqlite.reader",
    "FaultPoints": ".faults",
    "GroupCommitWriter": ".sqlite.writer",
    "JournalReader": ".sqlite.reader",
    "LoadErrorRecord": ".sqlite.reader",
    "SimulatedCrash": ".faults",
    "Synchronous": ".sqlite.connection",
    "UnfinishedRun": ".sqlite.reader",
    "WaitRecord": ".sqlite.reader",
    "WorkflowRecord": ".sqlite.reader",
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

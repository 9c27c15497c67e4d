"""The journal: the one home of SQL and of the only aiosqlite import.

`GroupCommitWriter` owns the write connection and the lease; `JournalReader` answers
queries on its own read-only connection; `ops` builds the writes.
"""

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

"""The journal: the one home of SQL and of the only aiosqlite import.

`GroupCommitWriter` owns the write connection and the lease; `JournalReader` answers
queries on its own read-only connection; `ops` builds the writes.
"""

from . import ops
from .connection import Synchronous
from .faults import FaultPoints, SimulatedCrash
from .reader import CommandRecord, EventRecord, JournalReader, UnfinishedRun, WaitRecord
from .writer import GroupCommitWriter

__all__ = [
    "CommandRecord",
    "EventRecord",
    "FaultPoints",
    "GroupCommitWriter",
    "JournalReader",
    "SimulatedCrash",
    "Synchronous",
    "UnfinishedRun",
    "WaitRecord",
    "ops",
]

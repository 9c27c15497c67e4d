"""The journal: the one home of SQL, behind one seam that every backend implements.

Layers above the journal (the engine, the CLI, the folder, the dashboard) import only this
package's API, never a backend (an import-linter contract checks it):

- `open_journal` (in `backends`) turns ``db`` into a `JournalBackend`: a file path gives
  the SQLite backend (`sqlite/`, the only aiosqlite import); a ``postgresql://`` URL is
  refused with `JournalBackendUnavailable` until that backend exists.
- `protocol` says what a backend offers: the runtime's `JournalWriter` (group commit under
  the lease), `JournalQueries` for the engine and the CLI, `DashboardViews`, the
  `JournalCommands` another process writes, the `ChangeFeed` both readers poll, and the
  `StepJobs` through which standbys run isolated steps, `RunTasks` through which they
  execute segments of runs (PostgreSQL only).
- `ops` builds the writes as statement keys and parameters; each backend holds the
  statements themselves.
- `records` and `view_records` are what reads return, the same for every backend.
- `recording.RecordingJournal` is an in-memory `JournalWriter` for unit tests.

The SQLite backend's classes (`GroupCommitWriter`, `JournalReader`) are not exported here:
code above the journal gets a backend from `open_journal` and cannot name them. Names are
imported on first use, so the CLI's writing commands load neither aiosqlite nor asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from . import ops
    from .backends import open_journal
    from .faults import FaultPoints, SimulatedCrash
    from .protocol import (
        ChangeFeed,
        DashboardViews,
        JournalBackend,
        JournalCommands,
        JournalQueries,
        JournalWriter,
        RoutingReads,
        RunTasks,
        StepJobs,
        Synchronous,
    )
    from .recording import RecordingJournal
    from .records import (
        CommandOutcome,
        CommandRecord,
        DaemonRecord,
        DormantRow,
        DormantWait,
        EventListeners,
        EventRecord,
        EventRoute,
        EventRouting,
        LoadErrorRecord,
        LogEntry,
        Opened,
        RunMatch,
        RunMatches,
        RunOutcome,
        RunTask,
        RunTaskAnswer,
        RunTaskOffer,
        RunTaskReply,
        StandbyRecord,
        StepJob,
        StepOffer,
        StepReply,
        StoredCheckpoint,
        StoredRun,
        SwitchRecord,
        UnfinishedRun,
        WaitRecord,
        WorkflowRecord,
        WriterIdentity,
    )
    from .view_records import (
        FIGURES_CAP,
        FIGURES_RECENT,
        SORTS,
        EventView,
        LoadErrorView,
        RouteView,
        RunDetail,
        RunFilter,
        RunPage,
        RunRow,
        WaitView,
        WorkflowFigures,
        WorkflowView,
    )

_EXPORTS = {
    "ChangeFeed": ".protocol",
    "CommandOutcome": ".records",
    "CommandRecord": ".records",
    "DaemonRecord": ".records",
    "DormantRow": ".records",
    "DormantWait": ".records",
    "DashboardViews": ".protocol",
    "EventListeners": ".records",
    "EventRecord": ".records",
    "EventRoute": ".records",
    "EventRouting": ".records",
    "EventView": ".view_records",
    "FIGURES_CAP": ".view_records",
    "FIGURES_RECENT": ".view_records",
    "FaultPoints": ".faults",
    "JournalBackend": ".protocol",
    "JournalCommands": ".protocol",
    "JournalQueries": ".protocol",
    "JournalWriter": ".protocol",
    "LoadErrorRecord": ".records",
    "LogEntry": ".records",
    "LoadErrorView": ".view_records",
    "Opened": ".records",
    "RecordingJournal": ".recording",
    "RouteView": ".view_records",
    "RoutingReads": ".protocol",
    "RunDetail": ".view_records",
    "RunFilter": ".view_records",
    "RunMatch": ".records",
    "RunMatches": ".records",
    "RunPage": ".view_records",
    "RunRow": ".view_records",
    "SORTS": ".view_records",
    "SimulatedCrash": ".faults",
    "RunOutcome": ".records",
    "RunTask": ".records",
    "RunTaskOffer": ".records",
    "RunTaskAnswer": ".records",
    "RunTaskReply": ".records",
    "RunTasks": ".protocol",
    "StandbyRecord": ".records",
    "StepJob": ".records",
    "StepJobs": ".protocol",
    "StepOffer": ".records",
    "StepReply": ".records",
    "StoredCheckpoint": ".records",
    "StoredRun": ".records",
    "Synchronous": ".protocol",
    "SwitchRecord": ".records",
    "UnfinishedRun": ".records",
    "WaitRecord": ".records",
    "WaitView": ".view_records",
    "WorkflowFigures": ".view_records",
    "WorkflowRecord": ".records",
    "WriterIdentity": ".records",
    "WorkflowView": ".view_records",
    "open_journal": ".backends",
}

__all__ = [
    "FIGURES_CAP",
    "FIGURES_RECENT",
    "SORTS",
    "ChangeFeed",
    "CommandOutcome",
    "CommandRecord",
    "DaemonRecord",
    "DormantRow",
    "DormantWait",
    "DashboardViews",
    "EventListeners",
    "EventRecord",
    "EventRoute",
    "EventRouting",
    "EventView",
    "FaultPoints",
    "JournalBackend",
    "JournalCommands",
    "JournalQueries",
    "JournalWriter",
    "LoadErrorRecord",
    "LogEntry",
    "LoadErrorView",
    "Opened",
    "RecordingJournal",
    "RouteView",
    "RoutingReads",
    "RunDetail",
    "RunFilter",
    "RunMatch",
    "RunMatches",
    "RunOutcome",
    "RunPage",
    "RunRow",
    "RunTask",
    "RunTaskOffer",
    "RunTaskAnswer",
    "RunTaskReply",
    "RunTasks",
    "SimulatedCrash",
    "StandbyRecord",
    "StepJob",
    "StepJobs",
    "StepOffer",
    "StepReply",
    "StoredCheckpoint",
    "StoredRun",
    "Synchronous",
    "SwitchRecord",
    "UnfinishedRun",
    "WaitRecord",
    "WaitView",
    "WorkflowFigures",
    "WorkflowRecord",
    "WorkflowView",
    "WriterIdentity",
    "open_journal",
    "ops",
]


if not TYPE_CHECKING:  # mypy sees the imports above, so a name not exported is an error
    __getattr__ = lazy_exports(__name__, {**_EXPORTS, "ops": ".ops"})

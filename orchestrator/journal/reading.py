"""What both backends' readers share: each query's Python, written once.

`SharedReads` holds the methods of `JournalQueries` whose only difference between the
backends is their SQL text: what they fetch and how rows become records. Each backend's
reader subclasses it, gives its dialect's statements as a `ReaderSQL` table and its own
`_fetch`, and keeps what truly differs (connections, `data_version`, the change feed, the
inbox's one-statement union, `outcomes` and `dormant_waits`, the hot paths, in their
dialect's best shape). This module knows no SQL and imports no driver.

A checkpoint's state is one column on SQLite (`json_patch` in SQL) and two on PostgreSQL
(its whole and its patch, put together in Python): `state_at` reads it wherever it stands,
so the columns after it are read by their names or from the row's end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..records import Checkpoint, RunInfo, RunStatus, TimelineEntry
from .decoding import (
    checkpoint_of,
    command_record,
    disabled_of,
    event_record,
    run_info,
    service_scopes,
    stored_fields,
    switch_commands,
    switch_records,
    wait_records,
    workflow_records,
)
from .records import (
    CommandOutcome,
    CommandRecord,
    DaemonRecord,
    EventRecord,
    LoadErrorRecord,
    LogEntry,
    RunMatches,
    StandbyRecord,
    StoredCheckpoint,
    StoredRun,
    SwitchRecord,
    UnfinishedRun,
    WaitRecord,
    WorkflowRecord,
)
from .timeline import assemble_timeline, row_entry


@dataclass(frozen=True, slots=True)
class ReaderSQL:
    """One dialect's statements for `SharedReads`, by the method that runs them.

    `list_runs` and `log_entries` hold ``{where}``, filled with the conditions given;
    `*_awake` are the same queries without what `dormant_waits` returns.
    """

    get_run: str
    list_runs: str
    list_all: str  # the condition that holds for every run ("1", "TRUE")
    list_filters: tuple[str, str, str]  # by status, by workflow, created since
    checkpoints: str
    timeline_run: str
    timeline_checkpoints: str
    timeline_entries: str
    log_entries: str
    log_after: str
    log_of_run: str
    unfinished_runs: str
    unfinished_awake: str
    stored_run: str
    stored_checkpoints: str
    live_waits: str
    live_awake: str
    wait_buffer: str
    unclosed_service_scopes: str
    unclosed_workflows: str
    max_ids: str
    schedule_ticks: str
    next_ticks: str
    files_seen: str
    unrouted_events: str
    pending_commands: str
    has_pending: str
    workflows: str
    switches: str
    pending_switches: str
    load_errors: str
    command_outcome: str
    keyed: str
    children: str
    pending_invokes: str
    run_status: str


class SharedReads(ABC):
    """The queries of `JournalQueries` that differ between backends only by their SQL."""

    _sql: ClassVar[ReaderSQL]

    @abstractmethod
    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query of this backend's dialect."""

    @abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read query for another journal module (the dashboard's views)."""

    @abstractmethod
    async def data_version(self) -> int:
        """Changes whenever another connection commits (each backend its own way)."""

    @abstractmethod
    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""

    @abstractmethod
    async def daemon(self) -> DaemonRecord | None:
        """The live process holding the journal, or None."""

    @abstractmethod
    async def standbys(self) -> list[StandbyRecord]:
        """The daemons standing by to take the journal over, oldest first."""

    def _names_nothing(self, *keys: str | None) -> bool:
        """Whether any of `keys` cannot name a row of this journal (PostgreSQL: a NUL)."""
        return False

    def limit_param(self, limit: int) -> int | None:
        """A LIMIT's parameter for `limit`, which is negative for all (the views' too)."""
        return limit

    def state_at(self, row: Sequence[Any], at: int) -> str:
        """The checkpoint state whose column(s) start at `at` in `row`."""
        return row[at]  # type: ignore[no-any-return]

    def _run_info(self, row: Any) -> RunInfo:
        """`run_info` of a row of the dialect's run columns."""
        return run_info(row)

    def _stored(self, row: Sequence[Any]) -> dict[str, Any]:
        """`stored_fields` of a row of the dialect's stored run."""
        return stored_fields(row)

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run, or None if the journal has no such run."""
        if self._names_nothing(run_id):
            return None
        rows = await self._fetch(self._sql.get_run, [run_id])
        return self._run_info(rows[0]) if rows else None

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        created_since: int | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally of one status and/or workflow, created since."""
        if self._names_nothing(status, workflow):
            return []
        # Only the conditions given, so the database reads the index of the status or
        # workflow (`x IS NULL OR ...` hides it: a rare status scanned every run).
        where, params = [self._sql.list_all], list[Any]()
        for condition, value in zip(
            self._sql.list_filters, (status, workflow, created_since), strict=True
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        sql = self._sql.list_runs.format(where=" AND ".join(where))
        rows = await self._fetch(sql, [*params, self.limit_param(limit)])
        return [self._run_info(row) for row in rows]

    async def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """Every committed checkpoint of a run, in order (position 0 is its input)."""
        if self._names_nothing(run_id):
            return []
        rows = await self._fetch(self._sql.checkpoints, [run_id])
        return [checkpoint_of(row, self.state_at(row, 4)) for row in rows]

    async def timeline(self, run_id: str) -> list[TimelineEntry] | None:
        """Everything a run did, in order; None if the journal has no such run."""
        if self._names_nothing(run_id):
            return None
        runs = await self._fetch(self._sql.timeline_run, [run_id])
        if not runs:
            return None
        run = runs[0]
        checkpoints = await self._fetch(self._sql.timeline_checkpoints, [run["id"]])
        entries = await self._fetch(self._sql.timeline_entries, [run["id"]])
        return assemble_timeline(run, checkpoints, entries)

    async def log_entries(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[LogEntry]:
        """Journaled timeline rows above `after`: the last `limit` (-1: all), oldest first."""
        if self._names_nothing(run_id):
            return []
        where, params = self._sql.log_after, list[object]([after])
        if run_id is not None:
            where += self._sql.log_of_run
            params.append(run_id)
        sql = self._sql.log_entries.format(where=where)
        rows = await self._fetch(sql, [*params, self.limit_param(limit)])
        return [
            LogEntry(row["id"], row["run_id"], row_entry(row), row["workflow_id"]) for row in rows
        ]

    async def unfinished_runs(self, *, dormant: bool = True) -> list[UnfinishedRun]:
        """Runs that are queued, running or paused, oldest first, with their last state.

        `dormant` False: without the runs `dormant_waits` returns.
        """
        sql = self._sql.unfinished_runs if dormant else self._sql.unfinished_awake
        return [UnfinishedRun(**self._stored(row)) for row in await self._fetch(sql)]

    async def stored_run(self, run_id: str) -> StoredRun | None:
        """One run whatever its status, with its last state and how it ended; None if unknown."""
        if self._names_nothing(run_id):
            return None
        rows = await self._fetch(self._sql.stored_run, [run_id])
        if not rows:
            return None
        row = rows[0]
        return StoredRun(
            **self._stored(row),
            error=row["error"],
            error_code=row["error_code"],
            updated_at=row["updated_at"],
        )

    async def stored_checkpoints(self, run_id: str) -> list[StoredCheckpoint]:
        """A run's checkpoints in order, with their state as journaled (position 0: input)."""
        if self._names_nothing(run_id):
            return []
        rows = await self._fetch(self._sql.stored_checkpoints, [run_id])
        return [StoredCheckpoint(row[0], row[1], self.state_at(row, 2)) for row in rows]

    async def live_waits(self, *, dormant: bool = True) -> list[WaitRecord]:
        """Armed and parked waits, oldest first, each with its buffered events in order.

        `dormant` False: without the waits `dormant_waits` returns.
        """
        rows = await self._fetch(self._sql.live_waits if dormant else self._sql.live_awake)
        buffered = await self._fetch(self._sql.wait_buffer)
        return wait_records(rows, buffered)

    async def unclosed_service_scopes(
        self, workflow_id: str
    ) -> list[tuple[int, str, str, list[str]]]:
        """Ended runs whose run-scoped services were built but whose scope was never closed.

        Each as (row, run id, last state, service ids), oldest first.
        """
        if self._names_nothing(workflow_id):
            return []
        rows = await self._fetch(self._sql.unclosed_service_scopes, [workflow_id])
        return service_scopes((row[0], row[1], self.state_at(row, 2), row[-1]) for row in rows)

    async def workflows_with_unclosed_service_scopes(self) -> set[str]:
        """Ids of the workflows that have ended runs with run-scoped services never closed.

        One scan of the service rows for all workflows, so registering N workflows does not
        scan them N times.
        """
        rows = await self._fetch(self._sql.unclosed_workflows)
        return {workflow_id for (workflow_id,) in rows}

    async def max_ids(self) -> tuple[int, int]:
        """The highest wait id and buffer sequence number in use."""
        rows = await self._fetch(self._sql.max_ids)
        return int(rows[0][0]), int(rows[0][1])

    async def schedule_ticks(self) -> dict[tuple[str, str], int]:
        """Each schedule's last fired tick (or when it was first armed)."""
        rows = await self._fetch(self._sql.schedule_ticks)
        return {(row[0], row[1]): row[2] for row in rows}

    async def files_seen(self, folder: str, glob: str) -> dict[str, int]:
        """Name -> inode of the files in `folder` that were events of this glob's watch."""
        if self._names_nothing(folder, glob):
            return {}
        rows = await self._fetch(self._sql.files_seen, [folder, glob])
        return {row[0]: row[1] for row in rows}

    async def unrouted_events(self, after: int, limit: int = 1000) -> list[EventRecord]:
        """Events written by other processes and not routed yet, oldest first."""
        rows = await self._fetch(self._sql.unrouted_events, [after, self.limit_param(limit)])
        return [event_record(row) for row in rows]

    async def pending_commands(self, after: int, limit: int = 1000) -> list[CommandRecord]:
        """Commands not applied yet, oldest first."""
        rows = await self._fetch(self._sql.pending_commands, [after, self.limit_param(limit)])
        return [command_record(row) for row in rows]

    async def has_pending(self, after_event: int, after_command: int) -> bool:
        """Whether other processes wrote events or commands past these ids (one query)."""
        rows = await self._fetch(self._sql.has_pending, [after_event, after_command])
        return bool(rows[0][0])

    async def workflows(self) -> list[WorkflowRecord]:
        """Workflows registered now, by id, with their switches and next schedule ticks."""
        rows = await self._fetch(self._sql.workflows)
        ticks = await self._fetch(self._sql.next_ticks)
        return workflow_records(rows, await self.disabled(), ticks)

    async def switches(self) -> list[SwitchRecord]:
        """Every disable or enable the daemon applied (the latest per key), by key."""
        return switch_records(await self._fetch(self._sql.switches))

    async def disabled(self) -> dict[str, dict[str, int]]:
        """Workflow id -> key ('' for the whole workflow, else a trigger id) -> disabled since."""
        return disabled_of(await self.switches())

    async def pending_switches(self) -> list[CommandRecord]:
        """Disable and enable commands not applied yet, oldest first."""
        return switch_commands(await self._fetch(self._sql.pending_switches))

    async def load_errors(self) -> list[LoadErrorRecord]:
        """Files that failed to load and have not loaded since, by file."""
        rows = await self._fetch(self._sql.load_errors)
        return [LoadErrorRecord(row[0], row[1], row[2], row[3]) for row in rows]

    async def command_outcome(self, run_id: str) -> CommandOutcome | None:
        """The latest command about `run_id` (an invoke names its run), or None."""
        if self._names_nothing(run_id):
            return None
        rows = await self._fetch(self._sql.command_outcome, [run_id])
        return CommandOutcome(rows[0][0], rows[0][1]) if rows else None

    async def keyed(self, kind: str, key: str) -> str | None:
        """What the idempotency `key` of `kind` (``emit``, ``invoke``) made first, or None."""
        if self._names_nothing(kind, key):
            return None
        rows = await self._fetch(self._sql.keyed, [kind, key])
        return str(rows[0][0]) if rows else None

    async def children(self, run_id: str) -> list[str]:
        """The ids of the runs a run's steps started (`ctx.start`), in the order started."""
        if self._names_nothing(run_id):
            return []
        return [row[0] for row in await self._fetch(self._sql.children, [run_id])]

    async def pending_invokes(self) -> set[str]:
        """The run ids of invoke commands not applied yet (runs that will exist)."""
        return {row[0] for row in await self._fetch(self._sql.pending_invokes)}

    async def run_status(self, run_id: str) -> tuple[int, RunStatus] | None:
        """The run's row id and status, or None if unknown."""
        if self._names_nothing(run_id):
            return None
        rows = await self._fetch(self._sql.run_status, [run_id])
        return (rows[0][0], RunStatus(rows[0][1])) if rows else None

"""The journal seam: what the engine, the CLI and the dashboard may ask of a journal.

Every layer above the journal holds these protocols, never a backend's classes. A backend
(SQLite, in `sqlite/`) implements them, and `open_journal` picks one from ``db``. What
flows through them is backend-neutral: writes are `ops` (statement keys and parameters),
answers are the dataclasses of `records` and `view_records`. Nothing here knows SQL.

    JournalBackend       one journal: makes its writer, opens readers, writes commands
    ├── JournalWriter    the runtime's only writer: group commit under the lease
    ├── JournalQueries   what the engine and the CLI read (a ChangeFeed too)
    ├── DashboardViews   what the dashboard reads (a ChangeFeed too)
    ├── JournalCommands  events and commands from another process (the CLI, the dashboard)
    ├── RoutingReads     what routing did with an event (`orchestrator emit`), without asyncio
    └── StepJobs         isolated steps the active daemon offers to its standbys (PostgreSQL)
    └── RunTasks         segments of runs the coordinator offers to executors (PostgreSQL)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # the CLI's small commands must not load asyncio
    import asyncio
    from datetime import datetime

    from ..errors import JournalError
    from ..records import RunInfo, RunStatus, TimelineEntry
    from .faults import FaultPoints
    from .ops import Op
    from .records import (
        CommandOutcome,
        CommandRecord,
        DaemonRecord,
        DormantRow,
        EventListeners,
        EventRecord,
        EventRouting,
        LoadErrorRecord,
        LogEntry,
        Opened,
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
        EventView,
        LoadErrorView,
        RunDetail,
        RunFilter,
        RunPage,
        WorkflowFigures,
        WorkflowView,
    )

Synchronous = Literal["FULL", "NORMAL"]
"""How durable a commit is: ``FULL`` survives a power loss, ``NORMAL`` a process crash."""


class ChangeFeed(Protocol):
    """Says cheaply whether anything was committed since the last look.

    Polled, not pushed: the inbox poller and the dashboard ask every tick and read rows
    only when the value moved.
    """

    async def data_version(self) -> int:
        """A value that changes whenever a commit lands (this process's own writer's too)."""


class JournalWriter(Protocol):
    """The runtime's one writer: batches of ops committed together, under the journal's lease.

    The runtime calls `open` (which takes the lease), runs `run` as a task of its own, and
    ends with `close`. Everything else is called on the event loop.
    """

    @property
    def backlog(self) -> int:
        """Ops waiting for the next batch."""

    @property
    def committed(self) -> bool:
        """Whether everything enqueued so far has committed (or failed): nothing in flight."""

    @property
    def failure(self) -> JournalError | None:
        """Why the writer stopped, if it did; it writes nothing more after that."""

    @property
    def degraded(self) -> str | None:
        """Why writes are failing now (they are kept and retried), or None while they succeed."""

    def lease_fresh(self) -> bool:
        """Whether the lease was renewed within its timeout (no one can have taken it over).

        Cheap (a monotonic comparison): checked before each step starts. False once the
        writer has failed.
        """

    async def open(self, *, standby: bool = False) -> Opened:
        """Connect, bring the schema up to date and take the lease (`JournalLocked` if held).

        With `standby` (a `JournalBackend.shared` journal only), a lease another daemon holds
        is waited for instead: the call returns once that daemon stopped or went stale and
        this one took over.
        """

    async def run(self) -> None:
        """Commit batches until `close` (or cancellation); the caller's task owns it."""

    async def close(self) -> None:
        """Commit what is pending, release the lease and disconnect."""

    def enqueue(self, ops: Iterable[Op], *, urgent: bool = False) -> asyncio.Future[None]:
        """Add ops to the next batch; the future resolves once that batch has committed.

        Raises:
            JournalError: The writer has failed or is closed.
        """

    def submit(self, ops: Iterable[Op], *, urgent: bool = False) -> None:
        """`enqueue` for a caller that awaits nothing: no future is made.

        The ops commit (or are refused, alone: the refusal is logged) as `enqueue`'s do;
        most writes are made this way, and a future per caller costs.

        Raises:
            JournalError: The writer has failed or is closed.
        """

    def together(self) -> AbstractContextManager[object]:
        """Every `enqueue` made inside the block joins the same batch (never await inside)."""

    async def write(self, ops: Iterable[Op]) -> None:
        """Write ops and return once they are committed."""

    async def flush(self) -> None:
        """Return once everything enqueued so far has committed."""

    async def mark_ready(self) -> None:
        """Record in the lease that recovery and loading are done."""

    @property
    def identity(self) -> WriterIdentity | None:
        """Who this writer is on a journal several daemons share; None on one only one runs."""


class JournalQueries(ChangeFeed, Protocol):
    """What the engine and the CLI read, on a connection of their own.

    No call leaves a read transaction open behind it.
    """

    @property
    def location(self) -> str:
        """Where the journal is, for messages (a file path, or a URL without its password)."""

    async def close(self) -> None:
        """Disconnect."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run, or None if the journal has no such run."""

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many.

        One range of the run id index, fast however many runs the journal holds.
        """

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        created_since: int | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally of one status and/or workflow (`limit` -1: all).

        `created_since` (epoch microseconds): only runs created at or after it.
        """

    async def timeline(self, run_id: str) -> list[TimelineEntry] | None:
        """Everything a run did, in order; None if the journal has no such run."""

    async def log_entries(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[LogEntry]:
        """Journaled timeline rows (of one run, or of all) with a row id above `after`.

        The last `limit` of them (-1: all), oldest first. Only what is stored as a row:
        logs, failures (with their tracebacks), retries, waits, recoveries; not the step
        starts and ends a run's checkpoints say (`timeline` assembles those).
        """

    async def run_status(self, run_id: str) -> tuple[int, RunStatus] | None:
        """The run's row id and status, or None if unknown."""

    async def children(self, run_id: str) -> list[str]:
        """The ids of the runs a run's steps started (`ctx.start`), in the order started."""

    async def outcomes(self, run_ids: Sequence[str]) -> dict[str, RunOutcome]:
        """Status, last state and error of each of `run_ids` the journal has (a join's)."""

    async def pending_invokes(self) -> set[str]:
        """The run ids of invoke commands not applied yet (runs that will exist)."""

    async def unfinished_runs(self, *, dormant: bool = True) -> list[UnfinishedRun]:
        """Runs that are queued, running or paused, oldest first, with their last state.

        `dormant` False: without the runs `dormant_waits` returns.
        """

    async def stored_run(self, run_id: str) -> StoredRun | None:
        """One run whatever its status, with its last state and how it ended; None if unknown."""

    async def stored_checkpoints(self, run_id: str) -> list[StoredCheckpoint]:
        """A run's checkpoints in order, with their state as journaled (position 0: input)."""

    async def live_waits(self, *, dormant: bool = True) -> list[WaitRecord]:
        """Armed and parked waits, oldest first, each with its buffered events in order.

        `dormant` False: without the waits `dormant_waits` returns.
        """

    async def dormant_waits(self) -> list[DormantRow]:
        """Paused runs parked on their only live wait, an event wait with no timeout or join.

        In any order, each with its run's last state, as plain tuples of `DormantWait`'s
        fields: one read at start-up, so that these runs are re-armed without an object
        per run until an event or a command needs one.
        """

    async def unclosed_service_scopes(
        self, workflow_id: str
    ) -> list[tuple[int, str, str, list[str]]]:
        """Ended runs whose run-scoped services were never closed: (row, run id, state, ids)."""

    async def workflows_with_unclosed_service_scopes(self) -> set[str]:
        """Ids of the workflows that have ended runs with run-scoped services never closed."""

    async def max_ids(self) -> tuple[int, int]:
        """The highest wait id and buffer sequence number in use."""

    async def schedule_ticks(self) -> dict[tuple[str, str], int]:
        """Each schedule's last fired tick (or when it was first armed)."""

    async def files_seen(self, folder: str, glob: str) -> dict[str, int]:
        """Name -> inode of the files in `folder` that were events of this glob's watch."""

    async def unrouted_events(self, after: int, limit: int = 1000) -> list[EventRecord]:
        """Events written by other processes and not routed yet, oldest first."""

    async def pending_commands(self, after: int, limit: int = 1000) -> list[CommandRecord]:
        """Commands not applied yet, oldest first."""

    async def inbox(
        self, after_event: int, after_command: int, limit: int = 1000
    ) -> tuple[list[EventRecord], list[CommandRecord]]:
        """`unrouted_events` and `pending_commands` as of one moment, in one read.

        Two reads would each see their own moment: a command committed between them would
        come without the events committed before it, and be applied ahead of them.
        """

    async def has_pending(self, after_event: int, after_command: int) -> bool:
        """Whether other processes wrote events or commands past these ids."""

    async def workflows(self) -> list[WorkflowRecord]:
        """Workflows registered now, by id, with their switches and next schedule ticks."""

    async def switches(self) -> list[SwitchRecord]:
        """Every disable or enable the daemon applied (the latest per key), by key."""

    async def pending_switches(self) -> list[CommandRecord]:
        """Disable and enable commands not applied yet, oldest first."""

    async def load_errors(self) -> list[LoadErrorRecord]:
        """Files that failed to load and have not loaded since, by file."""

    async def daemon(self) -> DaemonRecord | None:
        """The live holder of the lease, or None when no process holds it."""

    async def standbys(self) -> list[StandbyRecord]:
        """The daemons standing by to take the journal over, oldest first (a file has none)."""

    async def command_outcome(self, run_id: str) -> CommandOutcome | None:
        """The latest command about `run_id` (an invoke names its run), or None."""

    async def keyed(self, kind: str, key: str) -> str | None:
        """What the idempotency `key` of `kind` (``emit``, ``invoke``) made first, or None."""


class DashboardViews(ChangeFeed, Protocol):
    """What the dashboard reads: each query paged or bounded, damaged rows decoded anyway."""

    async def close(self) -> None:
        """Disconnect."""

    async def set_busy_timeout(self, milliseconds: int) -> None:
        """Wait at most this long for a lock, so a stuck writer shows as an error soon."""

    async def status_counts(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs are in each status (of one workflow, or all)."""

    async def workflow_ids(self) -> list[str]:
        """Workflows that have runs or are registered now, by id."""

    async def runs_page(self, wanted: RunFilter, *, offset: int, limit: int) -> RunPage:
        """One page of the runs `wanted` selects, in its order, and how many there are."""

    async def run_fingerprint(self, run_id: str) -> tuple[Any, ...] | None:
        """A cheap value that changes whenever what `run_detail` returns may have changed."""

    async def run_detail(self, run_id: str, *, recent_events: int = 5) -> RunDetail | None:
        """One run: its timeline, checkpoints and live waits; None if there is no such run."""

    async def recent_events(self, *, limit: int = 200, type_contains: str = "") -> list[EventView]:
        """The latest events, newest first, each with what it did to runs."""

    async def workflows(self) -> list[WorkflowView]:
        """Workflows registered now, by id."""

    async def workflow_figures(self, since: datetime) -> list[WorkflowFigures]:
        """Per workflow registered now, by id: what it did since `since`, and its next tick.

        Its runs and failures since then (capped), its latest completed runs' durations,
        its schedules' earliest next tick. Each figure is one bounded range of an index,
        however many runs the journal holds.
        """

    async def waited_event_types(self) -> list[str]:
        """The event types armed or parked waits of runs wait for, sorted."""

    async def log_entries(self, *, after: int = 0, limit: int = 100) -> list[LogEntry]:
        """Journaled timeline rows of all runs above row id `after`, the last `limit`."""

    async def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """The runs whose id starts with `prefix`: the first `limit` by id, and how many."""

    async def load_errors(self) -> list[LoadErrorView]:
        """Files that failed to load, by file."""

    async def daemon(self) -> DaemonRecord | None:
        """The live process holding the journal's lease, or None."""

    async def standbys(self) -> list[StandbyRecord]:
        """The daemons standing by to take the journal over, oldest first (a file has none)."""


class JournalCommands(Protocol):
    """Writes from another process, blocking and short: the daemon picks them up.

    Each commits before it returns, whether or not a daemon runs.
    """

    def emit_event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str = "cli",
        key: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Journal an event for the daemon to route; returns its id once committed.

        With an idempotency `key` seen before (kind ``emit``), nothing is written and the
        first event's id is returned; the key is checked and claimed in one transaction.
        `event_id` is the new event's id (default: a new one).
        """

    def queue_command(self, command: str, run_id: str, payload: Any = None) -> int:
        """Check the run, then queue `command` for the daemon; returns the command's id.

        Raises:
            RunNotFound: No such run in the journal.
            RunNotActive: The run's status does not allow the command.
        """

    def queue_invoke(
        self, workflow_id: str, trigger_id: str, data: dict[str, Any], *, key: str | None = None
    ) -> str:
        """Queue a run of a workflow's pipeline for the daemon; returns the new run's id.

        With an idempotency `key` seen before (kind ``invoke``), nothing is queued and the
        first run's id is returned.
        """

    def queue_fork(
        self,
        run_id: str,
        from_step: str | None,
        patch: dict[str, Any],
        *,
        new_run_id: str | None = None,
    ) -> str:
        """Check the run and the step, then queue a fork of it; returns the new run's id.

        The daemon creates the run under that id (`new_run_id`, default a new one).

        Raises:
            RunNotFound: No such run in the journal.
            StepNotFound: The workflow's pipeline (as the journal last saw it) has no
                step `from_step`; the message lists its steps.
        """

    def claim_invoke(
        self, run_id: str, workflow_id: str, trigger_id: str, data: Any, *, key: str | None
    ) -> tuple[str, int | None]:
        """Queue an invoke of run `run_id`; returns its run id and the command's id.

        With a `key` seen before nothing is queued: the first run's id and None. While
        no daemon runs, a ``queued`` run row is written with the command (``runs``,
        ``show`` and ``abort`` know it at once); the daemon applying it adopts that row.
        """

    def abort_unapplied(self, run_id: str) -> bool:
        """Abort at once a run queued while no daemon runs, whose invoke none applied yet.

        Its ``run.aborted`` system event is journaled with it, for the next daemon to
        route. False (nothing written) for any other run, or while a daemon runs.
        """

    def queue_switch(self, command: str, workflow_id: str, trigger_id: str | None = None) -> int:
        """Queue ``disable`` or ``enable`` of a workflow (or one trigger); the command's id.

        A workflow that is not loaded (yet) is fine: the switch applies when it loads.

        Raises:
            ValidationError: Not a switch command, or an empty workflow id.
            TriggerNotFound: The workflow is loaded and has no such trigger.
        """

    def match_runs(self, prefix: str, *, limit: int = 5) -> RunMatches:
        """`JournalQueries.match_runs` without an event loop, for the writing commands.

        Creates the journal if there is none, as the writes do.
        """

    def prune(
        self,
        cutoffs: Mapping[str, int],
        *,
        events_before: int | None = None,
        dry_run: bool = False,
        between: Callable[[], None] | None = None,
    ) -> dict[str, int]:
        """Delete final runs of each status last updated before its cutoff (µs since epoch).

        Each in small transactions (a few hundred runs) that interleave with a daemon's
        writer; with them their checkpoints, timeline, waits, buffers, routes, recovery
        counts and idempotency keys, and events no remaining run was routed or buffers
        (with their keys). `events_before` also deletes events routed to no run created
        before it, commands applied before it, and timeline rows of no run; never the
        newest event or command (ids must not go back). `between` runs between
        transactions. A dry run deletes nothing. Returns counts: ``runs``, ``events``,
        ``keys``, ...
        """

    def vacuum(self, *, between: Callable[[], None] | None = None) -> int:
        """Give free space back to the file system in small steps; returns pages freed."""

    def make_vacuumable(self) -> bool:
        """Convert a journal that cannot `vacuum` (rewrites it: no daemon); True if it did."""

    def daemon(self) -> DaemonRecord | None:
        """The live process holding the journal's lease, or None (on an existing journal)."""

    def routing_reads(self) -> RoutingReads:
        """Reads of what routing did with events, on an existing journal (a context manager).

        Raises:
            JournalError: The journal cannot be opened (`JournalCorrupt` if not a journal).
        """


class RoutingReads(Protocol):
    """Blocking reads on one read-only connection: what routing did with an event.

    For `orchestrator emit`, which reports what its event started or resumed and must not
    load asyncio. Used as a context manager (the connection closes at its end); no call
    leaves a read transaction open.
    """

    def __enter__(self) -> RoutingReads:
        """The reads, connected."""

    def __exit__(self, *exc_info: object) -> None:
        """Disconnect."""

    def data_version(self) -> int:
        """A value that changes whenever a commit lands in the journal."""

    def daemon_live(self) -> bool:
        """Whether a live process holds the journal's lease (a daemon that routes events)."""

    def event_routing(self, event_id: str) -> EventRouting | None:
        """Whether the event is routed and what that did to runs; None if it is unknown."""

    def event_listeners(self) -> EventListeners:
        """The event types the registered workflows' triggers and the waiting runs take."""


class StepJobs(Protocol):
    """Isolated steps the active daemon offers to its standbys, through the journal.

    The active daemon offers a step as a row; a standby claims it (``FOR UPDATE SKIP
    LOCKED``), runs it in a worker of its own and writes the reply; the active daemon takes
    the reply and carries on as with a local worker (it keeps every journal write). `now`
    is microseconds of the server-corrected clock, written as the rows' times; freshness
    (of the standbys' rows) is judged by the server's clock. Every failure is a
    `JournalError` (a lost connection `JournalUnreachable`: the next call connects again);
    a request, state or reply the journal cannot hold (a NUL in text, a lone surrogate) is
    a `ValueError` saying which.
    """

    async def open(self) -> None:
        """Connect: one connection for the queries, one listening for offers and replies."""

    async def close(self) -> None:
        """Disconnect (idempotent; a lost connection is not an error)."""

    async def offer(
        self, offers: Sequence[StepOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        """Offer `offers` (the ids of their jobs, in order) as daemon `daemon_id` of `epoch`.

        Raises:
            JournalLocked: That daemon was fenced, stopped or moved past `epoch`: nothing
                is offered.
        """

    async def cancel(self, ids: Sequence[int]) -> None:
        """Mark the jobs `ids` cancelled (claimed or not): their standbys stop them."""

    async def take_replies(self, ids: Collection[int]) -> list[StepReply]:
        """The replies of those of `ids` answered, their jobs deleted (by id)."""

    async def take_back(self, ids: Collection[int], limit: int) -> list[int]:
        """Delete up to `limit` of `ids` no standby has claimed, first offered first; theirs."""

    async def forget(self, ids: Sequence[int]) -> None:
        """Delete the jobs `ids`, answered or not (given up: a timeout, an abort)."""

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        """Offer again the jobs of `daemon_id` whose standby stopped; how many moved.

        A standby stopped when its `standbys` row is stale (by the server's clock) or gone,
        or, on this host, its process is. Each such job counts one more attempt; one that
        reaches `max_attempts` is answered ``{"crashed": "the daemons serving it stopped N
        times"}`` instead.
        """

    async def missing(self, ids: Collection[int]) -> set[int]:
        """Those of `ids` whose jobs are gone (a reply taken or a job deleted unheard)."""

    async def forget_strays(self, *, daemon_id: int, keep: Collection[int], before: int) -> int:
        """Delete the jobs `daemon_id` offered before `before` (µs) but for `keep`; how many.

        After a lost connection, an offer may have committed unheard: its jobs are strays.
        """

    async def unclaim_strays(self, *, token: str, keep: Collection[int]) -> int:
        """Release the unanswered jobs `token` claimed but for `keep` (a claim lost unheard)."""

    async def clear(self, *, daemon_id: int) -> int:
        """Delete every job offered by a daemon other than `daemon_id`; how many."""

    async def servers(self, *, now: int) -> int:
        """How many standbys are standing by (their rows fresh), to serve offers."""

    async def claim(
        self, *, token: str, digests: Collection[str], limit: int, now: int
    ) -> list[StepJob]:
        """Claim up to `limit` open jobs of live daemons whose file is one of `digests`."""

    async def reply(
        self, job_id: int, *, token: str, attempts: int, reply: dict[str, Any], now: int
    ) -> bool:
        """Answer the job `job_id`; False when it is no longer this claim's (requeued, gone)."""

    async def withdrawn(self, ids: Collection[int], *, token: str) -> set[int]:
        """Those of `ids` (claimed by `token`) cancelled, gone, or no longer claimed by it."""

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a polling bound
        """Until an offer, reply or cancel is notified, or `timeout` seconds passed."""


class RunTasks(Protocol):
    """Segments of runs the coordinator offers to executors (daemons standing by).

    Claimed as step jobs are (by file digest, ``FOR UPDATE SKIP LOCKED``, an attempt
    counted at each requeue), with two fences more: an executor judged gone has its
    `standbys` row fenced in the transaction that requeues its tasks, and a fenced
    executor claims, replies and holds nothing. Signals for a task are merged into its
    `patches` (a JSON object, later keys win) and taken by its executor. Failures and text
    the journal cannot hold are as `StepJobs`' (`JournalError`, `ValueError`).
    """

    async def open(self) -> None:
        """Connect: one connection for the queries, one listening for the channel."""

    async def close(self) -> None:
        """Disconnect (idempotent; a lost connection is not an error)."""

    async def offer(
        self, tasks: Sequence[RunTaskOffer], *, daemon_id: int, epoch: int, now: int
    ) -> list[int]:
        """Offer `tasks` (their ids, in order) as daemon `daemon_id` of `epoch`.

        Raises:
            JournalLocked: That daemon was fenced, stopped or moved past `epoch`.
        """

    async def cancel(self, ids: Sequence[int]) -> None:
        """Mark the tasks `ids` cancelled: their executors stop those runs."""

    async def patch(self, task_id: int, patch: dict[str, Any]) -> bool:
        """Merge `patch` into the task's `patches`; False if it is answered, cancelled or gone."""

    async def take_replies(self, ids: Collection[int]) -> list[RunTaskReply]:
        """The replies of those of `ids` answered, their tasks deleted (by id)."""

    async def forget(self, ids: Sequence[int]) -> None:
        """Delete the tasks `ids`, answered or not."""

    async def clear(self, *, daemon_id: int) -> int:
        """Delete every task offered by a daemon other than `daemon_id`; how many."""

    async def requeue_abandoned(self, *, daemon_id: int, now: int, max_attempts: int) -> int:
        """Fence the executors of `daemon_id`'s tasks judged gone and requeue their tasks.

        Judged as `StepJobs.requeue_abandoned` judges standbys; their `standbys` rows get
        `fenced_at = now` in the same transaction. At `max_attempts` a task is answered
        ``{"crashed": "the daemons serving it stopped N times"}``. How many tasks moved.
        """

    async def abandon(self, *, daemon_id: int, now: int) -> list[int]:
        """Fence the executors of `daemon_id`'s tasks judged gone; delete their open tasks.

        Their writers' connections are ended first; a batch of theirs in flight commits
        before the fence. The ids deleted: those runs continue from their last committed
        checkpoints.
        """

    async def fence_others(self, *, daemon_id: int, now: int) -> int:
        """Fence every executor of another daemon's tasks, then delete those tasks."""

    async def take_back(self, ids: Collection[int], limit: int) -> list[int]:
        """Delete up to `limit` of `ids` no executor has claimed yet (the ids deleted)."""

    async def executors(self) -> int:
        """How many executors are enlisted and fresh."""

    async def enlist(self, *, token: str, executes_for: str) -> None:
        """Add an executor's row under a new `token` (for the standby `executes_for`).

        Raises:
            JournalLocked: The standby `executes_for` was fenced (one process: its
                executor's writes are refused too).
        """

    async def renew(self, token: str) -> bool:
        """Renew `token`'s executor row; False once it or its standby is fenced, or gone."""

    async def leave(self, token: str) -> None:
        """Delete `token`'s executor row."""

    async def withdrawn(self, ids: Collection[int], *, token: str) -> set[int]:
        """Those of `ids` cancelled, gone, or no longer claimed by `token`."""

    async def claim(
        self, *, token: str, digests: Collection[str], limit: int, now: int
    ) -> list[RunTask]:
        """Claim up to `limit` open tasks of live daemons whose file is one of `digests`.

        Raises:
            JournalLocked: `token`'s `standbys` row is fenced or gone (register again).
        """

    async def take_patches(self, ids: Collection[int], *, token: str) -> dict[int, dict[str, Any]]:
        """The patches of those of `ids` still claimed by `token`, cleared (by id)."""

    async def held(self, claims: Mapping[int, int], *, token: str) -> set[int]:
        """Those of `claims` (task id: attempts) still `token`'s, uncancelled, it unfenced."""

    async def reply(
        self, task_id: int, *, token: str, attempts: int, reply: dict[str, Any], now: int
    ) -> bool:
        """Answer the task; False when no longer this claim's or `token` is fenced."""

    async def reply_all(
        self, answers: Sequence[RunTaskAnswer], *, token: str, now: int
    ) -> tuple[set[int], dict[int, str]]:
        """Write `answers` in one transaction: the ids answered, and those not kept, why.

        A reply holding text the journal cannot keep is left out, its id mapped to why
        (the others are written); an id is not answered when no longer this claim's or
        `token` is fenced.
        """

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a polling bound
        """Until an offer, patch, reply, cancel or requeue is notified, or `timeout` passed."""


class JournalBackend(Protocol):
    """One journal, named by ``db``: made by `open_journal`, which connects nothing yet."""

    @property
    def location(self) -> str:
        """Where the journal is, for messages (a file path, or a URL without its password)."""

    @property
    def identity(self) -> str:
        """The same text for every name of this journal: daemons on one folder agree on it.

        A file's real path; for a server (to come), its URL without the password.
        """

    @property
    def shared(self) -> bool:
        """Whether daemons on several machines may run it: one active, the others standing by."""

    @property
    def commands(self) -> JournalCommands:
        """Writes for the CLI and the dashboard (each call connects, commits, disconnects)."""

    def exists(self) -> bool:
        """Whether there is a journal to read (readers never create one)."""

    def incarnation(self) -> object:
        """What changes when the journal is deleted or replaced under its name (None if gone).

        A file's device and inode: a reader opened on the old file reads only that one. A
        server's database stays the same one: always the same value.
        """

    def writer(
        self, *, synchronous: Synchronous = "FULL", faults: FaultPoints | None = None
    ) -> JournalWriter:
        """The runtime's writer, not open yet."""

    async def open_reader(self) -> JournalQueries:
        """A reader on an existing journal (`JournalCorrupt` if it is not one)."""

    async def open_views(self) -> DashboardViews:
        """The dashboard's views on an existing journal (`JournalCorrupt` if it is not one)."""

    def step_jobs(self) -> StepJobs | None:
        """Isolated steps offered to standbys, not connected yet; None without standbys."""

    def run_tasks(self) -> RunTasks | None:
        """Segments of runs offered to executors, not connected yet; None without standbys."""

    def executor_writer(self, token: str) -> JournalWriter | None:
        """The writer of the executor `token`'s run segments, not open; None without standbys.

        Its batches are fenced by that executor's row (`RunTasks.enlist`), not a daemon's.
        """

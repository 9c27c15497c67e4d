"""Paused runs and their waits: parking, event delivery, resume, signals and timeouts.

A run that pauses leaves memory as a task and stays here as a `ParkedRun`, with the wait
it is parked on in the dispatcher's index and its deadline in the timers; on a plain event
wait it stays as one `DormantWait` tuple instead, made a `ParkedRun` when needed (100,000
paused runs must not be 100,000 object graphs for the garbage collector). Everything that
changes a wait or a parked run returns (or enqueues) the journal writes that record it,
so the caller can commit them in the same batch as their cause (an event, a command).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..clock import Clock
from ..define.conditions import Conditions, index_key
from ..define.waits import BufferedEvent, PauseRequest, Wait, describe_wait
from ..errors import RunNotActive
from ..journal import DormantRow, DormantWait, JournalWriter, UnfinishedRun, ops
from ..records import RunCode, RunResult, RunStatus
from ..state import decode_state, encode_state
from .dispatcher import Dispatcher
from .executor import ActiveRun, log_failed
from .registry import RegisteredWorkflow
from .timers import Timers


class Paused(NamedTuple):
    """A run parked (`Parking.park_or_drain`): what it waits for, and its pause's commit."""

    waiting: str
    committed: asyncio.Future[None]


@dataclass(eq=False, kw_only=True)
class ParkedRun:
    """A paused run: where it stands and what it waits on."""

    row: int
    run_id: str
    workflow_id: str
    trigger_id: str
    version: str
    position: int
    next_step: str | None
    state_text: str
    wait: Wait
    pinned: RegisteredWorkflow | None = None

    @classmethod
    def found(cls, run: UnfinishedRun | DormantWait, wait: Wait) -> ParkedRun:
        """A run found paused in the journal; it is not pinned to any version in memory."""
        return cls(
            row=run.row,
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            trigger_id=run.trigger_id,
            version=run.version,
            position=run.position,
            next_step=run.step,
            state_text=run.state,
            wait=wait,
        )


class PausedRuns(Mapping[str, ParkedRun]):
    """Parked runs by run id: those in memory, and the dormant ones.

    A dormant run (a `DormantRow`: parked on a plain event wait, here or when the journal
    was opened) becomes a `ParkedRun` the first time it is looked up (`get`, ``[]``, or
    iterating the values), or when an event is a candidate for its wait: many paused runs
    keep no object graph per run. ``in`` and `len` leave it dormant.
    """

    def __init__(self, materialize: Callable[[DormantRow], ParkedRun | None]) -> None:
        self.live: dict[str, ParkedRun] = {}
        self.dormant: dict[str, DormantRow] = {}
        self._materialize = materialize

    def __getitem__(self, run_id: str) -> ParkedRun:
        """The parked run `run_id`, made live if dormant."""
        parked = self.live.get(run_id)
        if parked is None:
            dormant = self.dormant.get(run_id)
            parked = None if dormant is None else self._materialize(dormant)
            if parked is None:
                raise KeyError(run_id)
        return parked

    def __iter__(self) -> Iterator[str]:
        return iter([*self.live, *self.dormant])

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.live or run_id in self.dormant

    def __len__(self) -> int:
        return len(self.live) + len(self.dormant)


# Continues a resumed run; returns writes that must follow the resume's own (a run that has
# to wait for a slot is journaled ``queued`` after it is journaled ``running``).
Wake = Callable[[ParkedRun], list[ops.Op]]
Ended = Callable[[ParkedRun, RunResult], None]


class Parking:
    """Waits by run, parked runs by id; implements the pause service's registry."""

    def __init__(
        self,
        writer: JournalWriter,
        clock: Clock,
        dispatcher: Dispatcher,
        timers: Timers,
        *,
        wake: Wake,
        ended: Ended,
        max_wait_id: int,
        max_seq: int,
    ) -> None:
        self._writer, self._clock = writer, clock
        self._dispatcher, self._timers = dispatcher, timers
        self._wake, self._ended = wake, ended
        self._next_wait, self._next_seq = max_wait_id, max_seq
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.paused = PausedRuns(self._materialize)
        # Invariant: the run id of each dormant run in `paused`, by its row.
        self._dormant_rows: dict[int, str] = {}
        # The version each run parked dormant here is pinned to (found ones have none).
        self._pinned: dict[str, RegisteredWorkflow] = {}
        dispatcher.materialize = self._materialize_wait
        # Whether a dormant run's state can be read; if not, it has failed the run.
        self.readable: Callable[[DormantWait], bool] | None = None
        # Invariant: workflow id -> the run ids of its runs in `paused` (changed only by
        # `_hold` and `_let_go`), so a registration need not scan every paused run.
        self._paused_of: dict[str, set[str]] = {}
        # Invariant: holds every armed or parked wait, by its run's row.
        self.waits: dict[int, list[Wait]] = {}
        # Told of each run parked on a join (`ctx.join`), here or found at start-up.
        self.on_join: Callable[[Wait], None] | None = None

    # -- the pause service -----------------------------------------------------------------

    def register_wait(self, row: int, run_id: str, event: str, conditions: Conditions) -> Wait:
        """Arm a persistent wait (once per run, event and conditions: re-runs reuse it)."""
        if threading.get_ident() != self._loop_thread:  # a sync step in a worker thread
            return asyncio.run_coroutine_threadsafe(
                self._register_async(row, run_id, event, conditions), self._loop
            ).result(timeout=30)
        existing = self._find(row, event, conditions, persistent=True)
        if existing is not None:
            return existing
        wait = self._new_wait(row, run_id, event, conditions, persistent=True, status="armed")
        self._writer.submit([self._wait_op(wait)])
        return wait

    async def _register_async(
        self, row: int, run_id: str, event: str, conditions: Conditions
    ) -> Wait:
        return self.register_wait(row, run_id, event, conditions)

    def cancel_wait(self, wait: Wait) -> None:
        """Stop a wait and drop its buffer."""
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.cancel_wait, wait)
            return
        if wait.status in ("done", "cancelled"):
            return
        if wait.status == "parked":
            raise RunNotActive("a wait a run is parked on cannot be cancelled; abort the run")
        self._writer.submit([self._retire(wait, "cancelled")])

    def release(self, row: int) -> list[ops.Op]:
        """The run ended: retire all its waits."""
        if row in self._dormant_rows:
            self.paused.get(self._dormant_rows[row])
        return [self._retire(wait, "cancelled") for wait in list(self.waits.get(row, ()))]

    # -- parking and waking ----------------------------------------------------------------

    def park_or_drain(self, run: ActiveRun, request: PauseRequest) -> Paused | None:
        """Park `run` on its request's wait, or consume what that wait buffered.

        Returns what the run now waits for, in words, and the future of its pause's writes
        (with the checkpoint its step `carried`, if any); None when a buffered event was
        consumed: the run goes on at once. A plain event wait (`_plain`) is parked dormant,
        as a restart finds it: a tuple filed in the dispatcher, not a `ParkedRun` and a
        `Wait` (built when an event is a candidate or a command looks the run up).
        """
        carried, run.carried = run.carried or [], None
        if request.joins is not None:
            joined = self._new_wait(
                run.row, run.run_id, None, request.conditions, persistent=False, status="parked"
            )
            joined.joins = request.joins
            return self._park(run, joined, request, self._clock.now_us(), carried)
        now = self._clock.now_us()
        keys = self._plain(run.row, request)
        if keys is not None:
            return self._park_dormant(run, request, keys, now, carried)
        wait = request.wait or (
            self._find(run.row, request.event, request.conditions, persistent=True)
            if request.event is not None
            else None
        )
        if wait is not None and wait.buffer:
            event = wait.buffer.pop(0)
            patch = {request.into: event.data} if request.into else {}
            run.position += 1
            run.state_text = encode_state({**decode_state(run.state_text), **patch})
            self._writer.submit(
                [
                    *carried,
                    ops.drain_event(wait.id, event.seq),
                    *ops.state_change(run.row, run.position, "resume", run.state_text, now),
                    ops.add_route(event.event_id, run.row, "resumed", wait.id),
                    self._timeline(
                        run.row,
                        run.position,
                        "event",
                        "event.consumed",
                        f"{wait.describe()}: consumed buffered event {event.event_id}",
                        {"event_id": event.event_id, "wait": wait.id},
                    ),
                ]
            )
            return None
        if wait is None:
            wait = self._new_wait(
                run.row,
                run.run_id,
                request.event,
                request.conditions,
                persistent=False,
                status="parked",
            )
        return self._park(run, wait, request, now, carried)

    def _plain(self, row: int, request: PauseRequest) -> tuple[tuple[str, Hashable], ...] | None:
        """The ``==`` keys of a request a run can park on dormant, or None if it cannot.

        Plain as `dormant_waits` defines it (on an event, no timeout, no join, its run's
        only live wait), a new wait (not one registered early), and only ``==`` clauses on
        scalars: the wait built from the journaled JSON later is then the one asked for.
        """
        if (
            request.event is None
            or request.wait is not None
            or request.timeout is not None
            or row in self.waits
        ):
            return None
        keys = request.conditions.equality_keys()
        return keys if len(keys) == len(request.conditions.clauses) else None

    def _park_dormant(
        self,
        run: ActiveRun,
        request: PauseRequest,
        keys: tuple[tuple[str, Hashable], ...],
        now: int,
        carried: list[ops.Op],
    ) -> Paused:
        """Park `run` on a plain event wait as a `DormantRow` (`park_or_drain`)."""
        event = request.event or ""
        self._next_wait += 1
        wait_id = self._next_wait
        where = request.conditions.to_json()
        text = ops.conditions_text(where)
        dormant: DormantRow = (  # `DormantWait`'s fields
            wait_id,
            run.row,
            run.run_id,
            run.workflow.id,
            run.trigger_id,
            run.workflow.version,
            run.position,
            run.next_step,
            run.state_text,
            event,
            text,
            False,
            request.into,
            request.on_timeout,
        )
        self._file_dormant(dormant, keys)
        self._pinned[run.run_id] = run.workflow
        waiting = describe_wait(event, request.conditions)
        data = {
            "wait": wait_id,
            "event": event,
            "where": where,
            "timeout_at": None,
            "on_timeout": request.on_timeout,
        }
        carried, row_ops = _paused_row(run, carried, now)
        committed = self._writer.enqueue(
            [
                *carried,
                ops.add_wait(
                    wait_id,
                    run.row,
                    event,
                    text,
                    persistent=False,
                    status="parked",
                    into=request.into,
                    timeout_at=None,
                    on_timeout=request.on_timeout,
                    at=self._clock.now_us(),  # read as the live path reads it (`_wait_op`)
                    joins=None,
                ),
                *row_ops,
                self._timeline(
                    run.row, run.position, "runtime", "run.paused", f"waiting for {waiting}", data
                ),
            ],
            urgent=True,
        )
        return Paused(waiting, committed)

    def _park(
        self, run: ActiveRun, wait: Wait, request: PauseRequest, now: int, carried: list[ops.Op]
    ) -> Paused:
        wait.status, wait.into, wait.on_timeout = "parked", request.into, request.on_timeout
        wait.timeout_at = None if request.timeout is None else now + int(request.timeout * 1e6)
        parked = ParkedRun(
            row=run.row,
            run_id=run.run_id,
            workflow_id=run.workflow.id,
            trigger_id=run.trigger_id,
            version=run.workflow.version,
            position=run.position,
            next_step=run.next_step,
            state_text=run.state_text,
            wait=wait,
            pinned=run.workflow,
        )
        self._hold(parked)
        data = {
            "wait": wait.id,
            "event": wait.event_type,
            "where": wait.conditions.to_json(),
            "timeout_at": wait.timeout_at,
            "on_timeout": wait.on_timeout,
        }
        if wait.joins is not None:
            data["joins"] = len(wait.joins)
        carried, row_ops = _paused_row(run, carried, now)
        committed = self._writer.enqueue(
            [
                *carried,
                self._wait_op(wait),
                *row_ops,
                self._timeline(
                    run.row,
                    run.position,
                    "runtime",
                    "run.paused",
                    f"waiting for {wait.describe()}",
                    data,
                ),
            ],
            urgent=True,
        )
        self._arm_timeout(parked)
        if wait.joins is not None and self.on_join is not None:
            self.on_join(wait)
        return Paused(wait.describe(), committed)

    def paused_of(self, workflow_id: str) -> list[str]:
        """The run ids of a workflow's paused runs."""
        return list(self._paused_of.get(workflow_id, ()))

    def _hold(self, parked: ParkedRun) -> None:
        self.paused.live[parked.run_id] = parked
        self._paused_of.setdefault(parked.workflow_id, set()).add(parked.run_id)

    def _let_go(self, parked: ParkedRun) -> None:
        del self.paused.live[parked.run_id]
        runs = self._paused_of.get(parked.workflow_id)
        if runs is not None:
            runs.discard(parked.run_id)
            if not runs:
                del self._paused_of[parked.workflow_id]

    def adopt_parked(self, parked: ParkedRun) -> None:
        """Track a run found paused in the journal at start-up."""
        self._hold(parked)
        self._arm_timeout(parked)
        if parked.wait.joins is not None and self.on_join is not None:
            self.on_join(parked.wait)

    def adopt_dormant(self, dormant: DormantRow) -> None:
        """Track a run found parked on a plain event wait at start-up, without objects.

        Its wait is filed in the dispatcher by its ``==`` clauses, read from the journaled
        JSON; the wait and the run are built (`_materialize`) when first needed. A wait
        whose conditions do not read as clauses is built at once, checked as `wait_from`
        checks it.
        """
        keys = _equality_keys(dormant[10])  # its conditions
        if keys is None:
            self._materialize(dormant)
            return
        self._file_dormant(dormant, keys)
        self._next_wait = max(self._next_wait, dormant[0])

    def adopt_dormant_many(self, rows: Iterable[DormantRow]) -> None:
        """`adopt_dormant` for each of `rows`, in one call (a restart may bring 100,000)."""
        dormant, by_row, paused_of = self.paused.dormant, self._dormant_rows, self._paused_of
        add = self._dispatcher.add_dormant
        most = self._next_wait
        for row in rows:
            keys = _equality_keys(row[10])
            if keys is None:
                self._materialize(row)
                continue
            run_id = row[2]
            dormant[run_id] = row
            by_row[row[1]] = run_id
            runs = paused_of.get(row[3])
            if runs is None:
                runs = paused_of[row[3]] = set()
            runs.add(run_id)
            add(row, keys)
            if row[0] > most:
                most = row[0]
        self._next_wait = max(self._next_wait, most)

    def _file_dormant(self, dormant: DormantRow, keys: Sequence[tuple[str, Hashable]]) -> None:
        run_id = dormant[2]
        self.paused.dormant[run_id] = dormant
        self._dormant_rows[dormant[1]] = run_id
        self._paused_of.setdefault(dormant[3], set()).add(run_id)
        self._dispatcher.add_dormant(dormant, keys)

    def _materialize(self, row: DormantRow) -> ParkedRun | None:
        """Make a dormant run a `ParkedRun`, its wait a `Wait` in the dispatcher's index.

        None when `readable` says its state cannot be read (it has failed the run): the
        check start-up makes of every other unfinished run, made here once.
        """
        dormant = DormantWait._make(row)
        if self.paused.dormant.pop(dormant.run_id, None) is not None:
            del self._dormant_rows[dormant.row]
            self._dispatcher.remove_wait(row)
        pinned = self._pinned.pop(dormant.run_id, None)
        if self.readable is not None and not self.readable(dormant):
            runs = self._paused_of.get(dormant.workflow_id)
            if runs is not None:
                runs.discard(dormant.run_id)
                if not runs:
                    del self._paused_of[dormant.workflow_id]
            return None
        label = f"wait {dormant.wait_id} of run {dormant.run_id}"
        wait = Wait(
            id=dormant.wait_id,
            row=dormant.row,
            run_id=dormant.run_id,
            event_type=dormant.event_type,
            conditions=Conditions.from_json(json.loads(dormant.conditions), label=label),
            persistent=bool(dormant.persistent),
            status="parked",
            into=dormant.into,
            on_timeout="fail" if dormant.on_timeout == "fail" else "continue",
            journaled=True,
        )
        parked = ParkedRun.found(dormant, wait)
        parked.pinned = pinned
        self.adopt_wait(wait)
        self.adopt_parked(parked)
        return parked

    def _materialize_wait(self, dormant: DormantRow) -> Wait | None:
        parked = self._materialize(dormant)
        return None if parked is None else parked.wait

    def adopt_wait(self, wait: Wait) -> None:
        """Track a wait found armed or parked in the journal at start-up."""
        self._track(wait)
        self._next_wait = max(self._next_wait, wait.id)
        for event in wait.buffer:
            self._next_seq = max(self._next_seq, event.seq)

    def deliver(self, wait: Wait, event_id: str, data: dict[str, Any]) -> list[ops.Op]:
        """An event matched `wait`: resume its parked run, or buffer the event."""
        if wait.status == "parked":
            parked = self.paused.get(wait.run_id)
            if parked is not None:
                patch = {wait.into: data} if wait.into else {}
                return [
                    ops.add_route(event_id, wait.row, "resumed", wait.id),
                    *self.wake(
                        parked,
                        patch,
                        f"{wait.describe()} matched event {event_id}",
                        source="event",
                        extra={"event_id": event_id},
                    ),
                ]
        self._next_seq += 1
        wait.buffer.append(BufferedEvent(self._next_seq, event_id, data))
        return [
            ops.buffer_event(wait.id, self._next_seq, event_id),
            ops.add_route(event_id, wait.row, "buffered", wait.id),
            self._timeline(
                wait.row,
                None,
                "event",
                "event.buffered",
                f"kept for {wait.describe()}: event {event_id}",
                {"event_id": event_id},
            ),
        ]

    def wake(
        self,
        parked: ParkedRun,
        patch: dict[str, Any],
        reason: str,
        *,
        source: str = "runtime",
        extra: dict[str, Any] | None = None,
        show_patch: bool = True,
    ) -> list[ops.Op]:
        """Resume a parked run with `patch` merged into its state.

        `show_patch` False: the timeline entry leaves the patch out (a join's results).
        """
        wait = parked.wait
        self._let_go(parked)
        self._timers.cancel(("wait", wait.id))
        now = self._clock.now_us()
        parked.position += 1
        parked.state_text = encode_state({**decode_state(parked.state_text), **patch})
        if wait.persistent:
            wait.status, wait.timeout_at = "armed", None
            wait_op = self._wait_op(wait)
        else:
            wait_op = self._retire(wait, "done")
        writes = [
            wait_op,
            *ops.state_change(parked.row, parked.position, "resume", parked.state_text, now),
            ops.set_status(parked.row, RunStatus.RUNNING, now),
            ops.set_paused_in(parked.row, None),
            self._timeline(
                parked.row,
                parked.position,
                source,
                "run.resumed",
                reason,
                {**({"patch": patch} if show_patch else {}), **(extra or {})},
            ),
        ]
        if parked.next_step is not None:
            writes.append(ops.step_started(parked.row, parked.position, parked.next_step, now))
        writes += self._wake(parked)
        return writes

    def signal(self, parked: ParkedRun | ActiveRun, patch: dict[str, Any]) -> list[ops.Op]:
        """Merge a patch into a parked (or running) run's state; it goes on as it was."""
        return signalled(parked, patch, self._clock.now_us())

    def end(self, parked: ParkedRun) -> list[ops.Op]:
        """A parked run is ended (aborted or failed) without resuming."""
        self._let_go(parked)
        self._timers.cancel(("wait", parked.wait.id))
        return self.release(parked.row)

    # -- internals -------------------------------------------------------------------------

    def _arm_timeout(self, parked: ParkedRun) -> None:
        wait = parked.wait
        if wait.timeout_at is not None:
            self._timers.set(("wait", wait.id), wait.timeout_at, lambda: self._timed_out(parked))

    def _timed_out(self, parked: ParkedRun) -> None:
        if self.paused.get(parked.run_id) is not parked:
            return
        wait = parked.wait
        if wait.is_sleep:
            writes = self.wake(parked, {}, "the sleep is over", source="timer")
        elif wait.on_timeout == "continue":
            patch = {wait.into: None} if wait.into else {}
            writes = self.wake(
                parked, patch, f"timed out waiting for {wait.describe()}", source="timer"
            )
        else:
            with self._writer.together():  # the end and its system event: one batch
                writes = self.fail_parked(
                    parked, f"timed out waiting for {wait.describe()}", RunCode.PAUSE_TIMEOUT
                )
                self._writer.submit(writes, urgent=True)
            return
        self._writer.submit(writes, urgent=True)

    def fail_parked(
        self,
        parked: ParkedRun,
        message: str,
        code: RunCode,
        *,
        status: RunStatus = RunStatus.FAILED,
    ) -> list[ops.Op]:
        """End a parked run with `status` and the error that ended it.

        Call inside the writer's `together` block that enqueues the returned writes: the
        `ended` callback enqueues the run's system event, which joins their batch.
        """
        now = self._clock.now_us()
        writes = [
            *self.end(parked),
            ops.set_status(parked.row, status, now, error=message, code=code),
        ]
        if status is RunStatus.FAILED:
            log_failed(parked.run_id, parked.workflow_id, parked.next_step, code, message)
        self._ended(
            parked,
            RunResult(
                ok=False,
                status=status,
                run_id=parked.run_id,
                state=decode_state(parked.state_text),
                error=message,
                error_code=code,
            ),
        )
        return writes

    def _new_wait(
        self,
        row: int,
        run_id: str,
        event: str | None,
        conditions: Conditions,
        *,
        persistent: bool,
        status: str,
    ) -> Wait:
        self._next_wait += 1
        wait = Wait(
            id=self._next_wait,
            row=row,
            run_id=run_id,
            event_type=event,
            conditions=conditions,
            persistent=persistent,
            status=status,  # type: ignore[arg-type]
        )
        self._track(wait)
        return wait

    def _track(self, wait: Wait) -> None:
        self.waits.setdefault(wait.row, []).append(wait)
        self._dispatcher.add_wait(wait)

    def _find(
        self, row: int, event: str | None, conditions: Conditions, *, persistent: bool
    ) -> Wait | None:
        # JSON text, not ==: True == 1 in Python, but they are different conditions.
        wanted = _key(conditions)
        for wait in self.waits.get(row, ()):
            if (
                wait.persistent == persistent
                and wait.event_type == event
                and _key(wait.conditions) == wanted
            ):
                return wait
        return None

    def _retire(self, wait: Wait, status: str) -> ops.Op:
        wait.status = status  # type: ignore[assignment]
        wait.buffer.clear()
        self._dispatcher.remove_wait(wait)
        self._timers.cancel(("wait", wait.id))
        waits = self.waits.get(wait.row, [])
        if wait in waits:
            waits.remove(wait)
            if not waits:
                del self.waits[wait.row]
        return ops.set_wait(wait.id, status, wait.timeout_at, wait.into, wait.on_timeout)

    def _wait_op(self, wait: Wait) -> ops.Op:
        if not wait.journaled:
            wait.journaled = True
            return ops.add_wait(
                wait.id,
                wait.row,
                wait.event_type,
                ops.conditions_text(wait.conditions.to_json()),
                persistent=wait.persistent,
                status=wait.status,
                into=wait.into,
                timeout_at=wait.timeout_at,
                on_timeout=wait.on_timeout,
                at=self._clock.now_us(),
                joins=None if wait.joins is None else json.dumps(list(wait.joins)),
            )
        return ops.set_wait(wait.id, wait.status, wait.timeout_at, wait.into, wait.on_timeout)

    def _timeline(
        self,
        row: int,
        position: int | None,
        source: str,
        kind: str,
        message: str,
        data: dict[str, Any],
    ) -> ops.Op:
        return ops.add_timeline(
            row,
            self._clock.now_us(),
            source,
            kind,
            position=position,
            message=message,
            data=data,
        )


def _equality_keys(text: str) -> list[tuple[str, Hashable]] | None:
    """`Conditions.equality_keys` of journaled conditions, without building them.

    None when the text is not a list of ``[path, "==", operand]`` clauses: such a wait is
    built (and checked) at once instead.
    """
    clauses = _parse(text)
    if not isinstance(clauses, list):
        return None
    keys = []
    for clause in clauses:
        if not (isinstance(clause, list) and len(clause) == 3):
            return None
        path, op, operand = clause
        # Only ``==`` clauses on valid paths: `Conditions.from_json` accepts any JSON
        # operand for them, so building the wait later cannot fail.
        if op != "==" or not isinstance(path, str) or not _valid_path(path):
            return None
        if (key := index_key(operand)) is not None:
            keys.append((path, key))
    return keys


@functools.lru_cache(maxsize=256)
def _valid_path(path: str) -> bool:
    """Whether `path` is a dotted path with no empty segment (a few distinct ones recur)."""
    return "" not in path.split(".")


# One C call: what `json.loads` does through three Python layers (not in typeshed).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse(text: str) -> Any:
    """`json.loads(text)`, or None if it is not JSON (a journaled row no process wrote)."""
    try:
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    try:  # leading or trailing spaces, or not JSON at all
        return json.loads(text)
    except ValueError:
        return None


def _key(conditions: Conditions) -> str:
    return json.dumps(conditions.to_json(), sort_keys=True)


def _paused_row(
    run: ActiveRun, carried: list[ops.Op], now: int
) -> tuple[list[ops.Op], list[ops.Op]]:
    """The writes `run`'s step carried, less its progress, and its row's pause.

    With the step's progress carried, the row's pause is that progress and the pause in
    one update (`ops.parked`); else it is its status and the step it pauses in.
    """
    step = _pausing_step(run)
    for n, op in enumerate(carried):
        if op[0] is ops.Stmt.SET_PROGRESS and op[1][-1] == run.row:
            return [*carried[:n], *carried[n + 1 :]], [ops.parked(op, step, now)]
    return carried, [
        ops.set_status(run.row, RunStatus.PAUSED, now),
        ops.set_paused_in(run.row, step),
    ]


def _pausing_step(run: ActiveRun) -> str | None:
    """The step that asked `run` to wait (it has just ended: `step_index` is past it)."""
    index = run.step_index - 1
    return run.steps[index].name if 0 <= index < len(run.steps) else None


def signalled(target: ParkedRun | ActiveRun, patch: dict[str, Any], now: int) -> list[ops.Op]:
    """Merge `patch` into `target`'s state as a checkpoint of its own; what that journals."""
    target.position += 1
    target.state_text = encode_state({**decode_state(target.state_text), **patch})
    return [
        *ops.state_change(target.row, target.position, "signal", target.state_text, now),
        ops.add_timeline(
            target.row,
            now,
            "runtime",
            "run.signalled",
            position=target.position,
            message="state patched by a signal",
            data={"patch": patch},
        ),
    ]

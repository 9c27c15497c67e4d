"""Waits: what a paused run waits for, and how a step asks to pause.

A step returns `ctx.pause(...)` or `ctx.sleep(...)`, a `PauseRequest`, to park its run at
that step boundary. A `Wait` is the journaled record behind it: an event type with
conditions (none for a sleep), a timeout, and, for waits registered early through the pause
service, a buffer of matching events that arrived while the run was not parked on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import DefinitionError
from ..journal.ops import Op
from ..records import event_type_problem
from .conditions import Conditions

OnTimeout = Literal["continue", "fail"]
# The longest sleep or pause timeout: its deadline (microseconds since the epoch) must fit
# the journal's 64-bit integers, which hold about 292,000 years.
MAX_WAIT_SECONDS = 1000 * 365 * 86_400
WaitStatus = Literal["armed", "parked", "done", "cancelled"]


@dataclass(frozen=True)
class BufferedEvent:
    """An event kept for a wait, in arrival order (`seq`)."""

    seq: int
    event_id: str
    data: dict[str, Any]


@dataclass(eq=False)
class Wait:
    """One wait of one run.

    Invariant: a wait is in the dispatcher's index exactly while its status is ``armed`` or
    ``parked``; `buffer` is only non-empty while it is ``armed``.
    """

    id: int
    row: int
    run_id: str
    event_type: str | None
    conditions: Conditions
    persistent: bool
    status: WaitStatus = "armed"
    into: str | None = None
    timeout_at: int | None = None
    on_timeout: OnTimeout = "continue"
    # A list, not a deque: most waits never buffer, and an empty deque costs 600 bytes.
    buffer: list[BufferedEvent] = field(default_factory=list)
    journaled: bool = False
    # A join's run ids (`ctx.join`): it waits for no event, until each of them is final.
    joins: tuple[str, ...] | None = None

    @property
    def is_sleep(self) -> bool:
        """A sleep waits for no event, only for its deadline (or a resume)."""
        return self.event_type is None and self.joins is None

    def describe(self) -> str:
        """What the wait waits for, in words."""
        if self.joins is not None:
            return f"{len(self.joins)} run(s) to end (join)"
        if self.event_type is None:
            return "the end of its sleep"
        return describe_wait(self.event_type, self.conditions)


def describe_wait(event_type: str, conditions: Conditions) -> str:
    """What a wait for `event_type` under `conditions` waits for, in words."""
    where = conditions.describe()
    return f"{event_type} where {where}" if where else event_type


@dataclass(frozen=True)
class PauseRequest:
    """Returned by a step to park its run at this boundary (from `ctx.pause`/`ctx.sleep`)."""

    event: str | None
    conditions: Conditions
    into: str | None
    timeout: float | None
    on_timeout: OnTimeout
    wait: Wait | None = None
    joins: tuple[str, ...] | None = None


def join_request(
    run_ids: Any, *, into: Any, timeout: float | None, on_timeout: str, label: str
) -> PauseRequest:
    """Check `ctx.join` arguments and build its request; `DefinitionError` when wrong."""
    if isinstance(run_ids, str) or not isinstance(run_ids, list | tuple):
        raise DefinitionError(f"{label}: run_ids must be a list of run ids, got {run_ids!r}")
    for run_id in run_ids:
        if not isinstance(run_id, str) or not run_id:
            raise DefinitionError(f"{label}: a run id must be a non-empty string, got {run_id!r}")
    if not isinstance(into, str) or not into:
        raise DefinitionError(
            f"{label}: into must be a state key (a non-empty string), got {into!r}"
        )
    checked = pause_request(
        event="join",
        where=None,
        into=into,
        timeout=timeout,
        on_timeout=on_timeout,
        wait=None,
        label=label,
    )
    return PauseRequest(
        None, checked.conditions, into, timeout, checked.on_timeout, joins=tuple(run_ids)
    )


def pause_request(
    *,
    event: str | None,
    where: Any,
    into: str | None,
    timeout: float | None,
    on_timeout: str,
    wait: Wait | None,
    label: str,
) -> PauseRequest:
    """Check `ctx.pause` arguments and build the request; `DefinitionError` when wrong."""
    if on_timeout not in ("continue", "fail"):
        raise DefinitionError(
            f"{label}: on_timeout must be 'continue' or 'fail', got {on_timeout!r}"
        )
    if timeout is not None and not _is_seconds(timeout):
        raise DefinitionError(
            f"{label}: timeout must be seconds >= 0 (at most {MAX_WAIT_SECONDS:,}, a thousand"
            f" years) or None, got {timeout!r}"
        )
    if into is not None and (not isinstance(into, str) or not into or not _encodes(into)):
        raise DefinitionError(
            f"{label}: into must be a state key (a non-empty string, valid Unicode), got {into!r}"
        )
    if wait is not None:
        if event is not None or where is not None:
            raise DefinitionError(f"{label}: pass either wait= or event=/where=, not both")
        if not isinstance(wait, Wait) or wait.status in ("done", "cancelled"):
            raise DefinitionError(f"{label}: wait= must be a live wait from ctx.pause_service")
        mode: OnTimeout = "fail" if on_timeout == "fail" else "continue"
        return PauseRequest(wait.event_type, wait.conditions, into, timeout, mode, wait)
    if not isinstance(event, str) or not event.strip():
        raise DefinitionError(
            f"{label}: pause needs event=TYPE (or wait=...; for a delay use ctx.sleep)"
        )
    problem = event_type_problem(event)
    if problem is not None:  # a lone surrogate would fail the writer's batch
        raise DefinitionError(f"{label}: {problem}")
    conditions = Conditions.parse(where, label=label)
    mode = "fail" if on_timeout == "fail" else "continue"
    return PauseRequest(event, conditions, into, timeout, mode)


def sleep_request(seconds: float, *, label: str) -> PauseRequest:
    """A durable sleep of `seconds`."""
    if not _is_seconds(seconds):
        raise DefinitionError(
            f"{label}: sleep needs seconds >= 0 (at most {MAX_WAIT_SECONDS:,}, a thousand"
            f" years), got {seconds!r}"
        )
    return PauseRequest(None, Conditions.parse(None, label=label), None, float(seconds), "continue")


def _encodes(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate): the journal can store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_seconds(value: object) -> bool:
    """Whether `value` is a delay a deadline can be journaled for (not NaN, not infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= MAX_WAIT_SECONDS


class WaitRegistry(Protocol):
    """What the pause service needs from the runtime."""

    def register_wait(self, row: int, run_id: str, event: str, conditions: Conditions) -> Wait:
        """Arm a persistent wait that buffers matching events from now on."""

    def cancel_wait(self, wait: Wait) -> None:
        """Stop a wait; its buffered events are dropped."""

    def release(self, row: int) -> list[Op]:
        """A run ends: stop all its waits; returns the writes that record it."""


class PauseService:
    """``ctx.pause_service`` (also the reserved service id ``__pause_service__``).

    Register a wait before pausing so events that arrive meanwhile are kept::

        wait = ctx.pause_service.register(event="payment.received",
                                          where={"order_id": ("==", state["order_id"])})
        ...
        return ctx.pause(wait=wait, into="payment")
    """

    def __init__(self, registry: WaitRegistry, row: int, run_id: str) -> None:
        self._registry, self._row, self._run_id = registry, row, run_id

    def register(self, *, event: str, where: Any = None) -> Wait:
        """Arm a wait that buffers matching events from this moment on."""
        label = f"run {self._run_id}: pause_service.register"
        if not isinstance(event, str) or not event.strip():
            raise DefinitionError(f"{label}: event must be an event type, got {event!r}")
        problem = event_type_problem(event)
        if problem is not None:
            raise DefinitionError(f"{label}: {problem}")
        return self._registry.register_wait(
            self._row, self._run_id, event, Conditions.parse(where, label=label)
        )

    def cancel(self, wait: Wait) -> None:
        """Stop buffering for `wait` and drop what it buffered."""
        self._registry.cancel_wait(wait)

"""The mode gate: one workflow's slots, and the decision for each dispatch.

Pure bookkeeping (run ids in, decisions out) with no I/O, so it is tested alone; admission
acts on what it decides and journals it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from ..define.modes import Mode, Serialized, SingletonLoop, Transient


class Action(enum.StrEnum):
    """What the gate decides for one dispatch (what `on_dispatch` sees as ``action``)."""

    START = "start"
    """The new run takes a free slot and starts."""
    QUEUE = "queue"
    """The new run waits in the workflow's queue."""
    DROP = "drop"
    """The new run is dropped: the workflow is busy (under `Transient`, its queue is full)."""
    REJECT = "reject"
    """The new run is rejected: the workflow is busy."""
    SIGNAL = "signal"
    """No new run: the dispatch's data is merged into the active run."""
    REPLACE = "replace"
    """The active run is aborted and the new run takes its slot."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a dispatch gets: `action`, the run that held the slot, the run it superseded."""

    action: Action
    holder: str | None = None
    superseded: str | None = None


_START = Decision(Action.START)  # frozen: one for every dispatch that starts at once


class Gate:
    """One workflow's slots under its mode.

    Invariant: `running`, `paused`, `queue` and `resuming` are disjoint; under every mode
    but `Transient`, ``len(running) + len(paused) <= 1`` once recovery is over.
    """

    def __init__(self, mode: Mode) -> None:
        self.mode: Mode = mode
        self.running: set[str] = set()
        self.paused: set[str] = set()
        self.queue: deque[str] = deque()
        self.resuming: deque[str] = deque()

    def dispatch(self, run_id: str) -> Decision:
        """Decide for a new run; on ``start`` or ``replace`` it now holds a slot."""
        mode = self.mode
        if isinstance(mode, Transient):
            return self._dispatch_transient(mode, run_id)
        holder = self._holder()
        if holder is None and not self.queue:
            self.running.add(run_id)
            return _START
        if isinstance(mode, Serialized):
            self.queue.append(run_id)
            return Decision(Action.QUEUE, holder)
        if isinstance(mode, SingletonLoop):
            return self._dispatch_singleton(mode, run_id, holder)
        if mode.on_busy == "reject":
            return Decision(Action.REJECT, holder)
        superseded = self.queue.pop() if self.queue else None
        self.queue.append(run_id)
        return Decision(Action.QUEUE, holder, superseded)

    def _dispatch_transient(self, mode: Transient, run_id: str) -> Decision:
        if self._has_slot() and not self.queue and not self.resuming:
            self.running.add(run_id)
            return _START
        if mode.capacity is None or len(self.queue) < mode.capacity:
            self.queue.append(run_id)
            return Decision(Action.QUEUE, self._holder())
        return Decision(Action.DROP, self._holder())

    def _dispatch_singleton(self, mode: SingletonLoop, run_id: str, holder: str | None) -> Decision:
        if mode.on_busy == "drop":
            return Decision(Action.DROP, holder)
        if mode.on_busy == "signal":
            return Decision(Action.SIGNAL, holder)
        if holder is not None:
            self.running.discard(holder)
            self.paused.discard(holder)
        self.running.add(run_id)
        return Decision(Action.REPLACE, holder)

    def paused_run(self, run_id: str) -> list[str]:
        """A run paused; returns the runs that may start now."""
        if run_id in self.running:
            self.running.discard(run_id)
            self.paused.add(run_id)
        return self._fill() if isinstance(self.mode, Transient) else []

    def resumed(self, run_id: str) -> bool:
        """A paused run was resumed; False if it must wait for a slot (`Transient`)."""
        self.paused.discard(run_id)
        if isinstance(self.mode, Transient) and (not self._has_slot() or self.resuming):
            self.resuming.append(run_id)
            return False
        self.running.add(run_id)
        return True

    def ended(self, run_id: str) -> list[str]:
        """A run ended (or left the gate); returns the runs that may start now."""
        # The groups are disjoint: the deques (linear to search) hold only runs that end
        # without ever holding a slot (aborted while queued).
        if run_id in self.running or run_id in self.paused:
            self.running.discard(run_id)
            self.paused.discard(run_id)
        elif run_id in self.queue:
            self.queue.remove(run_id)
        elif run_id in self.resuming:
            self.resuming.remove(run_id)
        return self._fill()

    def _fill(self) -> list[str]:
        starting: list[str] = []
        while self._has_slot() and (self.resuming or self.queue):
            run_id = self.resuming.popleft() if self.resuming else self.queue.popleft()
            self.running.add(run_id)
            starting.append(run_id)
        return starting

    def _has_slot(self) -> bool:
        mode = self.mode
        if isinstance(mode, Transient):
            return mode.concurrency is None or len(self.running) < mode.concurrency
        return not self.running and not self.paused

    def _holder(self) -> str | None:
        """A run that holds a slot, executing before paused; ``None`` when none does.

        Every mode but `Transient` has at most one. Under `Transient` it names one of
        several (the smallest id, so the same groups always give the same answer).
        """
        for group in (self.running, self.paused):
            if group:
                return min(group)
        return None

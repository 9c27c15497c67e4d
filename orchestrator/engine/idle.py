"""Idleness: whether a started runtime has nothing left to do until the outside acts.

A runtime is idle when none of its own tasks is working (a run in a step, a hook), every
journal write it enqueued has committed, no timer is due, and the inbox holds no event or
command from another process that it has not routed or applied yet. Runs paused on an
event or a later time, runs queued behind their mode and recovered runs waiting for their
workflow are idle: only something outside moves them (an event, a command, time, a file).
A task asleep on a `FakeClock` waits for the test to move time, so it counts as idle.
Watched files are outside it (a file written a moment ago may not have been noticed yet),
except that each `FileTrigger` watch, once (re)started, must have scanned its folders.

Tests wait on this (`Runtime.idle`, `FakeClock.advance`) instead of sleeping. It only
looks and waits: it must never change what the runtime does.
"""

from __future__ import annotations

import asyncio

from ..clock import Clock, to_iso
from ..journal import JournalWriter
from .control import Control
from .file_events import FileEvents
from .inbox import InboxPoller

# How often `wait` looks again while only timers or the inbox keep the runtime busy (the
# timers task and the inbox poller move by themselves; nothing here can be awaited instead).
POLL_SECONDS = 0.002


class Idleness:
    """Looks at the parts of a started runtime that can be busy."""

    def __init__(
        self,
        control: Control,
        inbox: InboxPoller,
        files: FileEvents,
        writer: JournalWriter,
        clock: Clock,
    ) -> None:
        self._control, self._inbox, self._files = control, inbox, files
        self._writer, self._clock = writer, clock

    async def busy(self) -> list[str]:
        """What keeps the runtime busy now; empty when it is idle."""
        reasons = []
        if await self._inbox.pending():
            reasons.append("events or commands from other processes wait to be routed")
        # No await from here on: what follows is one consistent look.
        reasons += [self._describe(task) for task in self._working()]
        if not self._writer.committed:
            reasons.append(f"journal writes are not committed yet ({self._writer.backlog} queued)")
        elif self._control.runs.settling:
            # Their batch committed and its callback is queued: their `invoke` callers learn next.
            reasons.append(f"{self._control.runs.settling} runs ended and are being settled")
        due = self._control.timers.next_due()
        if due is not None and due <= self._clock.now_us():
            reasons.append(f"a timer due at {to_iso(due)} has not fired yet")
        if self._files.scan_pending:
            reasons.append("a FileTrigger watch has not scanned its folders yet")
        return reasons

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the runtime is idle.

        Raises:
            TimeoutError: It was still busy after `timeout` seconds; the message says why.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self._writer.flush()
            busy = await self.busy()
            if not busy:
                return
            if loop.time() >= deadline:
                what = "; ".join(busy)
                raise TimeoutError(f"the runtime is not idle after {timeout:g} s: {what}")
            working = self._working()
            if working:  # a task may also go to sleep on the clock without ending: look again
                await asyncio.wait(working, timeout=POLL_SECONDS)
            else:
                await asyncio.sleep(POLL_SECONDS)

    def _working(self) -> list[asyncio.Task[None]]:
        return [
            task
            for task in self._control.runs.working
            if not task.done() and not self._clock.waiting(task)
        ]

    def _describe(self, task: asyncio.Task[None]) -> str:
        for run in self._control.runs.active.values():
            if run.task is task:
                step = f"in step {run.next_step!r}" if run.next_step else "ending"
                return f"run {run.run_id} of workflow {run.workflow.id!r} is {step}"
        return f"task {task.get_name()} is running"

"""Doubles for unit tests of the engine's parts without a journal file or a runtime.

The journal is `RecordingJournal`; what else a part needs (the supervisor as admission's
`Launcher`, the timers parking arms) is recorded here, so a test sees every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from orchestrator import Workflow
from orchestrator.clock import FakeClock
from orchestrator.define.hooks import Hook
from orchestrator.define.model import BoundStep
from orchestrator.define.modes import Mode
from orchestrator.engine.admission import Origin
from orchestrator.engine.executor import ActiveRun
from orchestrator.engine.registry import RegisteredWorkflow, register
from orchestrator.journal import ops
from orchestrator.records import RunStatus


def one_step(state: dict[str, Any]) -> dict[str, Any]:
    return state


def registered(mode: Mode, workflow_id: str = "jobs") -> RegisteredWorkflow:
    """A workflow of one trigger ``go`` with one step, registered under `mode`."""
    return register(Workflow(id=workflow_id, pipelines={"go": [one_step]}), mode=mode)


class Launcher:
    """Admission's view of the supervisor: runs are made, never executed."""

    def __init__(self) -> None:
        self.active: dict[str, ActiveRun] = {}
        self.created: list[tuple[str, RunStatus]] = []
        self.started: list[str] = []  # queued runs that got their slot, in order
        self.replaced: list[tuple[str, str]] = []
        self.signalled: list[tuple[str, dict[str, Any]]] = []
        self.announced: list[tuple[str, str]] = []  # (lifecycle event, run id)
        self._rows = 0

    def start_run(
        self,
        registered: RegisteredWorkflow,
        trigger_id: str,
        steps: list[BoundStep],
        data: Any,
        run_id: str | None = None,
        *,
        status: RunStatus = RunStatus.RUNNING,
        origin: Origin | None = None,
        row: int | None = None,
        encoded: str | None = None,
    ) -> ActiveRun:
        self._rows += 1
        run = ActiveRun(
            row=self._rows if row is None else row,
            run_id=run_id or f"run-{self._rows}",
            workflow=registered,
            trigger_id=trigger_id,
            steps=steps,
            step_index=origin.start if origin is not None else 0,
            position=0,
            state_text="{}",
            settled=asyncio.get_running_loop().create_future(),
        )
        self.created.append((run.run_id, status))
        if status == RunStatus.RUNNING:
            self.active[run.run_id] = run
        return run

    def start_queued(self, run: ActiveRun) -> None:
        self.started.append(run.run_id)
        self.active[run.run_id] = run

    def signal_active(self, run: ActiveRun, patch: dict[str, Any]) -> list[ops.Op]:
        self.signalled.append((run.run_id, patch))
        return []

    def replace(self, run: ActiveRun, reason: str) -> None:
        self.replaced.append((run.run_id, reason))

    async def hook(
        self, registered: RegisteredWorkflow, row: int, hook: Hook | None, *args: Any, name: str
    ) -> None:
        return None

    def announce(self, name: str, run: ActiveRun, extra: dict[str, Any]) -> None:
        self.announced.append((name, run.run_id))

    def background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        work.close()


class ManualTimers:
    """Timers a test fires by hand: what is armed, and `fire_due` at the clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.armed: dict[Hashable, tuple[int, Callable[[], None]]] = {}

    def set(self, key: Hashable, due_us: int, fire: Callable[[], None]) -> None:
        self.armed[key] = (due_us, fire)

    def cancel(self, key: Hashable) -> None:
        self.armed.pop(key, None)

    def fire_due(self) -> None:
        now = self._clock.now_us()
        for key, (due, fire) in sorted(self.armed.items(), key=lambda item: item[1][0]):
            if due <= now:
                del self.armed[key]
                fire()

"""Acting on the journal from the dashboard: run actions, emit, invoke, switches, copy.

Each action asks first (a confirmation, or a dialog to edit the JSON it sends), then
writes through the journal's `JournalCommands` in a worker thread (those writes are short
blocking transactions, on SQLite or PostgreSQL). The daemon applies them, as it does the
CLI's. Every outcome, including a refusal (an unknown run, a run that is not paused), is a
notification: an action never raises into the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text

from orchestrator.errors import OrchestratorError

from .dialogs import ConfirmDialog, Field, ForkDialog, JsonDialog
from .format import join, literal
from .names import Names

if TYPE_CHECKING:
    from .app import DashboardApp

READ_ONLY = "read-only dashboard: actions are disabled"
RUN_ACTIONS = ("abort", "resume", "signal", "retry", "fork")
# The statuses each run action fits (fork fits every run).
FITS: dict[str, frozenset[str]] = {
    "abort": frozenset({"queued", "running", "paused"}),
    "resume": frozenset({"paused"}),
    "signal": frozenset({"running", "paused"}),
    "retry": frozenset({"failed", "aborted"}),
}


def fits(action: str, status: str | None) -> bool:
    """Whether run action `action` fits a run in `status` (None: not known, so offered)."""
    allowed = FITS.get(action)
    return status is None or allowed is None or status in allowed


async def _then(flow: Awaitable[None], finished: asyncio.Event | None) -> None:
    try:
        await flow
    finally:
        if finished is not None:
            finished.set()


class Actions:
    """The dashboard's actions; each runs as a worker so dialogs can be awaited."""

    def __init__(self, app: DashboardApp) -> None:
        self._app = app

    def start(
        self,
        name: str,
        run_id: str | None = None,
        *,
        finished: asyncio.Event | None = None,
        **options: str,
    ) -> bool:
        """Begin action `name`: abort, resume, signal, emit, invoke, disable or enable.

        `workflow` (in `options`) names the workflow to invoke, disable or enable. False
        if refused at once; else `finished` (if given) is set when the action ends.
        """
        if self._app.read_only:
            self._app.notify(READ_ONLY, severity="warning")
            return False
        flows: dict[str, Callable[[], Awaitable[None]]] = {
            "emit": self._emit,
            "invoke": lambda: self._invoke(options.get("workflow", "")),
        }
        if name in ("disable", "enable"):
            flows[name] = lambda: self._switch(name, options.get("workflow", ""))
        if name in RUN_ACTIONS:
            if run_id is None:
                self._app.notify("no run selected", severity="warning")
                return False
            flows[name] = (
                (lambda: self._fork(run_id))
                if name == "fork"
                else (lambda: self._run_command(name, run_id))
            )
        flow = flows.get(name)
        if flow is None:
            self._app.notify(f"unknown action {name!r}", severity="error", markup=False)
            return False
        self._app.run_worker(_then(flow(), finished), group="actions", exit_on_error=False)
        return True

    async def run(self, name: str, run_id: str | None = None, **options: str) -> None:
        """`start`, from a key: hold the app's keys until the action's dialog has the focus.

        The dialog opens in a worker; without this, keys typed right after the action's key
        reach the screen below (a ``{"approved": false}`` typed at once would abort, emit,
        view... there) or an unfocused dialog. Bounded: a dialog that never opens (an
        action refused at once) frees the keys when its worker ends, or after 2 s.
        """
        ready, finished = self._app.dialog_ready, asyncio.Event()
        ready.clear()
        if not self.start(name, run_id, finished=finished, **options):
            return
        waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(finished.wait())]
        try:
            await asyncio.wait(waits, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def copy_run_id(self, run_id: str | None) -> None:
        """Put `run_id` on the clipboard."""
        if run_id is None:
            self._app.notify("no run selected", severity="warning")
            return
        self._app.copy_text(run_id, what=f"run id {run_id}")

    async def _run_command(self, command: str, run_id: str) -> None:
        subject = join(literal(f"{command.capitalize()} run "), literal(run_id, "bold"))
        payload: Any = None
        if command == "abort":
            if not await self._app.push_screen_wait(ConfirmDialog(join(subject, "?"))):
                return
        else:
            what = {
                "signal": "merged into its state",
                "retry": "merged, then it continues at the step it stopped at",
            }.get(command, "merged, then it continues")
            form = await self._app.push_screen_wait(
                JsonDialog(
                    subject, json_label=f"JSON patch ({what})", submit_label=command.capitalize()
                )
            )
            if form is None:
                return
            payload = form.data if form.data or command != "retry" else None
        if command == "abort" and await self._aborted_at_once(run_id):
            return
        await self._write(
            f"{command} of run {run_id}",
            lambda: self._app.journal.commands.queue_command(command, run_id, payload),
        )

    async def _fork(self, run_id: str) -> None:
        queries = self._app.source.queries
        detail = await queries.run_detail(run_id, recent_events=0) if queries else None
        title = join(literal("Fork run "), literal(run_id, "bold"))
        form = await self._app.push_screen_wait(ForkDialog(title, detail.steps if detail else []))
        if form is None:
            return
        await self._write(
            f"fork of run {run_id}",
            lambda: self._app.journal.commands.queue_fork(run_id, form.step, form.data),
        )

    async def _switch(self, command: str, workflow: str) -> None:
        effect = "it starts no runs" if command == "disable" else "it starts runs again"
        question = join(
            literal(f"{command.capitalize()} workflow "),
            literal(workflow, "bold"),
            literal(f"? ({effect})"),
        )
        if not await self._app.push_screen_wait(ConfirmDialog(question)):
            return
        await self._write(
            f"{command} of workflow {workflow}",
            lambda: self._app.journal.commands.queue_switch(command, workflow),
        )

    async def _aborted_at_once(self, run_id: str) -> bool:
        """Abort a run queued while no daemon runs, here; False if it is not one.

        Any error is left to the queued command that follows, which reports it.
        """
        try:
            aborted = await asyncio.to_thread(self._app.journal.commands.abort_unapplied, run_id)
        except Exception:  # noqa: BLE001 - reported by the command written next
            return False
        if aborted:
            self._app.notify(f"run {run_id} aborted: no daemon had started it", markup=False)
        return aborted

    async def _emit(self) -> None:
        names = await self._names()
        form = await self._app.push_screen_wait(
            JsonDialog(
                Text("Emit an event", style="bold"),
                fields=(Field("type", "Event type"),),
                json_label="Event data",
                submit_label="Emit",
                completions=lambda _: {"type": names.event_types},
                check=names.check_emit,
            )
        )
        if form is None:
            return
        event_type, data = form.fields["type"], form.data
        await self._write(
            f"event {event_type}",
            lambda: self._app.journal.commands.emit_event(event_type, data, source="dashboard"),
            done="journaled",
        )

    async def _invoke(self, workflow: str) -> None:
        names = await self._names()
        form = await self._app.push_screen_wait(
            JsonDialog(
                Text("Invoke a trigger", style="bold"),
                fields=(Field("workflow", "Workflow", workflow), Field("trigger", "Trigger")),
                json_label="The run's state",
                submit_label="Invoke",
                completions=names.invoke_completions,
                check=names.check_invoke,
            )
        )
        if form is None:
            return
        workflow, trigger, data = form.fields["workflow"], form.fields["trigger"], form.data
        await self._write(
            f"run of {workflow}/{trigger}",
            lambda: self._app.journal.commands.queue_invoke(workflow, trigger, data),
        )

    async def _names(self) -> Names:
        """What the daemon loaded (the journal's workflows) and what paused runs wait for."""
        queries = self._app.source.queries
        if queries is None:
            return Names([], [])
        try:
            return Names(await queries.workflows(), await queries.waited_event_types())
        except OrchestratorError:  # the dialog still opens; the write reports the journal
            return Names([], [])

    async def _write(self, what: str, write: Callable[[], object], done: str = "queued") -> None:
        try:
            result = await asyncio.to_thread(write)
        except OrchestratorError as exc:
            self._app.notify(f"{what} refused: {exc}", severity="error", markup=False)
            return
        except Exception as exc:  # noqa: BLE001 - an action must never crash the dashboard
            self._app.notify(f"{what} failed: {exc!r}", severity="error", markup=False)
            return
        suffix = f" as {result}" if isinstance(result, str) else ""
        applies = "the daemon" if self._app.daemon else "no daemon runs now: the next one to start"
        self._app.notify(f"{what} {done}{suffix}; {applies} takes it from here", markup=False)

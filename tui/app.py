"""The dashboard app: screens as modes, the polling loop, global keys, the command palette.

`DashboardApp` reads a journal through `JournalSource` and writes through the journal's
command API; it never touches a daemon's memory, so it works in the daemon's process
(``orchestrator up``) or in another (``orchestrator tui``). Every `poll_seconds` it asks the
source whether anything was committed and, only then, reloads the visible screen; once a
second it refreshes the banner (is a daemon alive?) and clock-driven cells.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen

from orchestrator.errors import OrchestratorError
from orchestrator.journal import DaemonRecord, open_journal

from .actions import Actions, fits
from .detail import RunDetailScreen
from .dialogs import ConfirmDialog, HelpScreen
from .events import EventsScreen
from .format import join, literal, short_id
from .live import JournalBanner, LiveScreen, RunScreen, typing
from .logs import LogsScreen
from .runs import RunsScreen
from .source import JournalSource
from .terminal import in_tmux, osc52, screenshot_dir, tmux_passthrough
from .workflows import WorkflowsScreen

QuitHook = Callable[[], object | Awaitable[object]]
# Not from a dialog (q there is the dialog's: the help and the value view close on it).
_SCREEN_ACTIONS = frozenset({"switch_mode", "emit", "invoke", "help", "quit_key"})


class DashboardApp(App[None]):
    """A live view of one journal, with actions on its runs.

    Args:
        db: The journal: a file path (it may not exist yet: the dashboard waits for it) or
            a ``postgresql://`` URL (`open_journal`); the banner shows its `location`,
            never a password.
        read_only: Show everything, change nothing (action keys hidden and refused).
        on_quit: Called (and awaited, if it returns an awaitable) when the user quits.
        active_runs: How many runs the daemon in this process is executing; quitting asks
            for confirmation first when there are any (``orchestrator up``).
        now: The clock for durations and times (tests freeze it).
        poll_seconds: How often to look for changes in the journal.
    """

    CSS_PATH = "dashboard.tcss"
    TITLE = "orchestrator"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[None]]]] = {
        "runs": RunsScreen,
        "workflows": WorkflowsScreen,
        "events": EventsScreen,
        "logs": LogsScreen,
    }
    DEFAULT_MODE = "runs"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 - typed by App
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('runs')", "Runs"),
        Binding("2", "switch_mode('workflows')", "Workflows"),
        Binding("3", "switch_mode('events')", "Events"),
        Binding("4", "switch_mode('logs')", "Logs"),
        # Priority, as the run actions (live.RunScreen): their dialog gets the keys that follow.
        Binding("e", "emit", "Emit", priority=True),
        Binding("i", "invoke", "Invoke", priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_key", "Quit", priority=True),
        # Textual binds ctrl+c to "copy" in inputs and to a hint ("press ctrl+q") elsewhere:
        # here it quits, as q does, from anywhere.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        db: str | os.PathLike[str],
        read_only: bool = False,
        on_quit: QuitHook | None = None,
        *,
        active_runs: Callable[[], int] | None = None,
        now: Callable[[], datetime] | None = None,
        poll_seconds: float = 0.1,
    ) -> None:
        super().__init__()
        self.journal = open_journal(db)
        self.read_only = read_only
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self.source = JournalSource(self.journal)
        self.actions = Actions(self)
        self.daemon: DaemonRecord | None = None
        self.standbys = 0  # daemons standing by to take the journal over
        self.standby_steps = 0  # steps they run for the active daemon now
        self._on_quit = on_quit
        self._active_runs = active_runs
        self._poll_seconds = poll_seconds
        self._last_error: str | None = None
        self._stale = False
        self._quiet_until = 0.0
        self.dialog_ready = asyncio.Event()  # set by a dialog once it has the focus
        if read_only:
            self.sub_title = "read-only"

    async def on_mount(self) -> None:
        """Start polling the journal."""
        self.set_interval(self._poll_seconds, self._poll)
        self.set_interval(1.0, self._tick)
        await self._poll()

    async def on_unmount(self) -> None:
        """Close the journal connection."""
        await self.source.close()

    def open_run(self, run_id: str) -> None:
        """Show one run (from the runs or the events screen)."""
        if self.current_mode != "runs":
            self.switch_mode("runs")
        self.push_screen(RunDetailScreen(run_id))

    def update_banner(self) -> None:
        """Say which journal is shown, whether a daemon holds it, or what is wrong."""
        if not self._showing():
            return
        text = self._banner_text()
        for banner in self.screen.query(JournalBanner):
            banner.show(text)

    def report_error(self, exc: BaseException) -> None:
        """An unexpected failure while drawing: tell the user (once per message), go on."""
        message = f"could not show this screen: {exc!r}"
        self.log.error(message)
        if message != self._last_error:
            self._last_error = message
            self.notify(message, severity="error", markup=False, timeout=8)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No emit or invoke when read-only; no leaving a dialog open behind another screen."""
        if action in ("emit", "invoke") and self.read_only:
            return False
        if action in ("emit", "invoke", "quit_key") and typing(self.screen):
            return None  # the letter is text here (ctrl+c still quits)
        return not (action in _SCREEN_ACTIONS and isinstance(self.screen, ModalScreen))

    async def action_emit(self) -> None:
        """Journal an event (after a dialog)."""
        await self.actions.run("emit")

    async def action_invoke(self) -> None:
        """Queue a run of a workflow's trigger (after a dialog)."""
        workflow = ""
        screen = self.screen
        if isinstance(screen, RunDetailScreen) and screen.detail is not None:
            workflow = screen.detail.run.workflow_id
        await self.actions.run("invoke", workflow=workflow)

    async def action_help(self) -> None:
        """Show the keys."""
        if not isinstance(self.screen, HelpScreen):
            await self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Quit; with runs active in this process's daemon, after a confirmation."""
        active = self._active_runs() if self._active_runs is not None else 0
        if active and not isinstance(self.screen, ConfirmDialog):
            question = Text(
                f"{active} run(s) are executing. Stop the daemon? Running steps get their "
                "grace period; anything unfinished continues at the next start."
            )

            async def answered(stop: bool | None) -> None:
                if stop:
                    await self.quit_now()

            dialog = ConfirmDialog(question, confirm_label="Stop", cancel_label="Cancel")
            await self.push_screen(dialog, answered)  # mounted, focused: keys go to it
            return
        await self.quit_now()

    async def action_quit_key(self) -> None:
        """q: quit, unless typing (then it is the letter)."""
        await self.action_quit()

    async def quit_now(self) -> None:
        """Run the quit hook (``orchestrator up`` stops its daemon there), then exit."""
        hook, self._on_quit = self._on_quit, None
        if hook is not None:
            result = hook()
            if inspect.isawaitable(result):
                await result
        self.exit()

    def copy_to_clipboard(self, text: str) -> None:
        """Textual's OSC 52, and inside tmux the same wrapped for tmux to pass on."""
        super().copy_to_clipboard(text)
        if self._driver is not None and in_tmux():
            self._driver.write(tmux_passthrough(osc52(text)))

    def copy_text(self, text: str, *, what: str) -> None:
        """Send `text` to the terminal's clipboard and say so (honestly: it may ignore it)."""
        self.copy_to_clipboard(text)
        how = "OSC 52, wrapped for tmux too" if in_tmux() else "OSC 52"
        self.notify(
            f"{what} sent to the terminal's clipboard ({how}); if it does not arrive, "
            "select it on screen (v shows a value in full)",
            markup=False,
        )

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Save an SVG screenshot in a folder that exists (`terminal.screenshot_dir`).

        Textual's own saves to ~/Downloads and fails where there is none. The full path is
        notified; a place that cannot be written is notified too, never raised.
        """
        folder = Path(path) if path else screenshot_dir()
        try:
            saved = self.save_screenshot(filename, str(folder), time_format)
        except OSError as exc:
            self.notify(f"screenshot not saved in {folder}: {exc}", severity="error", markup=False)
            return None
        saved = str(Path(saved).resolve())
        self.notify(f"screenshot saved: {saved}", markup=False, timeout=8)
        return saved

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: screens and actions, besides Textual's own commands."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Runs", "Show the runs", partial(self.switch_mode, "runs"))
        yield SystemCommand(
            "Workflows", "Loaded workflows and load errors", partial(self.switch_mode, "workflows")
        )
        yield SystemCommand(
            "Events", "Recent events and what they did", partial(self.switch_mode, "events")
        )
        yield SystemCommand(
            "Logs", "Every run's log entries as they come", partial(self.switch_mode, "logs")
        )
        yield SystemCommand("Help", "The dashboard's keys", self.action_help)
        yield SystemCommand("Emit an event", "Journal an event for the daemon", self.action_emit)
        yield SystemCommand("Invoke a trigger", "Queue a run of a workflow", self.action_invoke)
        run_id = screen.current_run_id() if isinstance(screen, RunScreen) else None
        if run_id is not None:
            short = short_id(run_id)
            status = screen.current_run_status() if isinstance(screen, RunScreen) else None
            for name, help_text in (
                ("abort", "End the run"),
                ("resume", "Resume the paused run with a JSON patch"),
                ("signal", "Merge a JSON patch into the run"),
                ("retry", "Continue the failed or aborted run at the step it stopped at"),
                ("fork", "Start a new run from this run's state before a step"),
            ):
                if not fits(name, status):
                    continue
                callback = partial(self.actions.start, name, run_id)
                yield SystemCommand(f"{name.capitalize()} run {short}", help_text, callback)
            copy = partial(self.actions.copy_run_id, run_id)
            yield SystemCommand(f"Copy run id {short}", "Put the run id on the clipboard", copy)
            if not isinstance(screen, RunDetailScreen):
                yield SystemCommand(
                    f"Open run {short}", "Show the run", partial(self.open_run, run_id)
                )

    async def _poll(self) -> None:
        if await self.source.poll():
            self._stale = True
            await self._refresh_daemon()
            self.update_banner()
        # Invariant: on a journal that changes all the time, reloads take at most half of the
        # loop (it may be the daemon's loop too): after a reload, wait as long as it took.
        # Its time is the loop thread's CPU time: while a query runs (a search scans 100,000
        # runs in 50-90 ms) the loop only waits on the reader's thread, which costs it nothing.
        if self._stale and time.monotonic() >= self._quiet_until:
            self._stale = False
            started = time.thread_time()
            await self._reload()
            self._quiet_until = time.monotonic() + (time.thread_time() - started)

    def _showing(self) -> bool:
        """Whether the app shows a screen: not while it closes (its screens are removed)."""
        return self.is_running and bool(self.screen_stack)

    async def _reload(self) -> None:
        if not self._showing():
            return
        screen = self.screen
        if isinstance(screen, LiveScreen):
            await screen.reload()

    async def _tick(self) -> None:
        await self._refresh_daemon()
        if not self._showing():
            return
        self.update_banner()
        screen = self.screen
        if isinstance(screen, LiveScreen):
            screen.tick()

    async def _refresh_daemon(self) -> None:
        queries = self.source.queries
        if queries is None:
            self.daemon = None
            return
        try:
            self.daemon = await queries.daemon()
            standbys = await queries.standbys()
            self.standbys = len(standbys)
            self.standby_steps = sum(standby.running for standby in standbys)
        except OrchestratorError as exc:
            await self.source.fail(exc)

    def _banner_text(self) -> Text:
        state = self.source.state
        if state.kind != "ok":
            style = "bold yellow" if state.kind in ("waiting", "connecting") else "bold red"
            return literal(state.message, style)
        parts = [literal("journal "), literal(self.journal.location, "bold")]
        if self.daemon is None:
            parts.append(literal(" · no daemon holds it (actions wait for the next one)", "yellow"))
        else:
            ready = "ready" if self.daemon.ready else "starting"
            parts.append(
                literal(f" · daemon pid {self.daemon.pid} on {self.daemon.host}, {ready}", "green")
            )
            if self.daemon.degraded is not None:
                parts.append(
                    literal(
                        f" · journal writes failing, retrying: {self.daemon.degraded}", "bold red"
                    )
                )
        if self.standbys:
            running = f", running {self.standby_steps} steps" if self.standby_steps else ""
            parts.append(literal(f" · {self.standbys} standing by{running}", "green"))
        if self.read_only:
            parts.append(literal(" · read-only", "bold cyan"))
        return join(*parts)

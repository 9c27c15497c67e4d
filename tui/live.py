"""What every dashboard screen shares: the journal banner, reloading, run actions.

`LiveScreen.reload` runs one screen load at a time (a load is a few awaited queries, and
two interleaved loads could draw old data over new). A load that fails because of the
journal hands the error to the source (shown in the banner, retried); anything else, such
as a row no decoder expected, becomes a notification: a screen never takes the app down.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input, Static, TextArea

from orchestrator.errors import OrchestratorError
from orchestrator.journal import DashboardViews

from .actions import fits
from .values import Value, ValueScreen

if TYPE_CHECKING:
    from .app import DashboardApp


def show(widget: Static, text: Text, *, layout: bool = True) -> None:
    """Redraw a Static only when its text changed (each screen redraws every second).

    A fixed-height one may skip the layout pass, which would repaint the whole screen.
    """
    if widget.content != text:
        widget.update(text, layout=layout)


def typing(screen: Screen[Any]) -> bool:
    """Whether keys go to a text box now (so letters are text, not actions)."""
    return isinstance(screen.focused, Input | TextArea)


class JournalBanner(Static):
    """One line at the top of each screen: the journal, the daemon, or what is wrong."""

    def show(self, text: Text) -> None:
        """Replace the banner's text."""
        show(self, text)


class LiveScreen(Screen[None]):
    """A screen of journal data, reloaded by the app whenever the journal changes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "view", "View"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._lock = asyncio.Lock()

    @property
    def dashboard(self) -> DashboardApp:
        """The app, typed."""
        return cast("DashboardApp", self.app)

    async def reload(self) -> None:
        """Re-query and redraw (one load at a time); failures are shown, never raised.

        Not before the screen is mounted: its tables get their columns in `on_mount`, and
        the journal may change while a screen opens (the app's poll then reloads it). The
        screen loads once mounted, when it is resumed.
        """
        async with self._lock:
            queries = self.dashboard.source.queries
            if queries is None or not self.is_attached or not self.is_mounted:
                return
            try:
                await self.load(queries)
            except OrchestratorError as exc:
                await self.dashboard.source.fail(exc)
                self.dashboard.update_banner()
            except Exception as exc:  # noqa: BLE001 - a row nobody expected must not end the app
                self.dashboard.report_error(exc)

    async def load(self, queries: DashboardViews) -> None:
        """Query the journal and draw the result (screens override this)."""

    def tick(self) -> None:
        """Called every second: redraw what depends on the clock (durations)."""

    def current_value(self) -> Value | None:
        """What ``v`` shows in full: the highlighted row or node (screens override this)."""
        return None

    async def action_view(self) -> None:
        """Open the highlighted row or node in full (long values are cut in tables)."""
        value = self.current_value()
        if value is None:
            self.notify("nothing selected to view", severity="warning")
            return
        await self.app.push_screen(ValueScreen(*value))

    async def on_screen_resume(self) -> None:
        """Coming back to a screen shows fresh data at once."""
        self.dashboard.update_banner()
        await self.reload()


class RunScreen(LiveScreen):
    """A screen with a current run, and the actions on it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority (taken before the focused widget sees them, except while typing): the
        # dialog each opens has the focus before the app reads the next key.
        Binding("a", "run_action('abort')", "Abort", priority=True),
        Binding("r", "run_action('resume')", "Resume", priority=True),
        Binding("S", "run_action('signal')", "Signal", priority=True),
        Binding("y", "run_action('retry')", "Retry", priority=True),
        Binding("F", "run_action('fork')", "Fork", priority=True),
        Binding("c", "copy_run_id", "Copy id"),
    ]

    # The run and status whose actions the key bar offers now.
    _offered: tuple[str | None, str | None] | None = None

    def current_run_id(self) -> str | None:
        """The run the actions apply to, if any (screens override this)."""
        return None

    def current_run_status(self) -> str | None:
        """That run's status as shown, if known (screens override this)."""
        return None

    def offer_actions(self) -> None:
        """Show the run actions that fit the current run, once its status changed."""
        status = (self.current_run_id(), self.current_run_status())
        if status != self._offered:
            self._offered = status
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the run actions that fit the run's status are offered (none when read-only)."""
        if action != "run_action":
            return True
        if self.dashboard.read_only or typing(self):
            return False
        name = str(parameters[0]) if parameters else ""
        return fits(name, self.current_run_status())

    async def action_run_action(self, name: str) -> None:
        """Abort, resume or signal the current run (after a dialog)."""
        await self.dashboard.actions.run(name, self.current_run_id())

    def action_copy_run_id(self) -> None:
        """Put the current run's id on the clipboard."""
        self.dashboard.actions.copy_run_id(self.current_run_id())

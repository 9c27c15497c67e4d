"""Modal dialogs: confirm an action, edit a JSON object (with a few named fields), help.

Dialogs only collect and validate input; `actions` decides what to do with it. Text shown
in them that may come from the journal (run ids, workflow ids) is passed as `Text`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Static, TextArea

from .format import literal, status_legend
from .tables import Choices

if TYPE_CHECKING:
    from .app import DashboardApp


def opened(dialog: ModalScreen[Any], target: Widget) -> None:
    """Give `target` the focus now and say the dialog is ready for keys.

    `Widget.focus` goes through the app's message queue, behind keys already typed: those
    would reach the dialog before any widget has the focus, and be lost. `Screen.set_focus`
    is immediate; the app's `dialog_ready` lets an action that opened the dialog hold the
    app's queue (the keys typed meanwhile) until here, so they arrive in order.
    """
    dialog.set_focus(target)
    ready = getattr(dialog.app, "dialog_ready", None)
    if ready is not None:
        cast("DashboardApp", dialog.app).dialog_ready.set()


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no to one action; Enter and escape say no unless the focus moved to yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(
        self, question: Text, *, confirm_label: str = "Yes", cancel_label: str = "No"
    ) -> None:
        super().__init__()
        self._question = question
        self._confirm_label = confirm_label
        self._cancel_label = cancel_label

    def compose(self) -> ComposeResult:
        """A question and two buttons."""
        with Vertical(classes="dialog"):
            yield Static(self._question, classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._confirm_label, id="yes", variant="error")
                yield Button(self._cancel_label, id="no")

    def on_mount(self) -> None:
        """The safe answer has the focus: Enter right away does nothing it cannot undo."""
        opened(self, self.query_one("#no", Button))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer with the button."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Answer with a key."""
        self.dismiss(answer)


@dataclass(frozen=True)
class Field:
    """A one-line text field of a `JsonDialog`."""

    name: str
    label: str
    value: str = ""


@dataclass(frozen=True)
class JsonForm:
    """What a `JsonDialog` returns: its fields (stripped, never empty) and the JSON object."""

    fields: dict[str, str]
    data: dict[str, Any]


class JsonDialog(ModalScreen[JsonForm | None]):
    """Edit a JSON object (and some named fields); invalid input is shown inline."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Send"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self,
        title: Text,
        *,
        fields: tuple[Field, ...] = (),
        json_label: str = "JSON object",
        initial: str = "{}",
        submit_label: str = "Send",
    ) -> None:
        super().__init__()
        self._title = title
        self._fields = fields
        self._json_label = json_label
        self._initial = initial
        self._submit_label = submit_label

    def compose(self) -> ComposeResult:
        """Title, fields, the JSON editor, the error line and the buttons."""
        with Vertical(classes="dialog"):
            yield Static(self._title, classes="dialog-title")
            for field in self._fields:
                yield Label(field.label)
                yield Input(value=field.value, id=f"field-{field.name}")
            yield Label(f"{self._json_label} (ctrl+s to send, escape to cancel)")
            yield TextArea(self._initial, id="json", soft_wrap=True)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._submit_label, id="submit", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Start in the first empty field, else in the editor; typing there replaces `{}`."""
        self.query_one("#json", TextArea).select_all()
        empty = [f for f in self._fields if not f.value]
        target = f"#field-{empty[0].name}" if empty else "#json"
        opened(self, self.query_one(target))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Send or cancel."""
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        """Enter in a field moves on to the editor."""
        self.query_one("#json", TextArea).focus()

    def action_submit(self) -> None:
        """Validate; dismiss with the form, or say what is wrong and stay open."""
        values = {
            f.name: self.query_one(f"#field-{f.name}", Input).value.strip() for f in self._fields
        }
        missing = [f.label for f in self._fields if not values[f.name]]
        if missing:
            self._error(f"{missing[0]} must not be empty")
            return
        text = self.query_one("#json", TextArea).text
        data, problem = parse_object(text)
        if problem is not None or data is None:
            self._error(problem or "invalid JSON")
            return
        self.dismiss(JsonForm(values, data))

    def action_cancel(self) -> None:
        """Close without sending."""
        self.dismiss(None)

    def _error(self, message: str) -> None:
        self.query_one("#error", Static).update(literal(message, "bold red"))


@dataclass(frozen=True)
class ForkForm:
    """What a `ForkDialog` returns: the step the new run starts at and the patch."""

    step: str | None
    data: dict[str, Any]


class ForkDialog(ModalScreen[ForkForm | None]):
    """Fork a run: pick the step the new run starts at, and a JSON patch for its state."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Fork"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: Text, steps: list[str]) -> None:
        super().__init__()
        self._title = title
        self._steps = steps

    def compose(self) -> ComposeResult:
        """Title, the steps, the JSON editor, the error line and the buttons."""
        with Vertical(classes="dialog"):
            yield Static(self._title, classes="dialog-title")
            if self._steps:
                yield Label("Start at step (with the state the run had before it)")
                yield Choices(*[literal(step) for step in self._steps], id="steps")
            else:
                yield Label("The journal does not know this run's steps: it starts at the first")
            yield Label("JSON patch, merged into its state (ctrl+s to fork, escape to cancel)")
            yield TextArea("{}", id="json", soft_wrap=True)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Fork", id="submit", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """The first step is chosen; the list has the focus (else the editor)."""
        self.query_one("#json", TextArea).select_all()
        if self._steps:
            steps = self.query_one("#steps", OptionList)
            steps.highlighted = 0
            opened(self, steps)
        else:
            opened(self, self.query_one("#json", TextArea))

    def on_option_list_option_selected(self) -> None:
        """Enter on a step moves on to the editor."""
        self.query_one("#json", TextArea).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Fork or cancel."""
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_submit(self) -> None:
        """Validate; dismiss with the form, or say what is wrong and stay open."""
        data, problem = parse_object(self.query_one("#json", TextArea).text)
        if problem is not None or data is None:
            self.query_one("#error", Static).update(literal(problem or "invalid JSON", "bold red"))
            return
        step = None
        if self._steps:
            index = self.query_one("#steps", OptionList).highlighted
            step = self._steps[index or 0]
        self.dismiss(ForkForm(step, data))

    def action_cancel(self) -> None:
        """Close without forking."""
        self.dismiss(None)


def parse_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)``, or ``(None, why not)`` when `text` is not one JSON object."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        return None, "not valid JSON: nested too deeply"
    if not isinstance(value, dict):
        return None, f"must be a JSON object {{...}}, not {type(value).__name__}"
    return value, None


HELP = """\
Screens  1 runs · 2 workflows · 3 events · ? this help
         ctrl+p command palette (screens, actions, screenshot)
         q or ctrl+c quit (asks first while this process's daemon runs
         steps; Enter or escape then cancels)
Move     j/k or up/down · g or home: first row · G or end: last row
         (on the runs screen, of the page shown) · tab: next pane
View     v the highlighted row or state node in full, scrollable;
         c there copies it · enter on a state leaf shows it too
Runs     enter open a run · / search (run id, workflow, trigger, error)
         f status · w workflow · o sort · [ ] previous/next page
         escape clear the search and filters
Run      escape back · t timeline · s state (checkpoints, tree, diff)
         w wait · h children · b traceback · p parent run
Actions  a abort · r resume (JSON patch) · S signal (JSON patch)
         y retry a failed or aborted run (JSON patch)
         F fork a run from a step · c copy the run id
         e emit an event · i invoke a trigger
         Each asks first; only those that fit the run's status are
         offered; a read-only dashboard has none.
Events   enter open the first run the event started or resumed
         / filter by type

Actions are written into the journal; the daemon holding it applies
them within milliseconds, or the next daemon to start does. Copying
sends the text to the terminal's clipboard (OSC 52; inside tmux,
wrapped for tmux too): where that does not arrive, select it on screen.
"""


class HelpScreen(ModalScreen[None]):
    """The keys and the colours of the statuses, scrollable (it is long at 80x24)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
        Binding("g,home", "scroll(-1000)", "Top", show=False),
        Binding("G,end", "scroll(1000)", "Bottom", show=False),
    ]

    def compose(self) -> ComposeResult:
        """The help text, then the legend."""
        with VerticalScroll(classes="dialog help"):
            yield Static(Text("Dashboard keys", style="bold"), classes="dialog-title")
            yield Static(Text(HELP))
            yield Static(Text("Colours of the statuses", style="bold"), classes="dialog-title")
            yield Static(status_legend(), id="legend")

    def action_scroll(self, lines: int) -> None:
        """Scroll the help by `lines`."""
        scroll = self.query_one(VerticalScroll)
        scroll.scroll_to(y=scroll.scroll_y + lines, animate=False)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)

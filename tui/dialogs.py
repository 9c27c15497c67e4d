"""Modal dialogs: confirm an action, edit a JSON object (with a few named fields), help.

Dialogs only collect and validate input; `actions` decides what to do with it. Text shown
in them that may come from the journal (run ids, workflow ids) is passed as `Text`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Static, TextArea

from .format import join, literal, status_legend
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


Values = Mapping[str, str]  # a dialog's fields by name, as typed (stripped)
Completions = Callable[[Values], Mapping[str, Sequence[str]]]
"""The names each field completes to, given what the fields hold now."""


@dataclass(frozen=True)
class Problem:
    """What is wrong with a dialog's fields: an error it refuses, or a warning.

    A warning is shown and the dialog stays open; sending the same fields again sends them.
    """

    message: str
    refused: bool = True


Check = Callable[[Values], Problem | None]


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
        completions: Completions | None = None,
        check: Check | None = None,
    ) -> None:
        super().__init__()
        self._title = title
        self._fields = fields
        self._json_label = json_label
        self._initial = initial
        self._submit_label = submit_label
        self._completions = completions
        self._check = check
        self._offered: dict[str, tuple[str, ...]] = {}  # field -> the names it completes to
        self._warned: dict[str, str] | None = None  # the fields a warning was shown for

    def compose(self) -> ComposeResult:
        """Title, fields, the JSON editor, the error line and the buttons."""
        with Vertical(classes="dialog"):
            yield Static(self._title, classes="dialog-title")
            for field in self._fields:
                if self._completions is None:
                    yield Label(field.label)
                else:  # the label says what the field completes to
                    yield Static(field.label, id=f"known-{field.name}", classes="dialog-known")
                yield Input(value=field.value, id=f"field-{field.name}")
            yield Label(f"{self._json_label} (ctrl+s to send, escape to cancel)")
            yield TextArea(self._initial, id="json", soft_wrap=True)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._submit_label, id="submit", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Start in the first empty field, else in the editor; typing there replaces `{}`."""
        self._complete()
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

    def on_input_changed(self) -> None:
        """A field changed: completions follow (a workflow's triggers), a warning is undone."""
        self._complete()
        if self._warned is not None and self._warned != self._values():
            self._warned = None
            self.query_one("#submit", Button).label = self._submit_label

    def on_input_submitted(self) -> None:
        """Enter in a field moves on to the editor."""
        self.query_one("#json", TextArea).focus()

    def action_submit(self) -> None:
        """Validate; dismiss with the form, or say what is wrong and stay open."""
        values = self._values()
        missing = [f.label for f in self._fields if not values[f.name]]
        if missing:
            self._error(f"{missing[0]} must not be empty")
            return
        problem = self._check(values) if self._check is not None else None
        if problem is not None and (problem.refused or values != self._warned):
            self._warned = None if problem.refused else values
            self._error(problem.message, "bold red" if problem.refused else "bold yellow")
            label = f"{self._submit_label} anyway" if not problem.refused else self._submit_label
            self.query_one("#submit", Button).label = label
            return
        text = self.query_one("#json", TextArea).text
        data, invalid = parse_object(text)
        if invalid is not None or data is None:
            self._error(invalid or "invalid JSON")
            return
        self.dismiss(JsonForm(values, data))

    def _values(self) -> dict[str, str]:
        return {
            f.name: self.query_one(f"#field-{f.name}", Input).value.strip() for f in self._fields
        }

    def _complete(self) -> None:
        """Give each field the names it completes to now, and list them on its label line."""
        if self._completions is None:
            return
        offered = self._completions(self._values())
        for field in self._fields:
            names = tuple(offered.get(field.name, ()))
            if self._offered.get(field.name) == names:
                continue
            self._offered[field.name] = names
            box = self.query_one(f"#field-{field.name}", Input)
            box.suggester = SuggestFromList(names) if names else None
            known = self.query_one(f"#known-{field.name}", Static)
            known.update(_known(field.label, names))

    def action_cancel(self) -> None:
        """Close without sending."""
        self.dismiss(None)

    def _error(self, message: str, style: str = "bold red") -> None:
        self.query_one("#error", Static).update(literal(message, style))


def _known(label: str, names: Sequence[str]) -> Text:
    """``Workflow · → completes: a, b, c`` on one line (cut at the dialog's edge)."""
    if not names:
        return Text(label)
    text = join(label, literal(f" · → completes: {', '.join(names)}", "grey50", single_line=True))
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


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
Screens  1 runs · 2 workflows · 3 events · 4 logs · ? this help
         ctrl+p command palette (screens, actions, screenshot)
         q or ctrl+c quit (asks first while this process's daemon runs
         steps; Enter or escape then cancels)
Move     j/k or up/down · g or home: first row · G or end: last row
         (on the runs screen, of the page shown) · tab: next pane
View     v the highlighted row or state node in full, scrollable;
         c there copies it · enter on a state leaf shows it too
Runs     enter open a run · / search (run id, workflow, trigger, error);
         enter in the search box on a run id or 4+ of its first
         characters opens that run
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
Logs     every run's entries as written; on the last line it follows
         new ones, moved up it stays put (f follows again)
         enter open the line's run

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

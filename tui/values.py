"""One value in full: the long-value view, and the text each screen puts in it.

Tables and trees cut long values with an ellipsis; ``v`` (or Enter on a leaf of the state
tree) opens `ValueScreen` with the whole value: scrollable, selectable, and ``c`` sends it
to the terminal's clipboard. The text goes through `format.clean` first (secrets masked,
control characters escaped) and is shown by a read-only `TextArea`, which draws it
literally: no markup, no ANSI.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static, TextArea

from .format import clean, literal

if TYPE_CHECKING:
    from .app import DashboardApp

Value = tuple[str, str]  # a title, the text in full


def pretty(value: Any) -> str:
    """A JSON value on as many lines as it needs (anything else by its repr)."""
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=repr)
    except (ValueError, TypeError, RecursionError):
        return repr(value)


def when(moment: datetime | None) -> str:
    """A time in full (ISO 8601), or ``-``."""
    return moment.isoformat() if moment is not None else "-"


def record(*fields: tuple[str, object]) -> str:
    """Named values, one per line, names aligned; a value on several lines is indented."""
    width = max((len(name) for name, _ in fields), default=0)
    lines = []
    for name, value in fields:
        text = "-" if value is None or value == "" else str(value)
        lines.append(f"{name:<{width}}  " + text.replace("\n", "\n" + " " * (width + 2)))
    return "\n".join(lines)


class ValueScreen(ModalScreen[None]):
    """A value in full, scrollable; ``c`` copies it, escape closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,v", "close", "Close"),
        Binding("c", "copy", "Copy"),
    ]

    def __init__(self, title: str, value: str) -> None:
        super().__init__()
        self._title = title
        self.value = clean(value)

    def compose(self) -> ComposeResult:
        """The title, the value, the keys."""
        with Vertical(classes="dialog value"):
            yield Static(literal(self._title, "bold", single_line=True), classes="dialog-title")
            yield TextArea(self.value, id="value", read_only=True, soft_wrap=True)
            yield Label(Text("c copy · arrows and pgup/pgdn scroll · escape close", "grey50"))

    def on_mount(self) -> None:
        """The value has the focus (select with shift and the arrows, or the mouse)."""
        self.set_focus(self.query_one("#value", TextArea))

    def action_close(self) -> None:
        """Back to the screen."""
        self.dismiss(None)

    def action_copy(self) -> None:
        """Send the whole value (or the selection) to the terminal's clipboard."""
        area = self.query_one("#value", TextArea)
        text = area.selected_text or self.value
        what = "the selection" if area.selected_text else self._title
        cast("DashboardApp", self.app).copy_text(text, what=what)

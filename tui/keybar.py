"""The key bar: what the keys do here, on one line at the bottom of every screen.

Textual's `Footer` is one widget per key, composed again on every focus change: on the
runs screen that is 16 widgets to mount and style each time, which was half of the
dashboard's start-up (about 100 ms of 200) and a stall on each focus change. The bar is
one widget that renders the same active bindings as text; a click on a key presses it, as
on the `Footer`.
"""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.screen import Screen
from textual.widget import Widget

Span = tuple[int, int, int, str]  # line, start and end column of a key's label, and the key
Item = tuple[str, str, bool, str]  # key shown, description, enabled, the key to press
MAX_LINES = 3


class KeyBar(Widget, can_focus=False):
    """The bindings the focused widget, its screen and the app offer now.

    On as many lines (up to three) as the width needs: at 80 columns no key is cut off.
    The command palette's key comes last.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"keybar--key", "keybar--description"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: auto;
        max-height: 3;
        color: $footer-foreground;
        background: $footer-background;
    }
    KeyBar > .keybar--key {
        color: $footer-key-foreground;
        text-style: bold;
    }
    KeyBar > .keybar--description {
        color: $footer-description-foreground;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._spans: list[Span] = []

    def on_mount(self) -> None:
        """Render again whenever the screen's bindings change (focus moved, ...)."""
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """As many lines as the keys need at this width."""
        return len(_pack(self._items(), width))

    def render(self) -> Text:
        """The keys, packed into lines from the left."""
        self._spans = []
        key_style = self.get_component_rich_style("keybar--key")
        description_style = self.get_component_rich_style("keybar--description")
        lines = []
        for y, row in enumerate(_pack(self._items(), self.size.width)):
            line = Text(no_wrap=True, overflow="crop")
            for key, description, enabled, press in row:
                line.append(" " if not line else "  ")
                dim = Style() if enabled else Style(dim=True)
                start = line.cell_len
                line.append(key, key_style + dim)
                line.append(" ")
                line.append(description, description_style + dim)
                self._spans.append((y, start, line.cell_len, press if enabled else ""))
            lines.append(line)
        return Text("\n", no_wrap=True).join(lines)

    def _items(self) -> list[Item]:
        items = [
            (self.app.get_key_display(b), b.description, enabled, b.key)
            for b, enabled in self._shown()
        ]
        palette = self._palette()
        if palette is not None:
            items.append(
                (self.app.get_key_display(palette), palette.description, True, palette.key)
            )
        return items

    def _shown(self) -> list[tuple[Binding, bool]]:
        """The bindings with `show`, one per action, in the order Textual ranks them."""
        shown: dict[str, tuple[Binding, bool]] = {}
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if binding.show and binding.action not in shown:
                shown[binding.action] = (binding, active.enabled)
        return list(shown.values())

    def _palette(self) -> Binding | None:
        if not self.app.ENABLE_COMMAND_PALETTE:
            return None
        active = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        return active.binding if active is not None and active.enabled else None

    def on_click(self, event: events.Click) -> None:
        """Press the key clicked (a bell for one that is disabled now)."""
        for y, start, end, key in self._spans:
            if y == event.y and start <= event.x < end:
                if key:
                    self.app.simulate_key(key)
                else:
                    self.app.bell()
                return


def _pack(items: list[Item], width: int) -> list[list[Item]]:
    """Items on lines of `width` cells (at least one line; the last line takes the rest)."""
    lines: list[list[Item]] = [[]]
    used = 0
    for item in items:
        size = cell_len(item[0]) + 1 + cell_len(item[1])
        gap = 1 if not lines[-1] else 2
        if lines[-1] and used + gap + size > width and len(lines) < MAX_LINES:
            lines.append([])
            used, gap = 0, 1
        lines[-1].append(item)
        used += gap + size
    return lines

"""The key bar: what the keys do here, on one line at the bottom of every screen.

Textual's `Footer` is one widget per key, composed again on every focus change: on the
runs screen that is 16 widgets to mount and style each time, which was half of the
dashboard's start-up (about 100 ms of 200) and a stall on each focus change. The bar is
one widget that renders one line from the same active bindings; a click on a key
presses it, as on the `Footer`.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget

Span = tuple[int, int, str]  # start and end column of a key's label, and the key


class KeyBar(Widget, can_focus=False):
    """The bindings the focused widget, its screen and the app offer now."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"keybar--key", "keybar--description"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
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
        self.refresh()

    def render(self) -> Text:
        """The keys from the left, the command palette's at the right edge."""
        line, self._spans = Text(no_wrap=True, overflow="crop"), []
        for binding, enabled in self._shown():
            self._append(line, binding, enabled, gap=2 if self._spans else 1)
        palette = self._palette()
        if palette is not None:
            label = f"▏{self.app.get_key_display(palette)} {palette.description} "
            keys_width = max(0, self.size.width - len(label))
            line.truncate(keys_width, overflow="crop")  # the palette's key always shows
            self._spans = [span for span in self._spans if span[0] < keys_width]
            line.append(" " * (keys_width - line.cell_len))
            start = line.cell_len
            line.append(label, self.get_component_rich_style("keybar--description"))
            self._spans.append((start, line.cell_len, palette.key))
        return line

    def _append(self, line: Text, binding: Binding, enabled: bool, *, gap: int) -> None:
        line.append(" " * gap)
        start = line.cell_len
        dim = Style() if enabled else Style(dim=True)
        key_style = self.get_component_rich_style("keybar--key") + dim
        line.append(self.app.get_key_display(binding), key_style)
        line.append(" ")
        description = self.get_component_rich_style("keybar--description") + dim
        line.append(binding.description, description)
        self._spans.append((start, line.cell_len, binding.key if enabled else ""))

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
        for start, end, key in self._spans:
            if start <= event.x < end:
                if key:
                    self.app.simulate_key(key)
                else:
                    self.app.bell()
                return

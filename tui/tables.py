"""Tables and lists with the same keys everywhere, kept in step with fresh rows.

`Table`, `ValueTree` and `Choices` are Textual's `DataTable`, `Tree` and `OptionList`
with vi-like keys on every screen: ``j``/``k`` down and up, ``g``/Home the first row,
``G``/End the last row (of what is loaded: the runs table shows one page).

Keeping a table in step with fresh rows without losing the user's place:
When the same rows come back in the same order, only the cells that changed are updated
(no flicker, the cursor does not move). Otherwise the table is rebuilt and the cursor put
back on the row with the same key (a run stays selected while new runs arrive above it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, OptionList, Tree

Rows = Sequence[tuple[str, Sequence[Text]]]
MOVES: Final[list[BindingType]] = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
    Binding("g,home", "first", "First", show=False),
    Binding("G,end", "last", "Last", show=False),
]


class Table(DataTable[Text]):
    """A `DataTable` of literal text with the dashboard's keys."""

    BINDINGS: ClassVar[list[BindingType]] = MOVES

    def action_first(self) -> None:
        """The first row."""
        self.action_scroll_top()

    def action_last(self) -> None:
        """The last row."""
        self.action_scroll_bottom()


class ValueTree(Tree[Any]):
    """A `Tree` (its nodes' data: the JSON value they show) with the dashboard's keys."""

    BINDINGS: ClassVar[list[BindingType]] = MOVES

    def action_first(self) -> None:
        """The first line."""
        self.cursor_line = 0

    def action_last(self) -> None:
        """The last line."""
        self.cursor_line = self.last_line


class Choices(OptionList):
    """An `OptionList` with the dashboard's keys."""

    BINDINGS: ClassVar[list[BindingType]] = MOVES


def sync_rows(table: DataTable[Text], rows: Rows) -> None:
    """Show `rows` (key, cells in column order) in `table`, keeping the cursor's row."""
    keys = [key for key, _ in rows]
    current = [row.key.value for row in table.ordered_rows]
    columns = [column.key for column in table.ordered_columns]
    if keys == current:
        for key, cells in rows:
            for column, cell in zip(columns, cells, strict=False):
                if table.get_cell(key, column) != cell:
                    table.update_cell(key, column, cell, update_width=True)
        return
    selected = selected_key(table)
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def selected_key(table: DataTable[Text]) -> str | None:
    """The key of the row under the cursor, or None when the table is empty."""
    if table.row_count == 0 or not table.is_valid_row_index(table.cursor_row):
        return None
    return table.ordered_rows[table.cursor_row].key.value

"""Keeping a `DataTable` in step with fresh rows without losing the user's place.

When the same rows come back in the same order, only the cells that changed are updated
(no flicker, the cursor does not move). Otherwise the table is rebuilt and the cursor put
back on the row with the same key (a run stays selected while new runs arrive above it).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

Rows = Sequence[tuple[str, Sequence[Text]]]


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

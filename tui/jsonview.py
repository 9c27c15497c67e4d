"""JSON state as a Textual `Tree`, and the difference between two states.

Pure functions over decoded JSON (any value: a damaged checkpoint may decode to a string).
Both are bounded, so a huge state costs a bounded amount of work on each refresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from rich.text import Text
from textual.widgets.tree import TreeNode

from .format import compact_json, join, literal

TREE_BUDGET: Final = 2_000  # nodes added to a tree at most
DIFF_LIMIT: Final = 200  # changes listed at most
_SCALAR_STYLE: Final = {str: "green", bool: "magenta", int: "cyan", float: "cyan"}


def fill_tree(node: TreeNode[Any], value: Any, *, budget: int = TREE_BUDGET) -> int:
    """Add `value`'s members under `node` (objects and arrays expandable); returns nodes left.

    Each node's data is the value it shows (whole, where its label cuts it).
    """
    for key, child in _members(value):
        if budget <= 0:
            node.add_leaf(literal("… (more not shown)", "italic grey50"))
            return 0
        budget -= 1
        label = join(literal(key, "bold"), ": ")
        if isinstance(child, dict | list) and child:
            size = f"{{{len(child)}}}" if isinstance(child, dict) else f"[{len(child)}]"
            branch = node.add(join(label, literal(size, "grey50")), data=child)
            budget = fill_tree(branch, child, budget=budget)
        else:
            node.add_leaf(join(label, scalar_text(child)), data=child)
    return budget


def scalar_text(value: Any) -> Text:
    """A JSON scalar (or an empty container) as one styled, literal line."""
    style = "grey50" if value is None else _SCALAR_STYLE.get(type(value), "")
    return literal(compact_json(value), style, single_line=True, limit=500)


@dataclass(frozen=True)
class Change:
    """One difference between two states, at a dotted path."""

    path: str
    kind: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None


def diff(before: Any, after: Any, *, limit: int = DIFF_LIMIT) -> list[Change]:
    """What changed from `before` to `after`: objects compared key by key, the rest whole."""
    changes: list[Change] = []
    for change in _walk(before, after, ""):
        changes.append(change)
        if len(changes) >= limit:
            break
    return changes


def diff_text(changes: list[Change]) -> Text:
    """Changes as lines: ``+ path: value``, ``- path: value``, ``~ path: old → new``."""
    if not changes:
        return literal("no change", "grey50")
    lines = []
    for change in changes:
        if change.kind == "added":
            lines.append(literal(f"+ {change.path}: {compact_json(change.after, 200)}", "green"))
        elif change.kind == "removed":
            lines.append(literal(f"- {change.path}: {compact_json(change.before, 200)}", "red"))
        else:
            old, new = compact_json(change.before, 100), compact_json(change.after, 100)
            lines.append(literal(f"~ {change.path}: {old} → {new}", "yellow"))
    return Text("\n").join(lines)


def _walk(before: Any, after: Any, path: str) -> Iterator[Change]:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            child = f"{path}.{key}" if path else str(key)
            if key not in after:
                yield Change(child, "removed", before=before[key])
            elif key not in before:
                yield Change(child, "added", after=after[key])
            else:
                yield from _walk(before[key], after[key], child)
    elif not _same(before, after):
        yield Change(path or "(state)", "changed", before, after)


def _same(left: Any, right: Any) -> bool:
    return type(left) is type(right) and left == right


def _members(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        yield from ((str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        yield from ((str(i), v) for i, v in enumerate(value))
    else:
        yield "(value)", value

"""docs/ARCHITECTURE.md names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A line of the tree: indentation, then a file or folder name, then what it is.
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+/|[\w.]+\.py)(?:\s|$)")


def documented() -> set[str]:
    """The paths the tree in docs/ARCHITECTURE.md shows, relative to the repository."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    tree = text.split("## The tree", 1)[1].split("```")[1]
    paths: set[str] = set()
    folders: list[str] = []  # the open folder at each depth
    for line in tree.splitlines():
        match = ENTRY.match(line)
        if match is None:
            continue  # a description continued on the next line
        depth = len(match["indent"]) // 2
        del folders[depth:]
        path = "".join(folders) + match["name"]
        if path.endswith("/"):
            folders.append(match["name"])
        else:
            paths.add(path)
    return paths


def test_the_architecture_page_matches_the_tree() -> None:
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "orchestrator").rglob("*.py")
        if path.name != "__init__.py" or path.parent.name == "orchestrator"
    }
    assert documented() == modules

"""Documentation as test input: the README's fenced code blocks and documented output.

`blocks` finds every fenced block of a Markdown text by position (indented ones inside list
items too); `mismatch` compares what a command printed with the output a document shows,
where ``...`` stands for anything and ids and times are whatever the run made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"^(?P<indent> *)```(?P<info>\S*)\s*$")
# What differs from run to run: run ids (whole or the 8 characters shown) and times.
VARYING = [
    (re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8}(?:[0-9a-f]{24})?\b"), "<id>"),
]
ANY_LINES = "..."


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    number: int
    """1 for the first block of the document."""
    line: int
    """The line of its opening fence (1-based)."""
    info: str
    """Its info string (``python``, ``bash``, ``text``, ...; empty if none)."""
    text: str
    """What it holds, without the fences and the indentation of its list item."""

    @property
    def first(self) -> str:
        """Its first line."""
        return self.text.split("\n", 1)[0]

    def __str__(self) -> str:
        return f"block {self.number} ({self.info or 'no info string'}) at README line {self.line}"


def blocks(markdown: str) -> list[Block]:
    """Every fenced code block of `markdown`, in order."""
    found: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, start = opening["indent"], index
        while lines[index] != f"{indent}```":
            index += 1
        text = "".join(line.removeprefix(indent) + "\n" for line in lines[start:index])
        found.append(Block(len(found) + 1, start, opening["info"], text))
        index += 1
    return found


def normalized(text: str) -> str:
    """`text` with its ids and times replaced by placeholders."""
    for pattern, placeholder in VARYING:
        text = pattern.sub(placeholder, text)
    return text


def mismatch(documented: str, real: str) -> str | None:
    """None if `real` reads as `documented` shows it, else the first line that differs.

    A line ``...`` of `documented` stands for any number of lines, ``...`` within a line
    for any text; ids and times match any id and time.
    """
    want = normalized(documented).rstrip("\n").split("\n")
    got = normalized(real).rstrip("\n").split("\n")
    if _matches(want, got):
        return None
    for line in want:
        if line.strip() != ANY_LINES and not any(_line(line).fullmatch(g) for g in got):
            return f"no line reads {line!r} in:\n{real}"
    return f"the lines are not in the documented order:\n{real}"


def _line(documented: str) -> re.Pattern[str]:
    return re.compile(".*".join(map(re.escape, documented.split(ANY_LINES))))


def _matches(want: list[str], got: list[str]) -> bool:
    if not want:
        return not got
    if want[0].strip() == ANY_LINES:
        return any(_matches(want[1:], got[skip:]) for skip in range(len(got) + 1))
    return bool(got) and bool(_line(want[0]).fullmatch(got[0])) and _matches(want[1:], got[1:])

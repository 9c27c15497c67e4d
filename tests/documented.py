"""Documentation as test input: fenced code blocks, documented output, documented commands.

`blocks` finds every fenced block of a Markdown text by position (indented ones inside list
items too); `mismatch` compares what a command printed with the output a document shows,
where ``...`` stands for anything and ids and times are whatever the run made; `Shell` runs
documented commands as a user does, from a folder standing in for the repository's root.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import EXAMPLES, OUTPUTS
from procs import CLI_TIMEOUT, query, reap

from orchestrator.testing import eventually_blocking

FENCE = re.compile(r"^(?P<indent> *)```(?P<info>\S*)\s*$")
# What differs from run to run: run ids (whole or the 8 characters shown) and times.
VARYING = [
    (re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8}(?:[0-9a-f]{24})?\b"), "<id>"),
]
ANY_LINES = "..."
TIMEOUT = 60.0


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


def section(markdown: str, heading: str) -> list[Block]:
    """The fenced blocks under the line `heading` (``### Title``), up to the next heading."""
    lines, fenced, inside = markdown.splitlines(), False, False
    starts: list[int] = []  # the opening fence's line (1-based) of each block in the section
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            if not fenced and inside:
                starts.append(number)
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            inside = line == heading
    assert heading in lines, f"no heading {heading!r}"
    return [block for block in blocks(markdown) if block.line in starts]


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


class Shell:
    """A folder standing in for the repository's root, with `orchestrator` on PATH.

    Daemons started there (``orchestrator up`` lines) run until `close`, which sends them
    SIGINT, as Ctrl-C does, and returns their exit codes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(EXAMPLES, root / "examples", ignore=OUTPUTS)
        (root / ".venv").symlink_to(sys.prefix)  # for a `source .venv/bin/activate` line
        self.env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_DB"}
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        """Run `line` with bash and wait for it."""
        return subprocess.run(
            ["bash", "-c", line],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )

    def start(self, line: str, out: Path) -> subprocess.Popen[bytes]:
        """Start `line` in the background, its output to `out`."""
        with out.open("ab") as file:
            return subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.root,
                env=self.env,
                stdout=file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def daemon(self, line: str) -> Path:
        """Start the daemon of an ``orchestrator up`` line (once) and wait until it is ready.

        Returns its journal.
        """
        args = shlex.split(line, comments=True)
        db = self.root / (args[args.index("--db") + 1] if "--db" in args else "orchestrator.db")
        log = self.root / "up.log"
        if line not in self.daemons or self.daemons[line].poll() is not None:
            self.daemons[line] = self.start(line, log)
        proc = self.daemons[line]

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{line!r} exited {proc.returncode}:\n{log.read_text()}")
            try:
                return db.exists() and query(db, "SELECT pid, ready FROM lease") == [(proc.pid, 1)]
            except sqlite3.OperationalError:  # a journal still being created
                return False

        eventually_blocking(ready, what=f"the daemon of {line!r} to be ready", timeout=TIMEOUT)
        return db

    def until_first_line(self, line: str) -> None:
        """Run `line` until it printed a line, then Ctrl-C it: it exits 0."""
        out = self.root / "follow.out"
        out.unlink(missing_ok=True)
        proc = self.start(line, out)
        try:
            eventually_blocking(
                lambda: proc.poll() is None and out.exists() and b"\n" in out.read_bytes(),
                what=f"{line!r} to print a line",
                timeout=TIMEOUT,
            )
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=TIMEOUT) == 0, out.read_text()
        finally:
            reap(proc)

    def log(self) -> str:
        """What the daemons started here printed so far."""
        log = self.root / "up.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def close(self) -> dict[str, int]:
        """Ctrl-C every daemon; their exit codes."""
        for proc in self.daemons.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        try:
            return {line: proc.wait(timeout=TIMEOUT) for line, proc in self.daemons.items()}
        finally:
            for proc in self.daemons.values():
                reap(proc)

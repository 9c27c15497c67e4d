"""What the user typed, checked before a command runs: every problem is one line, exit 2.

`Parser` makes argparse's own errors one line like the others (argparse prints its usage
and the error on two or more); `check_text` refuses arguments that are not text (bytes
that are not UTF-8, a NUL). No command code here: `main` owns the commands.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input on the command line: exit 2 with this message (then `more` lines, if any)."""

    def __init__(self, message: str, *more: str) -> None:
        super().__init__(message)
        self.more = more


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other input error.

    A command whose optional positional follows an option (``fork RUN_ID --from STEP
    JSON``) sets `intermixed`: argparse alone leaves such a positional unrecognized.
    """

    intermixed = False
    _mixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, with options and positionals in any order where `intermixed`."""
        if not self.intermixed or self._mixing:
            return super().parse_known_args(args, namespace)
        self._mixing = True  # the intermixed parse calls back in here
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False

    def error(self, message: str) -> NoReturn:
        """Print one line (what is wrong, and where to see the usage), exit 2."""
        from .output import escape

        self.exit(EXIT_USAGE, f"error: {self.prog}: {escape(message)} (see {self.prog} --help)\n")


# How `check_text` names each argument (its metavar, or its option).
_SHOWN = {
    "run_id": "RUN_ID",
    "type": "TYPE",
    "data": "JSON",
    "patch": "JSON",
    "trigger": "TRIGGER",
    "names": "[WORKFLOW] TRIGGER [JSON]",
}


def check_text(args: argparse.Namespace) -> None:
    """Refuse an argument that is not text: undecodable bytes, or a NUL.

    On Linux an argument that is not valid UTF-8 arrives with each bad byte as a lone
    surrogate ("surrogateescape"), which neither SQLite nor JSON can store. File and folder
    arguments (`Path`) may hold any bytes, as file names do.
    """
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue
            problem = _not_text(text)
            if problem is not None:
                raise UsageError(f"{_shown(name, args.command)} {problem}; pass UTF-8 text")
    from_env = os.environ.get("ORCHESTRATOR_DB") if vars(args).get("db", "") is None else None
    problem = None if from_env is None else _not_text(from_env)
    if problem is not None:  # as --db: the journal named in messages must be text
        raise UsageError(f"$ORCHESTRATOR_DB {problem}; set it to UTF-8 text or pass --db")


def _shown(name: str, command: str) -> str:
    if name == "workflow":
        return "--workflow" if command == "runs" else "WORKFLOW"
    return _SHOWN.get(name) or f"--{name.replace('_', '-')}"


def _not_text(text: str) -> str | None:
    for index, char in enumerate(text):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            return f"is not valid UTF-8 (byte 0x{code - 0xDC00:02x} at character {index + 1})"
        if 0xD800 <= code <= 0xDFFF:
            return f"holds a lone surrogate U+{code:04X} at character {index + 1}"
        if code == 0:
            return f"holds a NUL character at character {index + 1}"
    return None


def excerpt(text: str, most: int = 60) -> str:
    """`text` for an error line: its repr, cut to about `most` characters."""
    if len(text) <= most:
        return repr(text)
    return f"{text[:most]!r}... ({len(text)} characters)"

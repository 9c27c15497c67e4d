"""What the dashboard asks of the terminal: the clipboard (OSC 52), and where screenshots go.

Textual copies by writing the OSC 52 escape sequence; tmux drops it unless its
``set-clipboard`` option is on, but forwards it wrapped in a DCS passthrough (with
``allow-passthrough on``). Inside tmux (``$TMUX`` set) the dashboard writes both. Whether a
terminal accepts OSC 52 cannot be known from here, so the notification says "sent", not
"copied", and the value stays readable on screen.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def osc52(text: str) -> str:
    """The OSC 52 sequence that puts `text` on the clipboard (as Textual writes it)."""
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f"\x1b]52;c;{encoded}\a"


def tmux_passthrough(sequence: str) -> str:
    """`sequence` wrapped for tmux to pass to the outer terminal (each ESC doubled)."""
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def in_tmux(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the dashboard runs inside tmux."""
    return bool((os.environ if environ is None else environ).get("TMUX"))


def screenshot_dir(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where to save a screenshot: a folder that exists and is meant for it, else here.

    $XDG_PICTURES_DIR, then ~/Downloads, if it is a folder; else the current folder if it
    can be written; else the temporary directory.
    """
    env = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    candidates = [Path(env["XDG_PICTURES_DIR"])] if env.get("XDG_PICTURES_DIR") else []
    candidates.append(home / "Downloads")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    here = Path.cwd()
    return here if os.access(here, os.W_OK) else Path(tempfile.gettempdir())

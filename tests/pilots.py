"""Helpers for the dashboard's Pilot tests: private journal copies and bounded waits."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from orchestrator.testing import eventually


def copy_journal(source: Path, target: Path) -> None:
    """Copy a seeded journal with SQLite's backup API (consistent, WAL and all)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    target.chmod(0o600)  # as the orchestrator creates it: a loose journal is refused


async def until(pilot: Pilot[Any], check: Callable[[], object], what: str = "") -> None:
    """Let the app run until `check()` is true (bounded, so a bug fails instead of hanging)."""

    async def settled() -> object:
        await pilot.pause()  # the app handles what is pending before each look
        return check()

    await eventually(settled, what=what or repr(check), timeout=10, interval=0.05)

"""Helpers for the dashboard's Pilot tests: private journal copies and bounded waits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot


def copy_journal(source: Path, target: Path) -> None:
    """Copy a seeded journal with SQLite's backup API (consistent, WAL and all)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def until(pilot: Pilot[Any], check: Callable[[], object], what: str = "") -> None:
    """Let the app run until `check()` is true (bounded, so a bug fails instead of hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await pilot.pause(0.05)

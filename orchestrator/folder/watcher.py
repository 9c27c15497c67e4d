"""Watching the workflow folder with watchfiles, to reload its files as they change.

watchfiles waits 1.6 s for changes to settle by default; a saved file should be live well
within a second, so changes are collected for `DEBOUNCE_MS` only. Editors that save by
writing a temporary file and renaming it over the original produce a burst of changes:
the folder is compared as a whole after each burst, so the order of the burst is moot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from .loader import CONFIG_FILE

DEBOUNCE_MS = 50
STEP_MS = 10


def _workflow_related(change: Change, path: str) -> bool:
    name = Path(path).name
    return name.endswith(".py") or name == CONFIG_FILE


async def watch_folder(folder: Path, on_change: Callable[[], Awaitable[None]]) -> None:
    """Call `on_change` after each burst of changes to the folder's files (until cancelled)."""
    async for _ in awatch(
        folder,
        watch_filter=_workflow_related,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        recursive=False,
    ):
        await on_change()

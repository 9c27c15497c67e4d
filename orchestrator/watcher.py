"""Watching folders with watchfiles: workflow files to reload, and new files as events.

watchfiles waits 1.6 s for changes to settle by default; a saved file should be live well
within a second, so changes are collected for `DEBOUNCE_MS` only. Editors that save by
writing a temporary file and renaming it over the original produce a burst of changes:
the folder is compared as a whole after each burst, so the order of the burst is moot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from .loader import CONFIG_FILE

DEBOUNCE_MS = 50
STEP_MS = 10
_log = logging.getLogger("orchestrator.watcher")


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


Emit = Callable[[str, dict[str, Any]], object]


class FileEvents:
    """Turns new files in the folders of `FileTrigger`s into ``file.created`` events."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._watches: dict[Path, set[str]] = {}
        self._changed = asyncio.Event()

    def update(self, watches: dict[Path, set[str]]) -> None:
        """Watch these folders, each for these globs (restarts the watch if it changed)."""
        if watches != self._watches:
            self._watches = {folder: set(globs) for folder, globs in watches.items()}
            self._changed.set()

    async def run(self) -> None:
        """Watch until cancelled, following `update`s."""
        while True:
            self._changed.clear()
            watches = dict(self._watches)
            if not watches:
                await self._changed.wait()
                continue
            for folder in watches:
                folder.mkdir(parents=True, exist_ok=True)
            restart = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._forward(restart))
                async for changes in awatch(
                    *watches,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    recursive=False,
                    stop_event=restart,
                    watch_filter=lambda change, _: change == Change.added,
                ):
                    self._emit_new(watches, {Path(path) for _, path in changes})

    async def _forward(self, restart: asyncio.Event) -> None:
        await self._changed.wait()
        restart.set()

    def _emit_new(self, watches: dict[Path, set[str]], paths: set[Path]) -> None:
        for path in sorted(paths):
            try:
                if not path.is_file():
                    continue
                size = path.stat().st_size
            except OSError:
                continue
            for glob in sorted(watches.get(path.parent, ())):
                # As in a shell, '*' does not match a leading dot (temporary files).
                hidden = path.name.startswith(".") and not glob.startswith(".")
                if fnmatchcase(path.name, glob) and not hidden:
                    data = {"path": str(path), "size": size, "dir": str(path.parent), "glob": glob}
                    self._emit("file.created", data)

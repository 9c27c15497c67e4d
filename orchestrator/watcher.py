"""Watching folders with watchfiles: workflow files to reload, and new files as events.

watchfiles waits 1.6 s for changes to settle by default; a saved file should be live well
within a second, so changes are collected for `DEBOUNCE_MS` only. Editors that save by
writing a temporary file and renaming it over the original produce a burst of changes:
the folder is compared as a whole after each burst, so the order of the burst is moot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase
from pathlib import Path
from stat import S_ISREG
from typing import Any

from watchfiles import Change, awatch

from .loader import CONFIG_FILE

DEBOUNCE_MS = 50
STEP_MS = 10
CATCH_UP_SECONDS = 0.2
REMEMBERED = 10_000  # files already turned into events, to never emit one twice
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
    """Turns new files in the folders of `FileTrigger`s into ``file.created`` events.

    A watch is live a moment after it is requested, and is restarted when the set of
    folders changes; a file that arrives in between is found by a scan shortly after each
    (re)start. Each file (path and inode) becomes one event, however it was found.
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._watches: dict[Path, set[str]] = {}
        self._since: dict[tuple[Path, str], float] = {}  # when each watch was requested
        self._emitted: dict[tuple[str, int, str], None] = {}
        self._changed = asyncio.Event()

    def update(self, watches: dict[Path, set[str]]) -> None:
        """Watch these folders, each for these globs (restarts the watch if it changed)."""
        if watches == self._watches:
            return
        now = time.time()
        self._watches = {folder: set(globs) for folder, globs in watches.items()}
        pairs = {(folder, glob) for folder, globs in watches.items() for glob in globs}
        self._since = {pair: self._since.get(pair, now) for pair in pairs}
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
                tasks.create_task(self._catch_up(watches))
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

    async def _catch_up(self, watches: dict[Path, set[str]]) -> None:
        await asyncio.sleep(CATCH_UP_SECONDS)  # the watch is live by now
        for folder in watches:
            try:
                entries = set(folder.iterdir())
            except OSError as exc:
                _log.warning("cannot list %s for new files: %s", folder, exc)
                continue
            self._emit_new(watches, entries, catch_up=True)

    def _emit_new(
        self, watches: dict[Path, set[str]], paths: set[Path], *, catch_up: bool = False
    ) -> None:
        for path in sorted(paths):
            try:
                stat = path.stat()
            except OSError:
                continue
            if not S_ISREG(stat.st_mode):
                continue
            for glob in sorted(watches.get(path.parent, ())):
                # As in a shell, '*' does not match a leading dot (temporary files).
                hidden = path.name.startswith(".") and not glob.startswith(".")
                key = (str(path), stat.st_ino, glob)
                if hidden or not fnmatchcase(path.name, glob) or key in self._emitted:
                    continue
                # A scan finds only files that arrived since the watch was requested; a
                # rename into the folder keeps the file's mtime but sets its ctime.
                if catch_up and stat.st_ctime < self._since.get((path.parent, glob), 0.0):
                    continue
                self._remember(key)
                data = {"path": str(path), "size": stat.st_size, "dir": str(path.parent)}
                self._emit("file.created", {**data, "glob": glob})

    def _remember(self, key: tuple[str, int, str]) -> None:
        self._emitted[key] = None
        if len(self._emitted) > REMEMBERED:
            del self._emitted[next(iter(self._emitted))]

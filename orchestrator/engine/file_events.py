"""New files in the folders of `FileTrigger`s, as ``file.created`` events, each exactly once.

Which files already were events is journaled in the batch of each event, so neither a
crash nor a restart repeats one, and a file that arrives while the daemon is down, or
before a watch is live, is found by the scan made when a watch starts and every
`RESCAN_SECONDS` after (which also covers any change the watcher missed). A file is known
by its name and inode while it stays: once it is deleted or moved away, a file created
under its name is new. Deletions are seen while watched; a file deleted and created again
with the same inode while the daemon is down is taken for the one that was there.

A file whose name is not UTF-8 cannot be an event (no journal or JSON text holds its
name): it is reported once, escaped, as a load error of its path, and cleared when it
goes. watchfiles ends its watch on such a name, losing that burst; the watch starts again
and its first scan finds what the burst held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from stat import S_ISREG
from typing import Any, Protocol

from watchfiles import Change, awatch

from ..define.model import FILE_CREATED
from ..folder.names import is_text, shown
from ..folder.watcher import DEBOUNCE_MS, STEP_MS
from ..journal import JournalQueries, JournalWriter, ops

FIRST_SCAN_SECONDS = 0.2  # the watch is live by then, so nothing falls between the two
RESCAN_SECONDS = 10.0
RETRY_SECONDS = 2.0  # after a watch failed (its folder cannot be created or read)
UNNAMED = "the file name is not valid UTF-8, so the file starts no run: rename it"
_log = logging.getLogger("orchestrator.files")

Watch = tuple[Path, str]  # a folder and a glob


class FileLedger(Protocol):
    """Where file events go, with the record of which files already were events."""

    async def seen(self, watch: Watch) -> dict[str, int]:
        """Name -> inode of the files in the folder that already were events."""
        ...

    def created(self, watch: Watch, name: str, inode: int, data: dict[str, Any]) -> bool:
        """Accept the event of a new file and record it (atomically); False if stopped."""
        ...

    def gone(self, watch: Watch, name: str) -> None:
        """A file that was an event has left the folder."""
        ...

    def unnamed(self, path: Path, present: bool) -> None:
        """A file whose name is not UTF-8 (so it is no event) appeared, or (False) left."""
        ...


def matches(name: str, glob: str) -> bool:
    """As in a shell, a leading dot (a temporary file) is matched only by a dot."""
    if name.startswith(".") and not glob.startswith("."):
        return False
    return fnmatchcase(name, glob)


class FileEvents:
    """Follows the set of watched folders (`update`) and turns new files into events."""

    def __init__(self, ledger: FileLedger) -> None:
        self._ledger = ledger
        # Invariant: `_watches` holds exactly the (folder, glob) pairs counted in `_counts`.
        self._watches: dict[Path, set[str]] = {}
        self._counts: Counter[Watch] = Counter()
        self._seen: dict[Watch, dict[str, int]] = {}  # loaded from the ledger on first use
        self._changed = asyncio.Event()
        self._failed_at = float("-inf")  # when watchfiles last ended a watch
        self._unnamed: set[Path] = set()  # files whose names are not UTF-8, reported
        # Invariant: True from a change of the watches, or the start of a watch, until the
        # first scan of that watch is over (or the watch failed).
        self._unscanned = False

    @property
    def scan_pending(self) -> bool:
        """Whether a watch is (re)starting and has not scanned its folders yet."""
        return self._unscanned

    def watch(self, watches: Iterable[Watch]) -> None:
        """Watch each folder for its glob, once more (restarts the watch if one is new).

        Watches are counted: one lasts until `unwatch` has been called as often.
        """
        for watch in watches:
            self._counts[watch] += 1
            if self._counts[watch] == 1:
                folder, glob = watch
                # Made now, not when the watch task next runs: a folder a workflow watches
                # exists once it is registered (a failure is the watch's to report).
                with contextlib.suppress(OSError):
                    folder.mkdir(parents=True, exist_ok=True)
                self._watches.setdefault(folder, set()).add(glob)
                self._restart()

    def unwatch(self, watches: Iterable[Watch]) -> None:
        """Undo one `watch` of each (restarts the watch if one is no longer wanted)."""
        for watch in watches:
            if self._counts[watch] <= 0:
                continue
            self._counts[watch] -= 1
            if not self._counts[watch]:
                del self._counts[watch]
                folder, glob = watch
                self._watches[folder].discard(glob)
                if not self._watches[folder]:
                    del self._watches[folder]
                    self._note_unnamed(folder, set(), {})  # its warnings go with it
                self._restart()

    def _restart(self) -> None:
        self._unscanned = bool(self._watches)
        self._changed.set()

    async def run(self) -> None:
        """Watch until cancelled, following `watch` and `unwatch`."""
        while True:
            self._changed.clear()
            watches = {folder: set(globs) for folder, globs in self._watches.items()}
            if not watches:
                await self._changed.wait()
                continue
            try:
                await self._watch(watches)
            except* OSError as failures:
                self._unscanned = False  # nothing scans before the retry
                folders = ", ".join(map(shown, watches))
                for exc in failures.exceptions:
                    _log.error("cannot watch %s for new files: %s", folders, exc)
                await _wait_for(self._changed, RETRY_SECONDS)
            except* Exception as failures:  # noqa: BLE001 - watchfiles' own errors
                await self._watch_failed(watches, failures)

    async def _watch_failed(self, watches: dict[Path, set[str]], failure: BaseException) -> None:
        """The watch ended by an error of watchfiles (a name not UTF-8): watch again.

        The burst it failed on is lost, so the new watch scans its folders at once (as
        every watch does when it starts). It is logged once; a watch that fails again
        within `RETRY_SECONDS` waits that long before it starts again.
        """
        again = time.monotonic() - self._failed_at < RETRY_SECONDS
        log = _log.debug if self._failed_at > float("-inf") else _log.warning
        folders = ", ".join(map(shown, watches))
        log("watching %s for new files failed (%s); watching again", folders, _reason(failure))
        self._failed_at = time.monotonic()
        if again:
            self._unscanned = False  # nothing scans before the retry
            await _wait_for(self._changed, RETRY_SECONDS)

    async def _watch(self, watches: dict[Path, set[str]]) -> None:
        self._unscanned = True
        inodes = {folder: _make_folder(folder) for folder in watches}
        for folder, globs in watches.items():
            for glob in globs:
                if (folder, glob) not in self._seen:
                    self._seen[folder, glob] = await self._ledger.seen((folder, glob))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            helpers = [
                tasks.create_task(self._stop_on_change(stop)),
                tasks.create_task(self._rescan(watches, inodes, stop)),
            ]
            try:
                async for changes in awatch(
                    *watches,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    recursive=False,
                    stop_event=stop,
                    watch_filter=lambda change, _: change != Change.modified,
                ):
                    if any(Path(path) in watches for _, path in changes):
                        stop.set()  # a watched folder itself went away: watch it again
                    self._apply(watches, changes)
            finally:
                for helper in helpers:
                    helper.cancel()

    async def _stop_on_change(self, stop: asyncio.Event) -> None:
        await self._changed.wait()
        stop.set()

    async def _rescan(
        self, watches: dict[Path, set[str]], inodes: dict[Path, int], stop: asyncio.Event
    ) -> None:
        delay = FIRST_SCAN_SECONDS
        while not await _wait_for(stop, delay):
            for folder in watches:
                if _folder_inode(folder) != inodes[folder]:
                    stop.set()  # deleted or replaced: the watch follows the old folder
                    return
                await self._scan(folder, watches[folder])
            self._unscanned = False
            delay = RESCAN_SECONDS

    async def _scan(self, folder: Path, globs: set[str]) -> None:
        # The listing runs in a thread (a big folder must not stall the loop); what it
        # suggests changed is checked again here, since live changes went on meanwhile.
        try:
            names = await asyncio.to_thread(_file_names, folder)
        except OSError as exc:
            _log.warning("cannot list %s for new files: %s", folder, exc)
            return
        self._note_unnamed(folder, globs, names)
        for glob in sorted(globs):
            seen = self._seen[folder, glob]
            for name in [name for name in seen if name not in names]:
                if _regular_file(folder / name) is None:
                    self._forget((folder, glob), name)
            for name, listed_inode in sorted(names.items()):
                # An overlay file system may list another inode than stat gives: stat then.
                if not matches(name, glob) or seen.get(name) == listed_inode:
                    continue
                stat = _regular_file(folder / name)
                if stat is not None and seen.get(name) != stat.st_ino:
                    self._emit((folder, glob), name, stat)

    def _note_unnamed(self, folder: Path, globs: set[str], names: dict[str, int]) -> None:
        """Report each file whose name is not UTF-8 and matches a glob (once), and its leaving."""
        here = {
            folder / name
            for name in names
            if not is_text(str(folder / name)) and any(matches(name, glob) for glob in globs)
        }
        known = {path for path in self._unnamed if path.parent == folder}
        for path in sorted(here - known):
            _log.warning("%s: %s", shown(path), UNNAMED)
            self._ledger.unnamed(path, True)
        for path in sorted(known - here):
            self._ledger.unnamed(path, False)
        self._unnamed = (self._unnamed - known) | here

    def _apply(self, watches: dict[Path, set[str]], changes: set[tuple[Change, str]]) -> None:
        kinds: dict[Path, set[Change]] = {}
        for change, raw in changes:
            kinds.setdefault(Path(raw), set()).add(change)
        for path, changed in sorted(kinds.items()):
            stat = _regular_file(path)
            for glob in sorted(watches.get(path.parent, set())):
                watch, seen = (path.parent, glob), self._seen[path.parent, glob]
                if stat is None:
                    self._forget(watch, path.name)
                    continue
                # Deleted and created again in one burst: a new file, even on the same inode.
                recreated = Change.deleted in changed and Change.added in changed
                if matches(path.name, glob) and (recreated or seen.get(path.name) != stat.st_ino):
                    self._emit(watch, path.name, stat)

    def _emit(self, watch: Watch, name: str, stat: os.stat_result) -> None:
        folder, glob = watch
        if not is_text(str(folder / name)):
            return  # no event can carry its path: the scan reports it (`_note_unnamed`)
        data = {"path": str(folder / name), "size": stat.st_size, "dir": str(folder), "glob": glob}
        if self._ledger.created(watch, name, stat.st_ino, data):
            self._seen[watch][name] = stat.st_ino

    def _forget(self, watch: Watch, name: str) -> None:
        if self._seen[watch].pop(name, None) is not None:
            self._ledger.gone(watch, name)


class JournalFileLedger:
    """The runtime's `FileLedger`: each event and its file's record join one batch."""

    def __init__(
        self,
        writer: JournalWriter,
        reader: JournalQueries,
        emit: Callable[[str, dict[str, Any]], bool],
        now_us: Callable[[], int],
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._emit = emit
        self._now_us = now_us

    async def seen(self, watch: Watch) -> dict[str, int]:
        """The journal's record, once records still being written have committed."""
        await self._writer.flush()
        folder, glob = watch
        return await self._reader.files_seen(str(folder), glob)

    def created(self, watch: Watch, name: str, inode: int, data: dict[str, Any]) -> bool:
        """Route the event; its run, its record and the file's record commit together."""
        folder, glob = watch
        with self._writer.together():
            if not self._emit(FILE_CREATED, data):
                return False
            self._writer.submit([ops.file_seen(str(folder), glob, name, inode, self._now_us())])
        return True

    def gone(self, watch: Watch, name: str) -> None:
        """Record that the name is free again (a file created under it will be new)."""
        folder, glob = watch
        self._writer.submit([ops.file_seen(str(folder), glob, name, None, self._now_us())])

    def unnamed(self, path: Path, present: bool) -> None:
        """Journal it as a load error of that (escaped) path, or clear that error."""
        message = UNNAMED if present else None
        self._writer.submit([ops.load_error(shown(path), None, message, self._now_us())])


def _reason(exc: BaseException) -> str:
    """The first error inside an exception group (watchfiles raises from a task group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return shown(f"{type(exc).__name__}: {exc}")


def _file_names(folder: Path) -> dict[str, int]:
    """Name -> inode as the directory lists it (no stat per file, on most file systems)."""
    with os.scandir(folder) as entries:
        return {entry.name: entry.inode() for entry in entries if entry.is_file()}


def _regular_file(path: Path) -> os.stat_result | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat if S_ISREG(stat.st_mode) else None


def _make_folder(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return folder.stat().st_ino


def _folder_inode(folder: Path) -> int | None:
    try:
        return folder.stat().st_ino
    except OSError:
        return None


async def _wait_for(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` was set within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True

"""Watching the workflow folder with watchfiles, to reload its files as they change.

watchfiles waits 1.6 s for changes to settle by default; a saved file should be live well
within a second, so changes are collected for `DEBOUNCE_MS` only. Editors that save by
writing a temporary file and renaming it over the original produce a burst of changes:
the folder is compared as a whole after each burst, so the order of the burst is moot.

watchfiles raises, and ends its watch, on a change to a file whose name is not UTF-8
(``WatchfilesRustInternalError``), and the other changes of that burst are lost with it.
A failed watch is therefore started again, and the folder compared as a whole once the
new watch is live, so nothing is missed; the failure is logged once per watch.

A watch follows the folder it started on (its inode): a folder renamed away, or removed,
and another put in its place (a deploy that swaps folders), or a symbolic link on the path
made to lead to another folder (a deploy that swaps a link), would go unseen. The folder
the path names is checked every `IDENTITY_SECONDS`; a change ends the watch as a failure
does, and the new watch follows the path again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from .loader import CONFIG_FILE
from .names import shown

DEBOUNCE_MS = 50
STEP_MS = 10
LIVE_SECONDS = 0.2  # a watch started this long ago is live: a sync then misses nothing
RETRY_SECONDS = 2.0  # between restarts of a watch that keeps failing
IDENTITY_SECONDS = 1.0  # between checks that the path still names the folder watched
_log = logging.getLogger("orchestrator.loader")


def _workflow_related(folder: str, change: Change, path: str) -> bool:
    """A change to a workflow file, a helper, the settings, or the folder itself."""
    name = Path(path).name
    return name.endswith(".py") or name == CONFIG_FILE or os.path.abspath(path) == folder


async def watch_folder(folder: Path, on_change: Callable[[], Awaitable[None]]) -> None:
    """Call `on_change` after each burst of changes to the folder's files (until cancelled).

    A watch that fails is started again (at once, or after `RETRY_SECONDS` if it failed
    within them already), and `on_change` is called once the new watch is live.
    """
    failed_at: float | None = None
    while True:
        try:
            await _watch(folder, on_change, resync=failed_at is not None)
        except Exception as exc:  # noqa: BLE001 - watchfiles' own errors; logged, watched again
            again = failed_at is not None and time.monotonic() - failed_at < RETRY_SECONDS
            log = _log.warning if failed_at is None else _log.debug
            log("watching %s failed (%s); watching it again", shown(folder), _reason(exc))
            failed_at = time.monotonic()
            if again:
                await asyncio.sleep(RETRY_SECONDS)


class FolderReplaced(Exception):
    """The folder's path names another folder now, or none: the watch starts again."""


async def _watch(folder: Path, on_change: Callable[[], Awaitable[None]], *, resync: bool) -> None:
    itself = os.path.realpath(folder)  # noqa: ASYNC240 - a few lstat calls
    watched = _identity(Path(itself))  # a link swapped meanwhile is seen as a replacement
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_until_replaced(folder, watched))
        if resync:  # what the failed watch lost: compare the folder once this one is live
            tasks.create_task(_later(LIVE_SECONDS, on_change))
        async for changes in awatch(
            itself,
            watch_filter=functools.partial(_workflow_related, itself),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            recursive=False,
        ):
            await on_change()
            if (Change.deleted, itself) in {(c, os.path.abspath(p)) for c, p in changes}:  # noqa: ASYNC240
                # Removed (its watch ends with it), and maybe made again already: the
                # inode of a new folder may be the old one's, so its identity is no proof.
                raise FolderReplaced("the folder was removed")


def _identity(folder: Path) -> tuple[int, int]:
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


async def _until_replaced(folder: Path, watched: tuple[int, int]) -> None:
    """Raise `FolderReplaced` once `folder` names another folder (a link swapped), or none."""
    while True:
        await asyncio.sleep(IDENTITY_SECONDS)
        try:
            now: tuple[int, int] | None = _identity(folder)
        except OSError:
            now = None
        if now != watched:
            what = "removed" if now is None else "replaced by another folder"
            raise FolderReplaced(f"the folder was {what}")


async def _later(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(seconds)
    await work()


def _reason(exc: BaseException) -> str:
    """The first error inside an exception group (watchfiles raises from a task group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return shown(f"{type(exc).__name__}: {exc}")

"""A journal in one SQLite file: where its writer, readers and commands come from.

Importing this module loads neither asyncio nor aiosqlite: each part is imported when it
is asked for, so the CLI's writing commands start fast.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import JournalPathInvalid

if TYPE_CHECKING:
    from ..faults import FaultPoints
    from ..protocol import JournalWriter, RunTasks, StepJobs, Synchronous
    from .commands import SqliteCommands
    from .reader import JournalReader
    from .views import DashboardQueries
    from .writer import GroupCommitWriter


class SqliteJournal:
    """The SQLite backend of one journal file (`JournalBackend`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def location(self) -> str:
        """The file's path, as given."""
        return str(self.path)

    @property
    def identity(self) -> str:
        """The file's real path (symbolic links resolved), whether or not it exists yet."""
        return os.path.realpath(self.path)

    @property
    def shared(self) -> bool:
        """A file is run by one daemon; a second is refused, never kept standing by."""
        return False

    @cached_property
    def commands(self) -> SqliteCommands:
        """Writes for the CLI and the dashboard, each one short transaction."""
        from .commands import SqliteCommands

        return SqliteCommands(self.path)

    def exists(self) -> bool:
        """Whether the file is there with something in it (an empty file is no journal yet).

        Raises:
            JournalPermissionDenied: A folder on the way may not be searched.
            JournalPathInvalid: The path cannot name a file (too long, a NUL), or names a
                FIFO, a socket or a device: a reader says so, never "no runs".
        """
        from .connection import check_regular, path_error

        try:
            info = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise path_error(self.path, exc, "reach") from exc
        except ValueError as exc:  # a NUL in the path
            raise JournalPathInvalid(f"journal path {self.path!r} cannot be used: {exc}") from exc
        check_regular(self.path, info.st_mode)
        return info.st_size > 0

    def incarnation(self) -> object:
        """The file's device and inode, or None if it is not there (or cannot be reached)."""
        from .connection import file_identity

        return file_identity(self.path)

    def writer(
        self, *, synchronous: Synchronous = "FULL", faults: FaultPoints | None = None
    ) -> GroupCommitWriter:
        """The runtime's group-commit writer on this file, not open yet."""
        from .writer import GroupCommitWriter

        return GroupCommitWriter(self.path, synchronous=synchronous, faults=faults)

    async def open_reader(self) -> JournalReader:
        """A read-only connection to the existing file."""
        from .reader import JournalReader

        return await JournalReader.open(self.path)

    async def open_views(self) -> DashboardQueries:
        """The dashboard's queries over a read-only connection to the existing file."""
        from .views import DashboardQueries

        return DashboardQueries(await self.open_reader())

    def step_jobs(self) -> StepJobs | None:
        """None: a file has no standbys to run steps for its daemon."""
        return None

    def run_tasks(self) -> RunTasks | None:
        """None: a file has no standbys to execute runs for its daemon."""
        return None

    def executor_writer(self, token: str) -> JournalWriter | None:
        """None: a file has no executors."""
        del token
        return None

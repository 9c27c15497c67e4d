"""The dashboard, started by the CLI: the one module of the package that imports `tui`.

Imported only by the commands that show it (`up` on a terminal, `tui`), so every other
command starts without Textual.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from tui.app import DashboardApp

from ..define.env import Redactor
from ..engine.runtime import Runtime
from ..redaction import SECRETS


def show(db: Path, *, read_only: bool) -> None:
    """The dashboard on a journal another process may be running, until it quits.

    It masks on screen the secrets of this process's env, as a runtime started here would
    (the daemon's workflows' own are masked in the journal already, state aside).
    """
    SECRETS.add(Redactor(os.environ).values)  # for the life of this process
    DashboardApp(db, read_only=read_only).run()


def in_daemon(db: Path) -> Callable[[Runtime, asyncio.Event], Awaitable[None]]:
    """The daemon's foreground: the dashboard in its process, until it quits or `stop` is set.

    Quitting the dashboard sets `stop`, which stops the daemon.
    """

    async def foreground(rt: Runtime, stop: asyncio.Event) -> None:
        app = DashboardApp(db, on_quit=stop.set, active_runs=rt.active_runs)

        async def exit_on_stop() -> None:
            await stop.wait()
            app.exit()

        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(exit_on_stop())
            await app.run_async()
            watcher.cancel()

    return foreground

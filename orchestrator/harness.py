"""The test harness: workflow files (or workflows) in a runtime on a temporary journal.

Its public home is `orchestrator.testing` (``from orchestrator.testing import harness``),
which imports this module only when a test asks for it. A file loads as the daemon loads
it from its folder (``orchestrator.toml`` beside it, ``_helper.py`` modules importable,
relative `FileTrigger` folders next to it) and fails with the error the daemon would
report, as a `LoadError` with file and line. Time is a `FakeClock`: nothing waits for
real time, and every action returns once the runtime is idle, so a test reads the
outcome right after the action that caused it. The CLI's ``try`` uses it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .clock import FakeClock, parse_duration, to_datetime
from .define.model import Workflow
from .define.services import Service
from .engine.runtime import Runtime
from .errors import LoadError, OrchestratorError, RunNotFound
from .folder.loader import FolderConfig, LoadedFile, LoadFailed, load_file
from .records import RunInfo, RunResult, TimelineEntry

Source = str | os.PathLike[str] | Workflow
IDLE_TIMEOUT = 10.0


class Harness:
    """A started runtime on a `FakeClock`, with waits built in; made by `harness`.

    `emit`, `invoke`, `resume` and `advance` return once the runtime is idle (see
    `Runtime.idle`): the runs they started or resumed have gone as far as they can
    without more time or another event. Everything else is on `runtime`.
    """

    def __init__(self, runtime: Runtime, clock: FakeClock, timeout: float) -> None:
        self._runtime = runtime
        self._clock = clock
        self._timeout = timeout

    @property
    def runtime(self) -> Runtime:
        """The runtime, for what the harness does not wrap (`abort`, `signal`, `on`, ...)."""
        return self._runtime

    @property
    def clock(self) -> FakeClock:
        """The clock; it moves only by `advance`."""
        return self._clock

    @property
    def now(self) -> datetime:
        """The fake time now (UTC)."""
        return to_datetime(self._clock.now_us())

    @property
    def workflows(self) -> list[str]:
        """The ids of the workflows loaded, sorted."""
        return self._runtime.list_workflows()

    async def emit(self, event_type: str, data: Any = None, *, key: str | None = None) -> str:
        """Emit an event (as ``orchestrator emit`` does); its id, once the runtime is idle."""
        event_id = await self._runtime.emit(event_type, data, key=key)
        await self.idle()
        return event_id

    async def invoke(
        self, workflow_id: str, trigger_id: str, data: Any = None, *, key: str | None = None
    ) -> RunResult:
        """Start a run of a pipeline with `data` as its state; how it ended or paused."""
        result = await self._runtime.invoke(workflow_id, trigger_id, data, key=key)
        await self.idle()
        return result

    async def resume(self, run_id: str, patch: Any = None) -> RunInfo:
        """Resume a paused run (`patch` merged into its state); the run once idle."""
        await self._runtime.resume(run_id, patch)
        await self.idle()
        return await self.run(run_id)

    async def advance(self, by: float | str | timedelta) -> None:
        """Move the clock forward (seconds, ``"90m"``, ``"3d"`` or a `timedelta`).

        Returns once the timers due by then (sleeps, wait timeouts, schedules) have fired
        and what they started has gone as far as it can.
        """
        seconds = by.total_seconds() if isinstance(by, timedelta) else parse_duration(by)
        await self._clock.advance(seconds, timeout=self._timeout)

    async def idle(self) -> None:
        """Wait until the runtime has nothing left to do until something outside happens.

        Raises:
            TimeoutError: A step still runs after the harness's `timeout` (real seconds).
        """
        await self._runtime.idle(self._timeout)

    async def runs(
        self, workflow: str | None = None, *, status: str | None = None
    ) -> list[RunInfo]:
        """The runs (of one workflow, with one status), oldest first."""
        found = await self._runtime.list_runs(status=status, workflow=workflow, limit=-1)
        return found[::-1]

    async def run(self, run_id: str) -> RunInfo:
        """One run as the journal has it now.

        Raises:
            RunNotFound: No such run.
        """
        for workflow_id in self._runtime.list_workflows():  # one indexed read each
            info = await self._runtime.watch(workflow_id, run_id)
            if info is not None:
                return info
        raise RunNotFound(f"no run {run_id!r} of the workflows loaded")

    async def timeline(self, run_id: str) -> list[TimelineEntry]:
        """Everything the run did, in order (what ``orchestrator show`` prints)."""
        return await self._runtime.timeline(run_id)

    async def logs(self, run_id: str, level: str | None = None) -> list[str]:
        """The lines the run's steps logged with ``ctx.log`` (of one level: ``"warning"``)."""
        return [
            entry.message or ""
            for entry in await self._runtime.timeline(run_id)
            if entry.source == "logger" and level in (None, entry.kind)
        ]


@contextlib.asynccontextmanager
async def harness(
    source: Source | Iterable[Source],
    *,
    env: Mapping[str, str] | None = None,
    services: Sequence[Service] = (),
    start: datetime | None = None,
    db: str | os.PathLike[str] | None = None,
    timeout: float = IDLE_TIMEOUT,  # noqa: ASYNC109 - a bound in real time
    isolate: bool = False,
    probe: bool = False,
    grace: float = 10.0,
) -> AsyncIterator[Harness]:
    """Load workflow files or workflows into a runtime on a `FakeClock`; stop it after.

    ``async with harness("workflows/orders.py") as h:`` then ``await h.emit(...)``,
    ``await h.advance("1h")``, ``await h.runs("orders")``.

    Args:
        source: A workflow file, a `Workflow`, or a list of both.
        env: The workflows' environment (``ctx.env``); default empty, so a test does not
            depend on the shell it runs in.
        services: Global services, as for `Runtime`.
        start: The clock's start (an aware datetime); default 2026-01-01 00:00 UTC.
        db: The journal; default a fresh file in a temporary folder, deleted after.
        timeout: Real seconds an action may take to become idle before `TimeoutError`.
        isolate: Run sync steps in worker processes, as ``orchestrator up`` does.
        probe: First import each file in a subprocess, as the daemon does (it catches a
            file that exits or hangs at import, at ~0.2 s a file).
        grace: Real seconds a step still running at the end may take to finish before it
            is cancelled (`Runtime`'s ``shutdown_grace``).

    Raises:
        LoadError: A file did not load; the message has the file, the line and why.
    """
    files, workflows = _split(source)
    if start is not None and start.utcoffset() is None:
        raise ValueError(f"start must be an aware datetime (tzinfo=UTC), got {start!r}")
    clock = FakeClock(start)
    folders = {path.parent for path in files}
    added = _on_path(folders)
    loaded: list[LoadedFile] = []
    try:
        loaded = [await load_path(path, probe=probe) for path in files]
        _check_unique(loaded, workflows)
        with _journal(db) as journal:
            runtime = Runtime(
                journal,
                workflows=workflows,
                env=env or {},
                services=services,
                clock=clock,
                isolate=isolate,
                shutdown_grace=grace,
            )
            async with runtime:
                for file in loaded:
                    await _register(runtime, file)
                yield Harness(runtime, clock, timeout)
    finally:
        _forget(loaded, folders, added)


def _forget(loaded: list[LoadedFile], folders: set[Path], added: list[str]) -> None:
    """Undo the imports: the next harness reads the files and their helpers again."""
    for file in loaded:
        sys.modules.pop(file.module.__name__, None)
    for name, module in list(sys.modules.items()):
        file_name = getattr(module, "__file__", None)
        if file_name and Path(file_name).parent in folders and Path(file_name).stem == name:
            del sys.modules[name]  # a ``_helper.py`` the files imported by name
    for folder in added:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _split(source: Source | Iterable[Source]) -> tuple[list[Path], list[Workflow]]:
    items = [source] if isinstance(source, str | os.PathLike | Workflow) else list(source)
    files, workflows = [], []
    for item in items:
        if isinstance(item, Workflow):
            workflows.append(item)
        elif isinstance(item, str | os.PathLike):
            files.append(Path(item).resolve())
        else:
            raise TypeError(f"harness takes workflow files and Workflows, got {item!r}")
    return files, workflows


def _on_path(folders: set[Path]) -> list[str]:
    """Put the files' folders on ``sys.path`` (their ``_helpers`` import by name)."""
    added = [str(folder) for folder in sorted(folders) if str(folder) not in sys.path]
    for folder in added:
        sys.path.insert(0, folder)
    return added


async def load_path(path: Path, *, probe: bool) -> LoadedFile:
    """Load one workflow file as its folder's daemon would; `LoadError` if it does not."""
    try:
        data = path.read_bytes()  # noqa: ASYNC240 - one small local file
    except OSError as exc:
        raise LoadError(str(path), None, f"cannot read the file: {exc.strerror}") from None
    try:
        config = FolderConfig.read(path.parent)
        return await load_file(path, data, config, probed=probe)
    except LoadFailed as exc:
        raise LoadError(str(path), exc.line, exc.message) from None


def _check_unique(loaded: list[LoadedFile], workflows: list[Workflow]) -> None:
    owners: dict[str, str] = {workflow.id: "the workflows given" for workflow in workflows}
    for file in loaded:
        for workflow, line in file.workflows:
            owner = owners.setdefault(workflow.id, file.source.path.name)
            if owner != file.source.path.name:
                raise LoadError(
                    str(file.source.path),
                    line,
                    f"workflow id {workflow.id!r} is already defined in {owner}; "
                    "rename one of them",
                )


async def _register(runtime: Runtime, file: LoadedFile) -> None:
    """Register a file's workflows as the folder does; `LoadError` as it would report."""
    try:
        await runtime.register_file(file.source, [workflow for workflow, _ in file.workflows])
    except OrchestratorError as exc:
        lines = [line for workflow, line in file.workflows if repr(workflow.id) in str(exc)]
        reason = f"{type(exc).__name__}: {exc}"
        raise LoadError(str(file.source.path), lines[0] if lines else None, reason) from None


@contextlib.contextmanager
def _journal(db: str | os.PathLike[str] | None) -> Iterator[str | os.PathLike[str]]:
    if db is not None:
        yield db
        return
    with tempfile.TemporaryDirectory(prefix="orchestrator-harness-") as folder:
        yield Path(folder) / "journal.db"

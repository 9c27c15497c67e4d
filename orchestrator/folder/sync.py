"""A folder of workflow files, kept in step with the registry.

`WorkflowFolder.sync` compares the folder with what is loaded and loads, reloads or
unloads the files that differ, so a missed or reordered file-system event costs nothing:
the next sync sees the folder as it is. A file that fails keeps its last good version
registered; a workflow id defined in two files stays with the file that loaded first.

The folder is named by the path it was given, and each sync follows that path to the
folder it names now: a deploy that swaps a symbolic link (``ln -sfn release2 tmp && mv -T
tmp current``) is loaded as an edit of every file at once (`WorkflowFolder._follow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..define.model import Workflow
from ..errors import OrchestratorError
from .loader import (
    CONFIG_FILE,
    MODULE_PREFIX,
    FileSource,
    FolderConfig,
    LoadedFile,
    LoadFailed,
    ProbesAhead,
    digest_of,
    load_file,
    module_name,
    read_file,
)
from .names import is_text, shown

_log = logging.getLogger("orchestrator.loader")
UNNAMED = "the file name is not valid UTF-8, so the file is not loaded: rename it"
# A file whose bytes change while it fails to load is being written: read it again (a
# bounded number of times; the watcher reports the next change anyway).
REREADS = 3
UNREADABLE = b"\0unreadable"  # what an unreadable orchestrator.toml compares as
ELSEWHERE = b"\0elsewhere"  # what the settings of a folder left for another compare as


class FolderTarget(Protocol):
    """Where a folder's workflows go (the runtime)."""

    async def register_file(self, source: FileSource, workflows: list[Workflow]) -> None:
        """Register every workflow of one file version, or none (raising why)."""

    async def deregister(self, workflow_id: str) -> None:
        """Stop new runs of a workflow."""

    def report_load(self, path: Path, line: int | None, message: str | None) -> None:
        """Journal a file's load error, or (`message` None) that it loads again."""


@dataclass
class _FileState:
    loaded: str | None = None  # digest of the version registered now
    ids: list[str] = field(default_factory=list)
    failed: str | None = None  # digest of the version that failed last
    clash: bool = False  # it failed because another file owns one of its ids


class WorkflowFolder:
    """The workflow files of one folder and what each registered."""

    def __init__(self, path: Path, target: FolderTarget) -> None:
        self.given = path.absolute()  # as given: a symbolic link is followed at each sync
        self.path = Path(os.path.realpath(self.given))  # the folder it names now
        self._target = target
        self._config = FolderConfig()
        self._config_text: bytes | None = None
        self._files: dict[Path, _FileState] = {}
        self._owner: dict[str, Path] = {}
        self._lock = asyncio.Lock()
        self._freed = False  # an id was given up in this sync: files that clashed retry
        self._helpers: dict[str, str] | None = None  # ``_*.py`` helper files by content
        self._unnamed: set[Path] = set()  # workflow files whose names are not UTF-8

    @property
    def retention(self) -> dict[str, float]:
        """``[retention]`` of the folder's ``orchestrator.toml``: seconds by final status."""
        return dict(self._config.retention)

    def candidates(self) -> list[Path]:
        """The folder's workflow files now (`workflow_files`).

        Files whose names are not UTF-8 are among them: `sync` reports each as a load error.
        """
        return workflow_files(self.path)

    def _refuse_names(self, present: list[Path]) -> list[Path]:
        """The files whose names are valid UTF-8; each other one is a load error (once)."""
        named = [path for path in present if is_text(str(path))]
        unnamed = set(present) - set(named)
        for path in sorted(unnamed - self._unnamed):
            _log.error("%s: %s", shown(path), UNNAMED)
            self._target.report_load(path, None, UNNAMED)
        for path in sorted(self._unnamed - unnamed):
            self._target.report_load(path, None, None)
        self._unnamed = unnamed
        return named

    async def sync(self) -> None:
        """Load what changed, unload what is gone."""
        async with self._lock:
            force = self._follow()
            force = self._read_config() or force
            force = self._refresh_helpers() or force
            present = self._refuse_names(self.candidates())
            for gone in [p for p in self._files if p not in present]:
                await self._unload(gone)
            contents = _contents(present)
            ahead = await self._probe_ahead(contents, force=force)
            for path in present:
                await self._sync_file(path, force=force, ahead=ahead, data=contents.get(path))
            if self._freed:
                self._freed = False
                await self._retry_clashes(present)

    def _follow(self) -> bool:
        """Follow the path given to the folder it names now; True if that is another one.

        Each file's state moves to the file of the same name there, so that file is a new
        version of the one loaded, by the rules of an edit (every file loads again, and one
        that fails keeps its last good version registered); a file the new folder lacks is
        unloaded as a removed one. What was reported of the old folder's files is withdrawn:
        the new folder's errors are reported under its own paths. A path that names no
        folder now (a link made again, a folder removed) is followed once it does.
        """
        now = Path(os.path.realpath(self.given))
        if now == self.path or not now.is_dir():
            return False
        old, self.path = self.path, now
        _log.info("%s now names %s (was %s): loading it", shown(self.given), shown(now), shown(old))
        for path, state in self._files.items():
            if state.failed is not None or state.clash:
                self._target.report_load(path, None, None)
            state.failed, state.clash = None, False
        for path in self._unnamed:
            self._target.report_load(path, None, None)
        self._unnamed = set()
        self._target.report_load(old / CONFIG_FILE, None, None)
        self._config_text = ELSEWHERE  # read again, and compared with the settings in force
        self._files = {now / path.name: state for path, state in self._files.items()}
        self._owner = {workflow_id: now / p.name for workflow_id, p in self._owner.items()}
        with contextlib.suppress(ValueError):
            sys.path.remove(str(old))
        _forget_helpers(old)
        self._helpers = None
        return True

    def _refresh_helpers(self) -> bool:
        """Make ``_*.py`` helpers importable; True if one changed (every file loads again).

        Workflow files import them by name (``from _shared import notify``), so the folder
        is on ``sys.path``. A changed helper is dropped from ``sys.modules`` so the next
        import reads it again; runs in progress keep the helper code they started with.
        """
        folder = str(self.path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        helpers = {}
        for path in sorted(self.path.glob("_*.py")):
            try:
                helpers[path.name] = digest_of(read_file(path))
            except OSError:
                continue
        if helpers == self._helpers:
            return False
        first, self._helpers = self._helpers is None, helpers
        _forget_helpers(self.path)
        return not first

    def _read_config(self) -> bool:
        """Read ``orchestrator.toml``; True if it changed (every file loads again)."""
        config_path = self.path / CONFIG_FILE
        try:
            text: bytes | None = read_file(config_path)
        except FileNotFoundError:
            text = None
        except OSError:  # unreadable, a FIFO...: `FolderConfig.read` says why, once
            text = UNREADABLE
        if text == self._config_text:
            return False
        try:
            config = FolderConfig.read(self.path)
        except LoadFailed as exc:
            _log.error("%s: %s; the previous settings stay", config_path, exc.message)
            self._target.report_load(config_path, exc.line, exc.message)
            self._config_text = text
            return False
        self._target.report_load(config_path, None, None)
        # Retention is read by the runtime as it prunes: no file loads again for it.
        changed = dataclasses.replace(config, retention={}) != dataclasses.replace(
            self._config, retention={}
        )
        self._config, self._config_text = config, text
        return changed

    async def _probe_ahead(self, contents: dict[Path, bytes], *, force: bool) -> ProbesAhead | None:
        """Probe every file this sync will load at once (when there are several)."""
        files = {
            path: data
            for path, data in contents.items()
            if self._wanted(self._files.get(path, _FileState()), digest_of(data), force)
        }
        if len(files) < 2:
            return None
        ahead = ProbesAhead(self._config)
        await ahead.run(files)
        return ahead

    @staticmethod
    def _wanted(state: _FileState, digest: str, force: bool) -> bool:
        """Whether this version of a file is to be loaded now."""
        if force:
            return True
        return digest not in (state.loaded, state.failed)

    async def _sync_file(
        self,
        path: Path,
        *,
        force: bool = False,
        ahead: ProbesAhead | None = None,
        data: bytes | None = None,
    ) -> None:
        """Load the file if its bytes (`data`, else read now) are a version to load."""
        state = self._files.setdefault(path, _FileState())
        for _ in range(REREADS):
            if data is None:
                try:
                    data = read_file(path)
                except OSError as exc:
                    await self._unreadable(path, state, exc)
                    return
            digest = digest_of(data)
            if not force and digest == state.loaded:
                self._clear_failure(path, state)
                return
            if not self._wanted(state, digest, force):
                return
            try:
                loaded = await load_file(path, data, self._config, ahead)
                await self._register(path, state, loaded)
            except LoadFailed as exc:
                if (data := _changed_since(path, data)) is not None:
                    continue
                self._fail(path, state, digest, exc)
            return

    async def _unreadable(self, path: Path, state: _FileState, exc: OSError) -> None:
        """A file gone since the listing is unloaded; one that cannot be read is an error.

        A FIFO, a symbolic link that loops or leads nowhere, a file without read
        permission: reported once (as its last good version, if any, stays registered).
        """
        dangling = isinstance(exc, FileNotFoundError) and os.path.lexists(path)  # noqa: ASYNC240
        if isinstance(exc, FileNotFoundError) and not dangling:
            await self._unload(path)
            return
        reason = "a symbolic link to nothing" if dangling else (exc.strerror or str(exc))
        unreadable = f"unreadable: {reason}"  # stands for its digest: reported once
        if state.failed != unreadable:
            self._fail(path, state, unreadable, LoadFailed(f"cannot read the file: {reason}"))

    async def _register(self, path: Path, state: _FileState, loaded: LoadedFile) -> None:
        for workflow, line in loaded.workflows:
            owner = self._owner.get(workflow.id)
            if owner is not None and owner != path:
                state.clash = True
                raise LoadFailed(
                    f"workflow id {workflow.id!r} is already defined in {owner.name}; "
                    "rename one of them",
                    line,
                )
        state.clash = False
        try:
            await self._target.register_file(
                loaded.source, [workflow for workflow, _ in loaded.workflows]
            )
        except OrchestratorError as exc:
            sys.modules.pop(loaded.module.__name__, None)
            raise LoadFailed(f"{type(exc).__name__}: {exc}", _line_of(exc, loaded)) from None
        ids = [workflow.id for workflow, _ in loaded.workflows]
        kept = set(ids)
        for dropped in [i for i in state.ids if i not in kept]:
            await self._drop(dropped)
        if state.loaded is not None and state.loaded != loaded.digest:
            sys.modules.pop(module_name(path, state.loaded), None)
        state.loaded, state.ids = loaded.digest, ids
        for workflow_id in ids:
            self._owner[workflow_id] = path
        self._clear_failure(path, state)
        _log.info("loaded %s (version %s): %s", path.name, loaded.digest, ", ".join(ids))

    def _fail(self, path: Path, state: _FileState, digest: str, exc: LoadFailed) -> None:
        state.failed = digest
        where = f"{path}:{exc.line}" if exc.line else str(path)
        kept = " (its last good version stays registered)" if state.loaded else ""
        _log.error("%s: %s%s", where, exc.message, kept)
        self._target.report_load(path, exc.line, exc.message)

    def _clear_failure(self, path: Path, state: _FileState) -> None:
        if state.failed is not None or state.clash:
            state.failed, state.clash = None, False
            self._target.report_load(path, None, None)

    async def _unload(self, path: Path) -> None:
        state = self._files.pop(path, None)
        if state is None:
            return
        for workflow_id in state.ids:
            await self._drop(workflow_id)
        if state.loaded is not None:
            sys.modules.pop(module_name(path, state.loaded), None)
            _log.info("unloaded %s: %s", path.name, ", ".join(state.ids) or "nothing")
        if state.failed is not None or state.clash:
            self._target.report_load(path, None, None)

    async def _drop(self, workflow_id: str) -> None:
        self._owner.pop(workflow_id, None)
        self._freed = True
        await self._target.deregister(workflow_id)

    async def _retry_clashes(self, present: list[Path]) -> None:
        """A file that clashed loads once the id it wanted is free."""
        for path in present:
            state = self._files.get(path)
            if state is not None and state.clash:
                await self._sync_file(path, force=True)


def _forget_helpers(folder: Path) -> None:
    """Drop the helpers imported from `folder` from ``sys.modules``, to be read again.

    Runs in progress keep the helper code they started with.
    """
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).parent == folder and not name.startswith(MODULE_PREFIX):
            del sys.modules[name]


def _contents(paths: list[Path]) -> dict[Path, bytes]:
    """Each file's bytes, read once per sync (unreadable ones are left out)."""
    contents = {}
    for path in paths:
        with contextlib.suppress(OSError):
            contents[path] = read_file(path)
    return contents


def _changed_since(path: Path, data: bytes) -> bytes | None:
    """The file's bytes now if they are not `data` (it is being written), else None."""
    try:
        now = read_file(path)
    except OSError:
        return None
    return now if now != data else None


def _line_of(exc: OrchestratorError, loaded: LoadedFile) -> int | None:
    message = str(exc)
    for workflow, line in loaded.workflows:
        if repr(workflow.id) in message:
            return line
    return None


def workflow_files(folder: Path) -> list[Path]:
    """A folder's workflow files now, sorted: ``*.py`` not starting with ``_`` or ``.``."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    # Anything but a folder: a FIFO or a broken symbolic link named x.py is a load error.
    return [
        p
        for p in entries
        if p.suffix == ".py" and not p.name.startswith(("_", ".")) and not p.is_dir()
    ]

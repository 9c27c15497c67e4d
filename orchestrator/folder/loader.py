"""Loading one workflow file: check it, probe it in a subprocess, then import it here.

A file is read once as bytes; everything after works on those bytes, so a file changed
while loading is loaded as it was read. Its module is named after its content hash, so two
versions of one file never share a module. A file that hangs or exits at import would take
the daemon with it, so it is first executed in a short-lived subprocess with a time limit
(best effort: the import runs twice, and a file that behaves differently the second time
is not caught).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import errno
import functools
import gc
import hashlib
import json
import linecache
import logging
import os
import signal
import stat
import sys
import threading
import tomllib
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clock import parse_duration
from ..define.model import Workflow
from ..pipeline.sources import ImportGuard
from ..pipeline.validation import TOO_DEEP, ImportPolicy, check_source
from ..records import FINAL_STATUSES
from .names import shown

_log = logging.getLogger("orchestrator.loader")
CONFIG_FILE = "orchestrator.toml"
MODULE_PREFIX = "orchestrator_workflows"
DEFAULT_PROBE_TIMEOUT = 5.0
# A file of 10,000 workflows is about 1.5 MB. Past this, parsing alone would hold the
# daemon's event loop for seconds (a 20 MB list literal: 19 s and 2 GB).
MAX_FILE_BYTES = 10 * 1024 * 1024
PARALLEL_PROBES = min(8, os.cpu_count() or 1)


class LoadFailed(Exception):
    """A file did not load: why, and at which line when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class FolderConfig:
    """A folder's ``orchestrator.toml``: the import policy and the probe's time limit.

    ``[imports] restrict = true`` opts the folder into the import policy of pipeline
    source text (the default block list; ``allow`` and ``block`` as for ``run``).
    ``[steps] isolate = true`` (or ``false``) runs its workflows' sync steps in worker
    processes (or threads) unless a workflow or step says otherwise.
    """

    restrict_imports: bool = False
    allow: list[str] | None = None
    block: list[str] = field(default_factory=list)
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT
    isolate: bool | None = None
    retention: dict[str, float] = field(default_factory=dict)
    """``[retention]``: seconds to keep final runs, by status or ``default``."""

    @functools.cached_property
    def policy(self) -> ImportPolicy | None:
        """The import policy, or None when the folder does not restrict imports (built once)."""
        if not self.restrict_imports:
            return None
        return ImportPolicy.build(allow=self.allow, block=self.block)

    @classmethod
    def read(cls, folder: Path) -> FolderConfig:
        """The folder's configuration (defaults without a file); `LoadFailed` if invalid."""
        path = folder / CONFIG_FILE
        try:
            data = tomllib.loads(read_file(path).decode("utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            raise LoadFailed(f"cannot read {CONFIG_FILE}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise LoadFailed(f"{CONFIG_FILE} is not valid TOML: {exc}") from None
        return cls._from_toml(data)

    @classmethod
    def _from_toml(cls, data: dict[str, Any]) -> FolderConfig:
        unknown = set(data) - {"imports", "probe_timeout", "steps", "retention"}
        imports, steps = data.get("imports", {}), data.get("steps", {})
        if (
            unknown
            or not isinstance(imports, dict)
            or not isinstance(steps, dict)
            or set(steps) - {"isolate"}
        ):
            raise LoadFailed(
                f"{CONFIG_FILE}: unknown settings {sorted(unknown)}; expected [imports] "
                "(restrict, allow, block), [steps] (isolate), [retention] and probe_timeout"
            )
        retention = _retention(data.get("retention", {}))
        isolate = steps.get("isolate")
        if isolate is not None and not isinstance(isolate, bool):
            raise LoadFailed(f"{CONFIG_FILE}: steps.isolate must be true or false")
        restrict, allow, block = (
            imports.get("restrict", False),
            imports.get("allow"),
            imports.get("block", []),
        )
        timeout = data.get("probe_timeout", DEFAULT_PROBE_TIMEOUT)
        if not isinstance(restrict, bool):
            raise LoadFailed(f"{CONFIG_FILE}: imports.restrict must be true or false")
        if not _string_list(block) or (allow is not None and not _string_list(allow)):
            raise LoadFailed(
                f"{CONFIG_FILE}: imports.allow and imports.block take lists of strings"
            )
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise LoadFailed(f"{CONFIG_FILE}: probe_timeout must be a number of seconds > 0")
        config = cls(restrict, allow, block, float(timeout), isolate, retention)
        try:
            _ = config.policy
        except Exception as exc:  # noqa: BLE001 - a bad pattern: say which
            raise LoadFailed(f"{CONFIG_FILE}: {exc}") from None
        return config


def _retention(table: object) -> dict[str, float]:
    """``[retention]``: a duration per final status (or ``default``), in seconds."""
    if not isinstance(table, dict):
        raise LoadFailed(f"{CONFIG_FILE}: [retention] must be a table of durations")
    known = sorted(str(status) for status in FINAL_STATUSES)
    unknown = sorted(set(table) - {*known, "default"})
    if unknown:
        raise LoadFailed(
            f"{CONFIG_FILE}: [retention] has unknown keys {unknown}; "
            f"expected final statuses ({', '.join(known)}) or default"
        )
    seconds: dict[str, float] = {}
    for status, value in table.items():
        try:
            seconds[status] = parse_duration(value)
        except ValueError as exc:
            raise LoadFailed(f"{CONFIG_FILE}: retention.{status}: {exc}") from None
    return seconds


def read_file(path: Path) -> bytes:
    """A regular file's bytes (at most `MAX_FILE_BYTES` + 1); `OSError` for anything else.

    Opened without blocking: a FIFO named ``x.py`` (or one swapped in after the folder was
    listed) would otherwise block the daemon until something writes to it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(fd, "rb") as file:
        return file.read(MAX_FILE_BYTES + 1)  # enough for `decode` to refuse it


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@dataclass(frozen=True)
class FileSource:
    """One version of a workflow file, as read: what a worker process loads it from."""

    path: Path
    digest: str
    text: str = field(repr=False)
    config: FolderConfig

    def load(self) -> dict[str, Workflow]:
        """Import this version here, without a probe (a worker process is its own probe)."""
        sys.path.insert(0, str(self.path.parent))  # helpers (`_*.py`) import by name
        tree = check(self.text, self.path, self.config.policy)
        module = execute(self.path, self.digest, self.text, tree, self.config.policy)
        return {workflow.id: workflow for workflow, _ in workflows_of(module, tree)}


@dataclass(frozen=True)
class LoadedFile:
    """A file that loaded: its content hash and its workflows, each with its line."""

    source: FileSource
    workflows: list[tuple[Workflow, int | None]]
    module: types.ModuleType = field(repr=False)

    @property
    def digest(self) -> str:
        """The content hash of the version that loaded."""
        return self.source.digest


def digest_of(data: bytes) -> str:
    """The content hash that names a file's version."""
    return hashlib.sha256(data).hexdigest()[:12]


def module_name(path: Path, digest: str) -> str:
    """The module a version of a file is imported as."""
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"{MODULE_PREFIX}.{stem}_{digest}"


async def load_file(
    path: Path,
    data: bytes,
    config: FolderConfig,
    ahead: ProbesAhead | None = None,
    *,
    probed: bool = True,
) -> LoadedFile:
    """Check, probe and import one version of a file; `LoadFailed` says why it did not load.

    With `ahead`, a probe it already made of these bytes is used instead of a new one.
    With `probed` False there is no probe: the test harness imports the file under test
    in its own process, as a test imports the code it tests.
    """
    digest = digest_of(data)
    proc = None
    if probed and (ahead is None or not ahead.passed(path, digest)):
        # The probe starts Python while this process checks the file (1,000 workflows
        # take about 0.1 s to parse); it is killed if the check fails.
        proc = await _start_probe(path, config)
    try:
        source = decode(data)
        tree = check(source, path, config.policy)
        if proc is not None:
            await _finish_probe(proc, data, config)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
    module = execute(path, digest, source, tree, config.policy)
    return LoadedFile(FileSource(path, digest, source, config), workflows_of(module, tree), module)


class ProbesAhead:
    """Probes of several files at once, made before their imports (which stay in order).

    A probe is a subprocess that spends most of its ~0.1 s starting Python and importing
    the orchestrator, so the files are split into `PARALLEL_PROBES` batches, each probed
    in one subprocess, file after file. A batch that a file ends (it exits or hangs) or
    whose report cannot be read leaves its files not reported yet to single probes, so
    each file's outcome is what its own probe would say.
    """

    def __init__(self, config: FolderConfig) -> None:
        self._config = config
        self._outcomes: dict[tuple[Path, str], LoadFailed | None] = {}

    async def run(self, files: dict[Path, bytes]) -> None:
        """Probe each file that passes its checks, in `PARALLEL_PROBES` batches."""
        checked = []
        for path, data in files.items():
            try:
                check(decode(data), path, self._config.policy)
            except LoadFailed:
                continue  # the load reports it, without a probe
            checked.append((path, data))
        batches = [checked[i::PARALLEL_PROBES] for i in range(PARALLEL_PROBES)]
        async with asyncio.TaskGroup() as tasks:
            for batch in batches:
                if batch:
                    tasks.create_task(self._run_batch(batch))

    async def _run_batch(self, batch: list[tuple[Path, bytes]]) -> None:
        reported = await _probe_batch(batch, self._config) if len(batch) > 1 else {}
        for index, (path, data) in enumerate(batch):
            outcome = reported.get(index, _UNREPORTED)
            if outcome is _UNREPORTED:
                try:
                    await probe(path, data, self._config)
                    outcome = None
                except LoadFailed as exc:
                    outcome = exc
            self._outcomes[path, digest_of(data)] = outcome

    def passed(self, path: Path, digest: str) -> bool:
        """True if these bytes were probed and passed; `LoadFailed` if they failed."""
        if (path, digest) not in self._outcomes:
            return False
        outcome = self._outcomes.pop((path, digest))
        if outcome is not None:
            raise LoadFailed(outcome.message, outcome.line)
        return True


def decode(data: bytes) -> str:
    """The file's text; `LoadFailed` if it is too large or not UTF-8."""
    if len(data) > MAX_FILE_BYTES:
        raise LoadFailed(
            f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB, too large for a "
            "workflow file: keep data in a file of its own and read it in a step"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadFailed(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def check(source: str, path: Path, policy: ImportPolicy | None) -> ast.Module:
    """Parse the file (and check its imports under a policy) without running any of it."""
    if policy is not None:
        from ..errors import ValidationError

        try:
            return check_source(source, policy, filename=str(path))
        except ValidationError as exc:
            raise LoadFailed(_strip_location(str(exc), path), exc.line) from None
    try:
        return ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise LoadFailed(f"syntax error: {exc.msg}", exc.lineno) from None
    except (RecursionError, MemoryError):  # `1+1+...` a million times: Python's own limit
        raise LoadFailed(TOO_DEEP) from None


def _strip_location(message: str, path: Path) -> str:
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith(str(path)) else message


def execute(
    path: Path, digest: str, source: str, tree: ast.Module, policy: ImportPolicy | None
) -> types.ModuleType:
    """Run the file's code as a fresh module; `LoadFailed` names the line that raised."""
    name = module_name(path, digest)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    if policy is not None:
        module.__dict__["__builtins__"] = ImportGuard(policy, None).builtins
    # Tracebacks and `inspect.getsource` show this version, even after the file changes.
    lines = source.splitlines(keepends=True)
    linecache.cache[str(path)] = (len(source), None, lines, str(path))
    sys.modules.setdefault(MODULE_PREFIX, types.ModuleType(MODULE_PREFIX))
    sys.modules[name] = module  # dataclasses and pickle look modules up by name
    try:
        with _process_kept(path), _signals_kept(path):
            exec(compile(tree, str(path), "exec"), module.__dict__)
    except SystemExit as exc:
        sys.modules.pop(name, None)
        line = _line_in(exc, path)
        raise LoadFailed(f"the file called sys.exit({exc.code!r}) at import", line) from None
    except Exception as exc:  # noqa: BLE001 - whatever user code raises is its load error
        sys.modules.pop(name, None)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise LoadFailed(text, _line_in(exc, path)) from None
    return module


# What a file's import may not change in the process importing it: the daemon stops on
# SIGINT/SIGTERM, and its subprocesses are reaped by waiting for them (SIGCHLD).
KEPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)


@contextlib.contextmanager
def _signals_kept(path: Path) -> Iterator[None]:
    """Put back the handlers of `KEPT_SIGNALS` that the import of `path` changed."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers: an import elsewhere changes none
        return
    before = {sig: signal.getsignal(sig) for sig in KEPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None and signal.getsignal(sig) != handler:
                signal.signal(sig, handler)
                _log.warning(
                    "%s: the file set a handler for %s at import; the daemon's is kept",
                    shown(path),
                    sig.name,
                )


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed
        return None


def _set_gc(enabled: object) -> None:
    (gc.enable if enabled else gc.disable)()


# The process's own settings a file's import may not change (name, get, set): the daemon
# tunes some, and the others would break it (a recursion limit of 50, logging disabled,
# another working directory for its relative paths).
_SETTINGS: tuple[tuple[str, Callable[[], Any], Callable[[Any], object]], ...] = (
    ("the recursion limit", sys.getrecursionlimit, sys.setrecursionlimit),
    ("the thread switch interval", sys.getswitchinterval, sys.setswitchinterval),
    ("the garbage collector's thresholds", gc.get_threshold, lambda t: gc.set_threshold(*t)),
    ("whether the garbage collector runs", gc.isenabled, _set_gc),
    ("the logging level disabled", lambda: logging.root.manager.disable, logging.disable),
    ("the working directory", _cwd, os.chdir),
)


@contextlib.contextmanager
def _process_kept(path: Path) -> Iterator[None]:
    """Put back the `_SETTINGS` the import of `path` changed, and what it took off sys.path.

    Entries it added to ``sys.path`` stay (its steps may import from them later).
    """
    before = [(name, get(), get, put) for name, get, put in _SETTINGS]
    entries = list(sys.path)
    stdin, nothing = sys.stdin, open(os.devnull)  # noqa: SIM115 - closed below
    sys.stdin = nothing  # an import reading stdin gets nothing: it must not wait on a terminal
    try:
        yield
    finally:
        nothing.close()
        sys.stdin = stdin
        changed = [name for name, value, get, _ in before if value is not None and get() != value]
        for name, value, _, put in before:  # all put back first: logging may be off
            if name in changed:
                with contextlib.suppress(OSError, ValueError):
                    put(value)
        for name in changed:
            _log.warning(
                "%s: the file changed %s at import; the daemon's is kept", shown(path), name
            )
        missing = [entry for entry in entries if entry not in sys.path]
        if missing:
            sys.path.extend(missing)
            _log.warning(
                "%s: the file took entries off sys.path at import; they are put back",
                shown(path),
            )


def _line_in(exc: BaseException, path: Path) -> int | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return frames[-1].lineno if frames else getattr(exc, "line", None)


def workflows_of(module: types.ModuleType, tree: ast.Module) -> list[tuple[Workflow, int | None]]:
    """The module-level workflows, each with the line of the assignment that binds it."""
    lines = _assignment_lines(tree)
    found: dict[int, tuple[Workflow, int | None]] = {}
    for name, value in vars(module).items():
        if isinstance(value, Workflow) and id(value) not in found:
            found[id(value)] = (value, lines.get(name))
    workflows = sorted(found.values(), key=lambda item: item[1] or 0)
    if not workflows:
        raise LoadFailed(
            "the file defines no module-level Workflow (name helper modules _like_this.py)"
        )
    seen: dict[str, int | None] = {}
    for workflow, line in workflows:
        if workflow.id in seen:
            raise LoadFailed(
                f"workflow id {workflow.id!r} is defined twice in this file "
                f"(lines {seen[workflow.id]} and {line})",
                line,
            )
        seen[workflow.id] = line
    return workflows


def _assignment_lines(tree: ast.Module) -> dict[str, int]:
    lines: dict[str, int] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                lines[target.id] = node.lineno
    return lines


# -- the probe ------------------------------------------------------------------------------


async def probe(path: Path, data: bytes, config: FolderConfig) -> None:
    """Import the file once in a subprocess; `LoadFailed` if it fails, exits or hangs.

    The probe gets the folder's settings from here, not from ``orchestrator.toml``: the
    file is checked under the settings it is loaded with (an invalid or newer
    ``orchestrator.toml`` is not the probe's business).
    """
    await _finish_probe(await _start_probe(path, config), data, config)


async def _start_probe(path: Path, config: FolderConfig) -> asyncio.subprocess.Process:
    """The probe subprocess of one file, started; it reads the file's bytes from stdin."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.folder.probe",
        str(path),
        json.dumps(dataclasses.asdict(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so a timeout kills whatever the import started too
    )


async def _finish_probe(
    proc: asyncio.subprocess.Process, data: bytes, config: FolderConfig
) -> None:
    """Send a started probe the file, read its report; `LoadFailed` if it failed or hung."""
    limit = config.probe_timeout
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate(data)
    except TimeoutError:
        raise LoadFailed(
            f"importing the file did not finish within {limit:g} s (a loop or a blocking "
            "call at import time?); set probe_timeout in orchestrator.toml if it needs longer"
        ) from None
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
    _check_probe_report(out, err, proc.returncode)


_UNREPORTED = LoadFailed("not reported by its batch")


async def _probe_batch(
    batch: list[tuple[Path, bytes]], config: FolderConfig
) -> dict[int, LoadFailed | None]:
    """Probe files in one subprocess; the outcome of each file it reported, by index."""
    listing = json.dumps([[str(path), len(data)] for path, data in batch]).encode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.folder.probe",
        "--batch",
        json.dumps(dataclasses.asdict(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # so a kill ends whatever the imports started too
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    async def feed() -> None:  # while the reports are read: neither pipe fills up
        stdin.write(listing + b"\n" + b"".join(data for _, data in batch))
        with contextlib.suppress(OSError):  # it may have ended: what it reported counts
            await stdin.drain()
            stdin.close()

    feeding = asyncio.ensure_future(feed())
    reported: dict[int, LoadFailed | None] = {}
    try:
        while len(reported) < len(batch):
            async with asyncio.timeout(config.probe_timeout):
                line = await proc.stdout.readline()
            report = json.loads(line) if line.startswith(b"{") else None
            if not isinstance(report, dict) or report.get("index") != len(reported):
                break  # it ended, or printed what is not its report: the rest alone
            line_no = report.get("line")
            reported[len(reported)] = (
                None
                if report.get("ok")
                else LoadFailed(
                    str(report.get("message")), line_no if isinstance(line_no, int) else None
                )
            )
    except (TimeoutError, ValueError):
        pass  # a file hung, or a report was cut: the files after it are probed alone
    finally:
        feeding.cancel()
        if proc.returncode is None:
            _kill_group(proc.pid)
        await proc.wait()
        await asyncio.wait([feeding])
        if not feeding.cancelled():
            feeding.exception()  # a batch that ended early is not an error here
    return reported


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _check_probe_report(out: bytes, err: bytes, returncode: int | None) -> None:
    report: dict[str, Any] | None = None
    with contextlib.suppress(ValueError):
        last = out.strip().splitlines()[-1] if out.strip() else b""
        parsed = json.loads(last) if last else None
        report = parsed if isinstance(parsed, dict) else None
    if report is None:
        detail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise LoadFailed(
            f"the file ended the process at import (exit code {returncode})"
            + (f": {detail[0]}" if detail[0] else "")
        )
    if not report.get("ok"):
        line = report.get("line")
        raise LoadFailed(str(report.get("message")), line if isinstance(line, int) else None)

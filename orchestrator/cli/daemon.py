"""`orchestrator up`: a runtime over a folder of workflow files, until SIGINT or SIGTERM.

The daemon is a `Runtime` with `workflows_dir`, plus what a long-running process needs:
logging to stderr, signal handling, and a clean stop (running steps get the grace period,
then are cancelled and run again after the next start). A journal that fails for good (a
damaged file, a lost lease, writes still failing at the stop) stops it with one line and
`EXIT_JOURNAL_FAILED`: it never reports a clean stop after losing writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.runtime import STEP_THREADS, Runtime
from ..engine.workers import Workers
from ..errors import JournalError, JournalNotPrivate
from ..journal import open_journal
from ..redaction import RedactSecrets
from .output import escape

_log = logging.getLogger("orchestrator.daemon")
# How long a stopped daemon waits for idle worker threads to end before exiting anyway.
THREADS_EXIT_SECONDS = 1.0
# Threads of asyncio's executor and of watchfiles (AnyIO), which end with the event loop.
OWN_THREADS = ("asyncio_", "AnyIO worker thread")
# The exit code of a daemon whose journal failed (0: a clean stop; 1 and 2: see the CLI).
EXIT_JOURNAL_FAILED = 3
# The garbage collector's thresholds in the daemon's process (Python's: 700, 10, 10). With
# thousands of runs in flight, each a few dozen container objects, a young collection
# every 700 allocations and a full one every 100 young ones spent a third to a half of the
# CPU time scanning runs that are all still alive (a finished run leaves no cycle behind:
# reference counting frees it, so collecting less often keeps no more memory).
GC_THRESHOLDS = (100_000, 100, 100)
# Seconds a thread may hold the GIL while another waits for it (the interpreter's default
# is 0.005). The journal writer gives it up for each statement and waits to take it back
# while the event loop runs steps: at 1 ms a batch waits less, and many runs in flight
# commit about 10% faster.
SWITCH_INTERVAL = 0.001


def configure_logging(file: Path | None = None) -> None:
    """Log lines to stderr (or to `file`, while the dashboard owns the terminal).

    Every line passes `RedactSecrets` on the handler, so whichever ``orchestrator.*``
    logger it comes from (a worker's relayed output included), a known secret is masked.
    `file` is the daemon's own: 0600, and refused if another user owns it.
    """
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if file is None else PrivateFileHandler(file)
    )
    handler.addFilter(RedactSecrets())
    handler.setFormatter(
        _EscapingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("orchestrator")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def show_standby() -> None:
    """Also print on stdout the line saying this daemon stands by (the others go to a file)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: bool(getattr(record, "standby", False)))
    handler.setFormatter(_EscapingFormatter("orchestrator: %(message)s"))
    logging.getLogger("orchestrator.journal").addHandler(handler)


class PrivateFileHandler(logging.FileHandler):
    """A log file only its owner can read.

    Created 0600 whatever the umask, never followed through a symlink, made 0600 if it was
    looser, refused if another user owns it.
    """

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.baseFilename, flags, 0o600)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise JournalNotPrivate(
                f"cannot open the log file {self.baseFilename}: {why}; remove it or pass "
                "another --db"
            ) from exc
        try:
            owner = os.fstat(fd).st_uid
            if owner != os.geteuid():
                raise JournalNotPrivate(
                    f"the log file {self.baseFilename} belongs to uid {owner}, not to this "
                    f"user (uid {os.geteuid()}): remove it or pass another --db"
                )
            os.fchmod(fd, 0o600)  # it was ours already: a looser mode is only ours to fix
        except BaseException:
            os.close(fd)
            raise
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class _EscapingFormatter(logging.Formatter):
    """Log lines with control characters escaped (`output.escape`).

    A message may quote a workflow file's error or a step's output, which must not drive
    the terminal or split a log line.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, its message escaped."""
        return escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """A traceback, one escaped line per line."""
        return "\n".join(escape(line) for line in super().formatException(ei).split("\n"))


def tune_gc() -> None:
    """The garbage collector's policy of a process that is ours alone (`orchestrator up`).

    What is alive once the folder is loaded (modules, workflows, the runtime) lives as
    long as the daemon: it is frozen out of every later collection, and collections come
    less often (`GC_THRESHOLDS`). Never called by `Runtime`: a program that embeds one
    keeps its own garbage collector settings.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_process() -> None:
    """The policies of a process that is ours alone: `tune_gc`, and `SWITCH_INTERVAL`.

    Never called by `Runtime`: a program that embeds one keeps its own settings.
    """
    tune_gc()
    sys.setswitchinterval(SWITCH_INTERVAL)


# What runs in the foreground while the daemon serves (the dashboard); it returns when the
# user quits, and must return soon after `stop` is set.
Foreground = Callable[[Runtime, asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class DaemonSettings:
    """What `orchestrator up` takes on its command line."""

    grace: float = 10.0
    max_recoveries: int | None = 3
    isolate: bool = True  # sync steps run in worker processes
    workers: int | None = None  # worker processes at most; None: `Workers`' default
    run_segments: bool = True  # on a shared journal, whole runs spread over the daemons


async def serve(
    folder: Path,
    db: str | Path,
    settings: DaemonSettings,
    *,
    foreground: Foreground | None = None,
    leaving: Callable[[], None] | None = None,
) -> int:
    """Run the daemon on journal `db` (a path or a URL) until a stop signal (or `foreground`).

    `leaving` is called before the process exits at once (steps or threads that linger:
    `_exit_if_steps_linger`), for what a normal return would have closed (the registry entry).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    grace = settings.grace
    runtime = Runtime(
        db,
        workflows_dir=folder,
        shutdown_grace=grace,
        max_recoveries=settings.max_recoveries,
        isolate=settings.isolate,
        workers=Workers() if settings.workers is None else Workers(max=settings.workers),
        standby=open_journal(db).shared,
        run_segments=settings.run_segments,
    )
    try:
        if not await _started_unless_stopped(runtime, stop):
            _log.info("stopped cleanly (it was standing by)")
            return 0
        async with _stopped_after(runtime) as rt:
            loaded = ", ".join(rt.list_workflows()) or "none yet"
            tune_process()
            _log.info(
                "daemon pid %d ready: journal %s, folder %s, workflows: %s",
                os.getpid(),
                open_journal(db).location,  # a URL's password is never logged
                folder,
                loaded,
            )
            watch = asyncio.create_task(_stop_on_failure(rt, stop), name="journal-failure")
            try:
                if foreground is not None:
                    await foreground(rt, stop)
                else:
                    await stop.wait()
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            if rt.failure is None:
                _log.info("stopping: running steps have %g s to finish", grace)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    code = _report(rt.failure)
    _exit_if_steps_linger(code, leaving)
    return code


@contextlib.asynccontextmanager
async def _stopped_after(runtime: Runtime) -> AsyncIterator[Runtime]:
    """A started runtime, stopped when the block ends however it ends."""
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _started_unless_stopped(runtime: Runtime, stop: asyncio.Event) -> bool:
    """Start `runtime`; False if a stop signal came first (a standby waiting to take over).

    Raises:
        OrchestratorError: The runtime failed to start (it cleaned up after itself).
    """
    starting = asyncio.create_task(runtime.start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.wait((starting,))  # its clean-up runs before we go on
    if starting.cancelled():
        return False
    starting.result()  # start's own error, if it failed
    return True


async def _stop_on_failure(rt: Runtime, stop: asyncio.Event) -> None:
    await rt.failed()
    stop.set()


def _report(failure: JournalError | None) -> int:
    """Say how the daemon stopped, in one line; the exit code."""
    if failure is None:
        _log.info("stopped cleanly")
        return 0
    _log.error(
        "stopped: the journal failed, runs can no longer be recorded (exit %d): %s",
        EXIT_JOURNAL_FAILED,
        failure,
    )
    return EXIT_JOURNAL_FAILED


def _exit_if_steps_linger(code: int, leaving: Callable[[], None] | None = None) -> None:
    """Exit at once if a sync step (or a thread a workflow file started) still runs.

    A sync step cannot be interrupted, and Python waits for every worker thread at exit:
    a step sleeping for an hour would keep a stopped daemon (its lease released) alive for
    an hour. Its run is checkpointed and runs the step again after the next start. A
    workflow file that starts a thread at import that never ends would keep the daemon
    alive for ever: the daemon's own threads are done by now, so any other thread that is
    not a daemon thread is not waited for either.
    """
    deadline = time.monotonic() + THREADS_EXIT_SECONDS
    threads = [t for t in threading.enumerate() if t.name.startswith(STEP_THREADS)]
    for thread in threads:  # idle workers end on their own once the pool is shut down
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t.name for t in threads if t.is_alive()]
    if busy:
        _log.warning("exiting without waiting for sync steps still running in %s", busy)
    others = [
        t.name
        for t in threading.enumerate()
        if not t.daemon
        and t is not threading.main_thread()
        and t.name not in busy
        and not t.name.startswith(OWN_THREADS)
    ]
    if others:
        _log.warning(
            "exiting without waiting for threads a workflow file or step started: %s", others
        )
    if busy or others:
        if leaving is not None:
            leaving()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    if stop.is_set():
        _log.warning("%s again: still stopping, waiting for running steps", _name(signum))
    stop.set()


def _name(signum: int) -> str:
    return signal.Signals(signum).name

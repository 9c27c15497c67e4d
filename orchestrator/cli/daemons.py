"""The live daemons of this user: a small registry, so that daemons and commands find each other.

`orchestrator up` enters itself here (pid, its folder's real path, its journal's identity,
when it started) and keeps its entry locked while it runs. A daemon refuses a folder that
another one runs on another journal (both would run every file dropped in it); a command
that wrote to a journal no daemon holds names a daemon of this user that runs on another
one. Daemons on one folder with the same journal are the journal's business: SQLite's lease
admits one; a journal shared by design (PostgreSQL, to come) admits several.

The registry is a folder of this user's, 0700: ``$XDG_RUNTIME_DIR/orchestrator``, else
``orchestrator-UID`` in the temporary folder; never the watched folder (its watcher would see
it). One file per daemon, held with an exclusive `flock` for the daemon's life: the kernel
drops the lock when the process ends however it ends, so an entry whose lock is free is
stale (a SIGKILL, a pid since reused): it is ignored, and removed by the next daemon that
registers. The registry is a help, never a condition: a folder that cannot be made or
written (full, not ours, read-only) leaves the daemon running, with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shlex
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from .arguments import UsageError

# How long `register` waits for another daemon that is registering at the same moment.
LOCK_SECONDS = 5.0
_ENTRY, _NEW = "daemon-", ".new-"


@dataclass(frozen=True)
class LiveDaemon:
    """One daemon's entry: who it is, what it runs."""

    pid: int
    folder: str  # real path
    journal: str  # `JournalBackend.identity`
    started_at: float  # seconds since the epoch


def registry_dir() -> Path:
    """Where the entries are: ``$XDG_RUNTIME_DIR/orchestrator``, else in the temporary folder."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return Path(runtime) / "orchestrator"
    return Path(tempfile.gettempdir()) / f"orchestrator-{os.geteuid()}"


class Registration:
    """This daemon's entry, locked until `close` (or until the process ends)."""

    def __init__(self, path: Path | None = None, fd: int | None = None, warning: str = "") -> None:
        self._path, self._fd = path, fd
        self.warning = warning
        """Why the daemon is not registered ("" when it is)."""

    def report(self) -> None:
        """Log the warning, if any: once, when the daemon's log is set up."""
        if self.warning:
            logging.getLogger("orchestrator.daemon").warning("%s", self.warning)

    def close(self) -> None:
        """Leave the registry: the entry is removed, then its lock released."""
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
        if self._fd is not None:
            os.close(self._fd)
        self._path = self._fd = None

    def __enter__(self) -> Registration:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def register(folder: Path, journal: str) -> Registration:
    """Enter this daemon for `folder` on `journal` (an identity) in the registry.

    Raises:
        UsageError: Another live daemon runs `folder` on another journal.
    """
    me = LiveDaemon(os.getpid(), os.path.realpath(folder), journal, time.time())
    where = registry_dir()
    try:
        private = _private_dir(where, create=True)
        with _locked(private / ".lock"):
            for other in _entries(private, prune=True):
                if other.folder == me.folder and other.journal != me.journal:
                    raise UsageError(_taken(me, other))
            return _enter(private, me)
    except OSError as exc:
        return Registration(
            warning=f"the registry of live daemons at {where} cannot be used "
            f"({exc.strerror or exc}): running anyway, but a second daemon on this folder with "
            "another journal will not be refused"
        )


def live_daemons() -> list[LiveDaemon]:
    """The daemons of this user that run now, newest first (none if there is no registry)."""
    try:
        return _entries(_private_dir(registry_dir(), create=False), prune=False)
    except OSError:
        return []


def other_daemon(journal: str) -> str | None:
    """Names a live daemon on a journal other than `journal`, and how to use it; or None."""
    others = [daemon for daemon in live_daemons() if daemon.journal != journal]
    if not others:
        return None
    # One under the current folder first: most likely the one this shell's user started.
    near = sorted(
        others, key=lambda daemon: not (_under_cwd(daemon.folder) or _under_cwd(daemon.journal))
    )
    other = near[0]
    db = shlex.quote(shown(other.journal))
    more = f" (and {len(others) - 1} more on other journals)" if len(others) > 1 else ""
    return (
        f"a daemon (pid {other.pid}) runs {shown(other.folder)}/ on {shown(other.journal)}{more}:"
        f" pass --db {db} or set ORCHESTRATOR_DB={db}"
    )


def no_daemon_note(db: str, journal: str, waiting: str) -> str:
    """The line for a command that wrote `waiting` to journal `db`, which no daemon holds.

    `db` is the journal's `location`, `journal` its `identity`.
    """
    elsewhere = other_daemon(journal)
    if elsewhere is not None:
        return f"note: no daemon is running on {db}, but {elsewhere}"
    return (
        f"note: no daemon is running on {db}; {waiting} waits in the journal until one starts:"
        f" orchestrator up DIR --db {db_argument(db, journal)}"
    )


def db_argument(location: str, identity: str) -> str:
    """What to pass to ``--db`` to name a journal again, quoted for a shell.

    A file's path as given; a server's URL as its `identity` has it, without the user and
    the password (which no message repeats): the user adds theirs, or libpq takes
    ``$PGUSER`` and ``~/.pgpass``.
    """
    return shlex.quote(identity if "://" in identity else location)


def shown(path: str) -> str:
    """`path` relative to the current folder when it is inside it, else as it is."""
    with contextlib.suppress(ValueError, OSError):
        if _under_cwd(path):
            return os.path.relpath(path)
    return path


def _under_cwd(path: str) -> bool:
    cwd = os.getcwd()
    return os.path.isabs(path) and os.path.commonpath([cwd, path]) == cwd


def _taken(me: LiveDaemon, other: LiveDaemon) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(other.started_at))
    return (
        f"a daemon (pid {other.pid}, since {since}) already runs {shown(other.folder)}/ on "
        f"journal {shown(other.journal)}; two daemons on one folder would each run every file "
        f"dropped in it: use that daemon (pass --db {shlex.quote(shown(other.journal))} to "
        f"commands), or stop it first (kill {other.pid}) to run the folder on "
        f"{shown(me.journal)}"
    )


def _private_dir(path: Path, *, create: bool) -> Path:
    """`path`, a folder of this user's that only this user may use (OSError if not)."""
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        raise OSError(errno.EPERM, "not a folder of this user's", str(path))
    if create and found.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The registry to itself, against a daemon registering at the same moment (bounded)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        deadline = time.monotonic() + LOCK_SECONDS
        while not _try_lock(fd, fcntl.LOCK_EX):
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, f"locked by another process for {LOCK_SECONDS} s")
            time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _entries(where: Path, *, prune: bool) -> list[LiveDaemon]:
    """The live entries, newest first; with `prune`, stale ones are removed."""
    found: list[LiveDaemon] = []
    for path in where.iterdir():
        if not path.name.startswith((_ENTRY, _NEW)):
            continue
        entry = _live_entry(path, prune=prune)
        if entry is not None and path.name.startswith(_ENTRY):
            found.append(entry)
    return sorted(found, key=lambda daemon: -daemon.started_at)


def _live_entry(path: Path, *, prune: bool) -> LiveDaemon | None:
    """The entry in `path` while its daemon holds it; None for a stale or unreadable one."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # gone meanwhile, or not a file
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH):  # nobody holds it: its daemon has ended
            if prune:
                path.unlink(missing_ok=True)
            return None
        with os.fdopen(os.dup(fd), encoding="utf-8") as file:
            return LiveDaemon(**json.load(file))
    except (OSError, ValueError, TypeError):
        return None
    finally:
        os.close(fd)


def _enter(where: Path, me: LiveDaemon) -> Registration:
    """Write this daemon's entry, locked, under a name others skip until it is complete."""
    name = f"{me.pid}-{secrets.token_hex(4)}.json"
    new, entry = where / f"{_NEW}{name}", where / f"{_ENTRY}{name}"
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        os.write(fd, json.dumps(asdict(me)).encode())
        os.replace(new, entry)  # the lock stays with the open file
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            new.unlink()
        raise
    return Registration(entry, fd)

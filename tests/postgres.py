"""A throwaway PostgreSQL cluster for the suite: found, started once, stopped and removed.

`start_cluster` finds the server's binaries (``pg_config --bindir``, else the newest of
Debian's ``/usr/lib/postgresql/*/bin``), runs ``initdb`` in a fresh temporary folder (as the
``postgres`` user when we are root: initdb and the server refuse root) and starts the server
on 127.0.0.1, a free port, its socket inside that folder. The conftest's fixtures start one
per session and give each test a database of its own. This module must not import pytest.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "postgres"
START_TIMEOUT = 60.0
# Room for many daemons; FAST_OPTIONS below for the tests.
SERVER_OPTIONS = ("-c max_connections=200",)
# The tests kill daemons, never the server: its durability is not what they test.
FAST_OPTIONS = ("-c fsync=off", "-c full_page_writes=off")


class NoPostgres(Exception):
    """No PostgreSQL server binaries are installed here."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when none is installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)


@dataclass
class Cluster:
    """A running server: its folder, port and how long it took to start.

    A watchdog process (`watch`) stops and removes it if this process dies without
    `stop` (SIGKILL, SIGTERM, a CI time-out): it waits for the end of a pipe only this
    process holds, which the kernel closes however the process ends.
    """

    bindir: Path
    folder: Path
    port: int
    start_seconds: float
    _databases: int = field(default=0)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        """A URL of a database of this cluster (trust: any password is accepted)."""
        login = f"{SERVER_USER}:{password}" if password is not None else SERVER_USER
        return f"postgresql://{login}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (from template0); its URL."""
        import psycopg

        self._databases += 1
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediately: its data is thrown away) and remove its folder."""
        if self.data.exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                pg_ctl = str(self.bindir / "pg_ctl")
                stop = [pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                _as_server_user(stop, timeout=START_TIMEOUT)
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.communicate(timeout=START_TIMEOUT)  # closes its pipe: it ends
            self._watchdog = None

    def halt(self) -> None:
        """Stop the server at once, as a crash would (``-m immediate``); its data stays."""
        pg_ctl = str(self.bindir / "pg_ctl")
        _as_server_user([pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], 60)

    def resume(self) -> None:
        """Start a `halt`ed server again on its port (it recovers from its WAL)."""
        _start_on(self.bindir, self.folder, self.port, FAST_OPTIONS)

    def watch(self) -> None:
        """Start the watchdog that removes this cluster once this process is gone."""
        self._watchdog = subprocess.Popen(
            [sys.executable, __file__, str(self.bindir), str(self.folder)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C reaches the tests, which stop the cluster
        )


def start_cluster(*, durable: bool = False) -> Cluster:
    """Start a new cluster (`NoPostgres` when no server is installed); the caller stops it.

    `durable`: fsync and full-page writes on, as a production server (the benchmarks);
    the tests run without them.
    """
    bindir = find_bindir()
    if bindir is None:
        raise NoPostgres("no PostgreSQL server binaries (pg_config --bindir, /usr/lib/postgresql)")
    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="orch-pg-"))
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)  # KeyError: the package makes this user
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(folder / "data"), "-U", SERVER_USER]
        _as_server_user([*initdb, "--auth=trust", "-E", "UTF8", "--no-sync"], START_TIMEOUT)
        port = _start(bindir, folder, () if durable else FAST_OPTIONS)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    cluster = Cluster(bindir, folder, port, time.monotonic() - began)
    cluster.watch()
    return cluster


def _start(bindir: Path, folder: Path, extra: tuple[str, ...]) -> int:
    """Start the server on a free port (tried again if another process took it first)."""
    for attempt in range(3):
        port = _free_port()
        try:
            _start_on(bindir, folder, port, extra)
            return port
        except subprocess.CalledProcessError:
            if attempt == 2:
                log = folder / "server.log"
                raise RuntimeError(
                    "PostgreSQL did not start: " + (log.read_text()[-2000:] if log.exists() else "")
                ) from None
    raise AssertionError("unreachable")


def _start_on(bindir: Path, folder: Path, port: int, extra: tuple[str, ...]) -> None:
    options = " ".join(
        ("-c listen_addresses=127.0.0.1", f"-p {port}", f"-k {folder}", *SERVER_OPTIONS, *extra)
    )
    command = [str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-l"]
    command += [str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start"]
    _as_server_user(command, timeout=START_TIMEOUT + 10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(command: list[str], timeout: float) -> None:
    """Run a server binary: as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)
        return
    entry = pwd.getpwnam(SERVER_USER)
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=timeout,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        cwd="/",  # the server user may not enter the test's folder
        stdin=subprocess.DEVNULL,
    )


if __name__ == "__main__":  # the watchdog: BINDIR FOLDER, stdin a pipe from the test process
    sys.stdin.buffer.read()  # returns at EOF: the test process closed it, or is gone
    Cluster(Path(sys.argv[1]), Path(sys.argv[2]), port=0, start_seconds=0.0).stop()

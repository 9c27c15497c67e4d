"""Helpers shared by the benchmark scripts in this folder (they print figures; not tests).

The scripts are run as ``python bench/NAME.py``, so this module is imported as ``common``
(the script's folder is first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator import Runtime
from orchestrator import __version__ as ours_version


def parse_args(description: str, argv: list[str]) -> argparse.Namespace:
    """The flags every benchmark takes: ``--quick`` and ``--no-dbos``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS column")
    return parser.parse_args(argv)


@contextlib.contextmanager
def fresh_dir() -> Iterator[Path]:
    """A temporary folder for one measurement's journal (or DBOS system database)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        yield Path(tmp)


def default_synchronous() -> str:
    """The Runtime's default `synchronous` level (the one every measurement uses)."""
    return str(inspect.signature(Runtime).parameters["synchronous"].default)


def machine_line() -> str:
    """The header line naming what moves the figures: machine, Python, SQLite, our version."""
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"orchestrator {ours_version}"
    )


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or not theirs else f"{ours / theirs:,.2f}x"


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_row(
    label: str,
    values: Sequence[float],
    *,
    label_width: int,
    count_width: int = 7,
    median_width: int = 9,
) -> str:
    """A table row: the label, how many values, their median, p95 and max (ms, 1 digit)."""
    return (
        f"{label:{label_width}}{len(values):>{count_width}}"
        f"{fmt(percentile(values, 50), 1):>{median_width}}"
        f"{fmt(percentile(values, 95), 1):>9}{fmt(max(values), 1):>9}"
    )


def wall_ms(
    command: list[str], n: int, fresh: Callable[[], list[str]] | None = None
) -> list[float]:
    """Wall milliseconds of `n` runs of `command` (each with `fresh()` arguments appended)."""
    times = []
    for _ in range(n):
        extra = fresh() if fresh is not None else []
        began = time.perf_counter()
        subprocess.run([*command, *extra], check=True, capture_output=True)
        times.append((time.perf_counter() - began) * 1000)
    return times


# -- a daemon in its own process -------------------------------------------------------------


def read_journal(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One query on the journal with plain sqlite3, on a connection opened for it alone."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@contextlib.contextmanager
def daemon(folder: Path, db: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``orchestrator up FOLDER --db DB --headless`` until the block ends (then SIGTERM).

    Yields once the daemon holds the journal's lease and is ready (its folder loaded). Its
    log goes to ``DB.daemon``; a daemon that exits early raises with the end of that log.
    """
    log_path = Path(f"{db}.daemon")
    command = [sys.executable, "-m", "orchestrator", "up", str(folder), "--db", str(db)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen([*command, "--headless"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not _ready(db, proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(db: Path, pid: int) -> bool:
    try:
        return read_journal(db, "SELECT pid, ready FROM lease WHERE id = 1") == [(pid, 1)]
    except sqlite3.Error:  # not created yet
        return False


# -- DBOS Transact -------------------------------------------------------------------------


def import_dbos() -> Any | None:
    """The DBOS class, or None when the `bench` extra (dbos) is not installed."""
    try:
        from dbos import DBOS
    except ImportError:
        return None
    return DBOS


def dbos_unavailable(no_dbos: bool, dbos: Any | None, what: str = "its column") -> str | None:
    """Why the DBOS side is skipped (a line to print), or None when it runs."""
    if no_dbos:
        return "DBOS: skipped (--no-dbos)"
    if dbos is None:
        return f"DBOS: not importable, {what} is skipped (pip install -e '.[bench]')"
    return None


class PoolWarnings(logging.Filter):
    """Counts DBOS's "connection pool exhausted, retrying" warnings and keeps them quiet."""

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "QueuePool limit" in record.getMessage():
            self.count += 1
            return False
        return True


def quiet_pool_warnings() -> PoolWarnings:
    """Count (and hide) DBOS's pool-exhausted warnings from now on."""
    pool = PoolWarnings()
    logging.getLogger("dbos").addFilter(pool)
    return pool


@contextlib.contextmanager
def dbos_launched(dbos: Any, path: Path | str, **settings: Any) -> Iterator[Any]:
    """A launched DBOS over a SQLite system database at `path` (or a ``postgresql://`` URL);
    `settings` join its config."""
    url = path if isinstance(path, str) else f"sqlite:///{path}"
    config = {
        "name": "bench",
        "system_database_url": url,
        "log_level": "WARNING",
        **settings,
    }
    instance = dbos(config=config)
    dbos.launch()
    try:
        yield instance
    finally:
        dbos.destroy()


def dbos_sqlite_settings(dbos: Any) -> str:
    """The journal mode and synchronous level of DBOS's own pooled connections."""
    with (
        fresh_dir() as tmp,
        dbos_launched(dbos, tmp / "dbos.sqlite") as instance,
        instance._sys_db.engine.connect() as conn,
    ):
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync)
    return f"journal_mode={mode}, synchronous={level}"

"""Reading the journal: runs, checkpoints and timelines, on a read-only connection.

Used by the runtime, the CLI and the dashboard alike. Every query reads its rows at once
and closes its cursor, so no read transaction outlives a call (open readers stop WAL
checkpoints).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from ..clock import to_datetime
from ..errors import JournalCorrupt, JournalError
from ..records import Checkpoint, RunInfo, TimelineEntry
from .connection import connect_reader
from .schema import APPLICATION_ID, MIGRATIONS
from .timeline import assemble_timeline

_RUN_COLUMNS = """
    r.run_id, r.workflow_id, r.trigger_id, r.status, r.step, r.error, r.error_code,
    r.version, r.created_at, r.updated_at,
    (SELECT c.state FROM checkpoints c WHERE c.run = r.id ORDER BY c.position DESC LIMIT 1)
        AS state
"""


@dataclass(frozen=True)
class UnfinishedRun:
    """A run that was not final when its journal was last closed (or its process died)."""

    row: int
    run_id: str
    workflow_id: str
    trigger_id: str
    version: str
    status: str
    position: int
    step: str | None
    state: str
    created_at: int


class JournalReader:
    """Queries over one read-only connection."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> JournalReader:
        """Open a reader on an existing journal; `JournalCorrupt` if the file is not one."""
        conn = await connect_reader(path)
        try:
            await _check_readable(conn, path)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path)

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            async with self._conn.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: read failed: {exc}") from exc

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run, or None if the journal has no such run."""
        rows = await self._fetch(f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_id = ?", [run_id])
        return _run_info(rows[0]) if rows else None

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs, newest first, optionally of one status and/or workflow."""
        rows = await self._fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs r"
            " WHERE (?1 IS NULL OR r.status = ?1) AND (?2 IS NULL OR r.workflow_id = ?2)"
            " ORDER BY r.id DESC LIMIT ?3",
            [status, workflow, limit],
        )
        return [_run_info(row) for row in rows]

    async def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """Every committed checkpoint of a run, in order (position 0 is its input)."""
        rows = await self._fetch(
            "SELECT c.position, c.step, c.started_at, c.ended_at, c.state FROM checkpoints c"
            " JOIN runs r ON r.id = c.run WHERE r.run_id = ? ORDER BY c.position",
            [run_id],
        )
        return [
            Checkpoint(row[0], row[1], to_datetime(row[2]), to_datetime(row[3]), json.loads(row[4]))
            for row in rows
        ]

    async def timeline(self, run_id: str) -> list[TimelineEntry] | None:
        """Everything a run did, in order; None if the journal has no such run."""
        runs = await self._fetch(
            "SELECT id, status, step, step_started_at, position, error, error_code,"
            " created_at, updated_at FROM runs WHERE run_id = ?",
            [run_id],
        )
        if not runs:
            return None
        run = runs[0]
        checkpoints = await self._fetch(
            "SELECT position, step, started_at, ended_at FROM checkpoints"
            " WHERE run = ? AND position > 0 ORDER BY position",
            [run["id"]],
        )
        entries = await self._fetch(
            "SELECT position, at, source, kind, step, message, data FROM timeline"
            " WHERE run = ? ORDER BY id",
            [run["id"]],
        )
        return assemble_timeline(run, checkpoints, entries)

    async def unfinished_runs(self) -> list[UnfinishedRun]:
        """Runs that are queued, running or paused, oldest first, with their last state."""
        rows = await self._fetch(
            "SELECT r.id, r.run_id, r.workflow_id, r.trigger_id, r.version, r.status,"
            " r.position, r.step, c.state, r.created_at FROM runs r"
            " JOIN checkpoints c ON c.run = r.id AND c.position = r.position"
            " WHERE r.status IN ('queued', 'running', 'paused') ORDER BY r.id"
        )
        return [UnfinishedRun(*row) for row in rows]

    async def run_status(self, run_id: str) -> tuple[int, str] | None:
        """The run's row id and status, or None if unknown."""
        rows = await self._fetch("SELECT id, status FROM runs WHERE run_id = ?", [run_id])
        return (rows[0][0], rows[0][1]) if rows else None

    async def count_runs(self, statuses: Iterable[str] = ()) -> int:
        """How many runs there are (with one of `statuses`, if given)."""
        wanted = list(statuses)
        if not wanted:
            rows = await self._fetch("SELECT count(*) FROM runs")
        else:
            marks = ",".join("?" * len(wanted))
            rows = await self._fetch(f"SELECT count(*) FROM runs WHERE status IN ({marks})", wanted)
        return int(rows[0][0])


async def _check_readable(conn: aiosqlite.Connection, path: Path) -> None:
    try:
        async with conn.execute("PRAGMA application_id") as cursor:
            app_id = (await cursor.fetchone() or (0,))[0]
        async with conn.execute("PRAGMA user_version") as cursor:
            version = (await cursor.fetchone() or (0,))[0]
    except sqlite3.DatabaseError as exc:
        raise JournalCorrupt(
            f"{path} is not a journal (SQLite says: {exc}); pass the right --db"
        ) from exc
    if app_id != APPLICATION_ID or version == 0:
        raise JournalCorrupt(f"{path} is not a journal of this orchestrator; pass the right --db")
    if version > len(MIGRATIONS):
        raise JournalError(
            f"{path} was written by a newer orchestrator (schema {version}); upgrade"
        )


def _run_info(row: sqlite3.Row) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        workflow_id=row["workflow_id"],
        trigger_id=row["trigger_id"],
        status=row["status"],
        step=row["step"],
        state=json.loads(row["state"]) if row["state"] is not None else {},
        error=row["error"],
        version=row["version"],
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        error_code=row["error_code"],
    )

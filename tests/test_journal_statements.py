"""Every write key of `ops.Stmt` has its SQL in the SQLite backend, and that SQL compiles."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orchestrator.journal import ops
from orchestrator.journal.ops import Op, Stmt, grouped
from orchestrator.journal.sqlite.schema import migrate
from orchestrator.journal.sqlite.statements import BULK, SQL
from orchestrator.journal.sqlite.writer import BULK_ROWS, execute_rows
from orchestrator.records import RunCode, RunStatus


def test_every_statement_key_has_sqlite_sql() -> None:
    assert set(SQL) == set(Stmt)
    assert all(isinstance(SQL[stmt], str) and SQL[stmt].strip() for stmt in Stmt)


@pytest.mark.parametrize("stmt", list(Stmt), ids=lambda stmt: stmt.name)
def test_each_statement_compiles_against_the_latest_schema(tmp_path: Path, stmt: Stmt) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, path)
        sql = SQL[stmt]
        numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]  # ?1 may come twice
        count = max(numbered) if numbered else sql.count("?")
        conn.execute(f"EXPLAIN {sql}", (None,) * count)  # compiles; runs nothing
    finally:
        conn.close()


def test_a_batch_applies_statements_in_the_order_the_keys_are_declared() -> None:
    ops = [(stmt, (n,)) for n, stmt in enumerate(reversed(list(Stmt)))]
    assert [stmt for stmt, _ in grouped(ops)] == list(Stmt)


def _bulk_rows(run_ids: list[str], *, nul: bool = True) -> list[Op]:
    """Rows of every `BULK` statement, with values JSON could bend: text, NUL, big ints.

    With `nul`, some texts hold a NUL (or its JSON escape): those statements go row by row.
    """
    texts = ["é€😀", 'q"\\/\n\t\x01\x1f\u2028', ""]
    if nul:
        texts += ["a\x00b", '{"n":"\\u0000"}']
    writes: list[Op] = []
    for i, run_id in enumerate(run_ids, start=1):
        text = texts[i % len(texts)]
        at = 2**62 + i
        writes += ops.create_run(
            i, run_id, "wf", "t", "v1", status=RunStatus.RUNNING, first_step="a", state="{}", at=at
        )
        step = ops.checkpoint(
            i, 1, text, started_at=at, ended_at=at, state='{"s":1}', next_step=text
        )
        if i % 2 == 0:  # paused: its progress and its pause in one update
            writes += [step[0], ops.parked(step[1], text or None, at + 1)]
        else:
            writes += step
            writes.append(
                ops.set_status(
                    i, RunStatus.FAILED, at + 1, error=text or None, code=RunCode.STEP_FAILED
                )
            )
        where = f'[["k","==",{i}]]'
        writes += [
            ops.add_wait(
                i,
                i,
                text or None,
                where,
                persistent=i % 2 == 0,
                status="parked",
                into=text or None,
                timeout_at=at if i % 3 else None,
                on_timeout="continue",
                at=at,
                joins=None if i % 2 else f'["{run_id}"]',
            ),
            *(
                []
                if i % 2 == 0
                else [ops.set_paused_in(i, "a"), ops.set_paused_in(i, text or None)]
            ),  # the last one of a run wins
            ops.add_timeline(i, at, "runtime", "run.paused", position=1, message=text),
            ops.add_timeline(
                None if i % 4 == 0 else i, at, "logger", "info", step=text, data={"t": text}
            ),
        ]
    return writes


def _apply(path: Path, writes: list[Op], *, bulk: bool) -> list[Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        for stmt, rows in grouped(writes):
            if stmt is Stmt.INSERT_CHECKPOINT:
                rows = [(*row, None) for row in rows]  # the writer's `base`: whole states
            if bulk:
                execute_rows(conn, stmt, rows)
            else:
                conn.executemany(SQL[stmt], rows)
        conn.execute("COMMIT")
        runs = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        checkpoints = conn.execute("SELECT * FROM checkpoints ORDER BY run, position").fetchall()
        waits = conn.execute("SELECT * FROM waits ORDER BY id").fetchall()
        timeline = conn.execute("SELECT * FROM timeline ORDER BY id").fetchall()
        return [runs, checkpoints, waits, timeline]
    finally:
        conn.close()


@pytest.mark.parametrize("nul", [True, False])
@pytest.mark.parametrize("count", [BULK_ROWS - 1, BULK_ROWS, 3 * BULK_ROWS])
def test_bulk_statements_write_what_row_by_row_statements_write(
    tmp_path: Path, count: int, nul: bool
) -> None:
    assert set(BULK) <= set(Stmt)
    writes = _bulk_rows([f"{i:032x}" for i in range(count)], nul=nul)
    expected = _apply(tmp_path / "rows.db", writes, bulk=False)
    written = _apply(tmp_path / "bulk.db", writes, bulk=True)
    assert written == expected
    conn = sqlite3.connect(tmp_path / "bulk.db")
    try:
        ends = conn.execute("SELECT updated_at, position, status FROM runs").fetchall()
    finally:
        conn.close()
    assert sorted(ends) == [
        (2**62 + i + 1, 1, "paused" if i % 2 == 0 else "failed") for i in range(1, count + 1)
    ]


def test_bulk_rows_run_as_one_statement_unless_a_nul_is_in_them(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path, isolation_level=None)
    statements: list[str] = []
    try:
        migrate(conn, path)
        conn.set_trace_callback(statements.append)
        rows = [(i, f"{i:032x}", "wf", "t", "v", "running", "a", 1, 1, 1) for i in range(1, 40)]
        execute_rows(conn, Stmt.INSERT_RUN, rows)
        inserts = [sql for sql in statements if sql.startswith("INSERT INTO runs")]
        assert inserts and all("json_each" in sql for sql in inserts)
        statements.clear()
        nul = [(i, f"{i:032x}", "wf", "t", "v", "run\x00", "a", 1, 1, 1) for i in range(40, 80)]
        execute_rows(conn, Stmt.INSERT_RUN, nul)
        inserts = [sql for sql in statements if sql.startswith("INSERT INTO runs")]
        assert inserts and not any("json_each" in sql for sql in inserts)
        nuls = "SELECT count(*) FROM runs WHERE status = 'run' || char(0)"
        assert conn.execute(nuls).fetchone() == (len(nul),)
    finally:
        conn.close()


def test_a_run_parked_and_updated_again_in_one_batch_ends_as_applied_op_by_op(
    tmp_path: Path,
) -> None:
    """A `SET_PARKED` row runs as its parts when the batch updates its run's row again."""
    at = 1_000
    writes: list[Op] = []
    steps = {}
    for row in (1, 2, 3):
        writes += ops.create_run(
            row,
            f"r{row}",
            "wf",
            "t",
            "v1",
            status=RunStatus.RUNNING,
            first_step="a",
            state="{}",
            at=at,
        )
        steps[row] = ops.checkpoint(
            row, row, "a", started_at=at + 1, ended_at=at + 1, state="{}", next_step="b"
        )
    writes += [  # run 1 parks, then an event wakes it and its next step starts
        steps[1][0],
        ops.parked(steps[1][1], "a", at + 2),
        ops.set_status(1, RunStatus.RUNNING, at + 3),
        ops.set_paused_in(1, None),
        ops.step_started(1, 1, "b", at + 3),
    ]
    writes += [  # run 2 is resumed, then parks again
        ops.set_status(2, RunStatus.RUNNING, at + 1),
        ops.set_paused_in(2, None),
        steps[2][0],
        ops.parked(steps[2][1], "a", at + 4),
    ]
    writes += [steps[3][0], ops.parked(steps[3][1], "a", at + 2)]  # run 3 parks, alone

    def runs(path: Path, batches: list[list[Op]]) -> list[Any]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            migrate(conn, path)
            for batch in batches:
                for stmt, rows in grouped(batch):
                    if stmt is Stmt.INSERT_CHECKPOINT:
                        rows = [(*row, None) for row in rows]
                    conn.executemany(SQL[stmt], rows)
            return conn.execute(
                "SELECT id, status, step, position, paused_in, updated_at FROM runs ORDER BY id"
            ).fetchall()
        finally:
            conn.close()

    one_by_one = runs(tmp_path / "ops.db", [[op] for op in writes])
    assert runs(tmp_path / "batch.db", [writes]) == one_by_one
    assert one_by_one == [
        (1, "running", "b", 1, None, at + 3),
        (2, "paused", "b", 2, "a", at + 4),
        (3, "paused", "b", 3, "a", at + 2),
    ]

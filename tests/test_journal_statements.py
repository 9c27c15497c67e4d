"""Every write key of `ops.Stmt` has its SQL in the SQLite backend, and that SQL compiles."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from orchestrator.journal.ops import Stmt, grouped
from orchestrator.journal.sqlite.schema import migrate
from orchestrator.journal.sqlite.statements import SQL


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
    ops = [(stmt, (1,)) for stmt in reversed(list(Stmt))]
    assert [stmt for stmt, _ in grouped(ops)] == list(Stmt)

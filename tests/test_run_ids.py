"""Run ids by prefix: every command that takes a RUN_ID takes a unique prefix of 4 or more.

A real `Runtime` writes the runs, with ids chosen here (the id source is patched while it
runs), so that some share prefixes; the commands are real ``python -m orchestrator``
subprocesses, and the writing ones run with no runtime, as they do without a daemon.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from procs import query
from test_cli import cli

from orchestrator import Runtime, Workflow
from orchestrator.cli.arguments import UsageError
from orchestrator.cli.run_ids import MIN_PREFIX, SHOWN, resolved
from orchestrator.errors import RunNotFound
from orchestrator.journal import RunMatch, RunMatches
from orchestrator.journal.sqlite import prefixes
from orchestrator.journal.sqlite.schema import migrate
from tui.format import short_id

PAUSED = [f"c0ffee0{n}" + "0" * 24 for n in (1, 2, 3)]  # "c0ffee0" is ambiguous among 3
DONE = [f"abcd{n:028x}" for n in range(7)]  # "abcd" is ambiguous among 7: 5 shown, 2 more
LONE = "5eed" + "f" * 28


def hold(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go")


def ship(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "shipped": True}


@pytest.fixture
def journal(db: Path) -> Path:
    """`db` holding the runs above: `PAUSED` paused, `DONE` and `LONE` completed."""
    workflows = [
        Workflow(id="orders", pipelines={"hold": [hold, ship]}),
        Workflow(id="reports", pipelines={"go": [ship]}),
    ]

    async def seed() -> None:
        async with Runtime(db, workflows=workflows) as rt:
            for _ in PAUSED:
                assert (await rt.invoke("orders", "hold", {})).status == "paused"
            for _ in [*DONE, LONE]:
                assert (await rt.invoke("reports", "go", {})).status == "completed"

    ids = iter([*PAUSED, *DONE, LONE])
    with mock.patch("orchestrator.engine.admission.make_id", lambda: next(ids)):
        asyncio.run(seed())
    return db


def inbox(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT command, run_id FROM inbox ORDER BY id")


WRITING = [["resume", "{}"], ["signal", '{"a": 1}'], ["abort"]]
COMMANDS = [["show"], ["show", "--json"], *WRITING]
# Every command that takes a RUN_ID; retry and fork, besides, refuse what these runs are
# or print a new run's id (tests/test_cli_retry_fork.py).
PREFIXED = [*COMMANDS, ["retry"], ["fork", "--from", "ship"]]


def argv(command: list[str], run_id: str, db: Path) -> list[str]:
    return [command[0], run_id, *command[1:], "--db", str(db)]


@pytest.mark.parametrize("command", WRITING, ids=lambda c: c[0])
def test_a_writing_command_resolves_the_prefix_before_it_writes(
    journal: Path, command: list[str]
) -> None:
    out = cli(*argv(command, "c0ffee02", journal))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{command[0]} of run {PAUSED[1]} queued; the daemon applies it\n"
    assert inbox(journal) == [(command[0], PAUSED[1])], "the inbox holds the whole id"


def test_show_takes_a_prefix_and_what_the_dashboard_shows(journal: Path) -> None:
    for typed, run_id in [
        (LONE[:MIN_PREFIX], LONE),
        (short_id(PAUSED[1]), PAUSED[1]),
        (PAUSED[2][:-1], PAUSED[2]),
        (DONE[3], DONE[3]),
    ]:
        out = cli("show", typed, "--db", str(journal), "--json")
        assert out.returncode == 0, (typed, out.stderr)
        assert json.loads(out.stdout)["run_id"] == run_id
    text = cli("show", short_id(PAUSED[0]), "--db", str(journal))
    assert text.returncode == 0 and PAUSED[0] in text.stdout and "paused" in text.stdout


def test_the_dashboards_short_ids_are_prefixes_the_cli_takes() -> None:
    assert len(short_id(LONE)) >= MIN_PREFIX


@pytest.mark.parametrize("command", PREFIXED, ids=" ".join)
def test_a_prefix_under_4_characters_is_one_line_saying_the_minimum(
    journal: Path, command: list[str]
) -> None:
    for typed in ("c0f", "5", ""):
        out = cli(*argv(command, typed, journal))
        assert out.returncode == 2 and out.stdout == "", out
        assert out.stderr == (
            f"error: RUN_ID {typed!r} is too short: give the run id, or at least 4 characters "
            "of it\n"
        )
    assert inbox(journal) == []


@pytest.mark.parametrize("command", PREFIXED, ids=" ".join)
def test_an_ambiguous_prefix_lists_candidates_and_writes_nothing(
    journal: Path, command: list[str]
) -> None:
    out = cli(*argv(command, "abcd", journal))
    assert out.returncode == 2 and out.stdout == "", out
    first, *candidates = out.stderr.splitlines()
    assert first == (
        "error: RUN_ID 'abcd' is ambiguous: 7 runs start with it; give more characters of "
        "the one you mean:"
    )
    assert candidates == [f"  {run_id}  reports  completed" for run_id in DONE[:SHOWN]] + [
        "  and 2 more"
    ]
    few = cli(*argv(command, "c0ffee0", journal))
    assert few.returncode == 2 and "3 runs start with it" in few.stderr
    assert few.stderr.splitlines()[1:] == [f"  {run_id}  orders  paused" for run_id in PAUSED]
    assert inbox(journal) == []


@pytest.mark.parametrize("command", PREFIXED, ids=" ".join)
def test_no_match_is_run_not_found(journal: Path, command: list[str]) -> None:
    out = cli(*argv(command, "dead", journal))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"error: no run 'dead' in journal {journal} [RUN_NOT_FOUND]\n"
    assert inbox(journal) == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_whole_id_still_works(journal: Path, command: list[str]) -> None:
    out = cli(*argv(command, PAUSED[0], journal))
    assert out.returncode == 0, out.stderr
    assert PAUSED[0] in out.stdout


def test_a_whole_id_wins_over_the_longer_ids_it_starts() -> None:
    found = RunMatches((RunMatch("abcd", "w", "paused"), RunMatch("abcde", "w", "failed")), 2)
    assert resolved("abcd", found, "j.db") == "abcd"
    with pytest.raises(UsageError, match="2 runs start with it"):
        resolved("abcd", RunMatches(found.runs[1:] * 2, 2), "j.db")  # no whole id among them
    with pytest.raises(RunNotFound):
        resolved("abcd", RunMatches((), 0), "j.db")


@pytest.mark.parametrize(
    ("prefix", "past"),
    [
        ("abcd", "abce"),
        ("ab\U0010ffff", "ac"),
        ("\ud7ff", "\ue000"),
        ("\U0010ffff", b"\xff"),
    ],
)
def test_the_range_ends_past_every_id_with_the_prefix(prefix: str, past: str | bytes) -> None:
    assert prefixes.past(prefix) == past


def test_the_prefix_query_reads_a_range_of_the_run_id_index(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, path)
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {prefixes.SQL}", (1, 2, 3))]
        [run_id_index] = [
            index
            for (_, index, unique, *_) in conn.execute("PRAGMA index_list(runs)")
            if unique and [c[2] for c in conn.execute(f"PRAGMA index_info({index})")] == ["run_id"]
        ]
    finally:
        conn.close()
    assert plan == [
        f"SEARCH runs USING INDEX {run_id_index} (run_id>? AND run_id<?)",
        "SCALAR SUBQUERY 1",
        f"SEARCH runs USING COVERING INDEX {run_id_index} (run_id>? AND run_id<?)",
    ], "no SCAN, no temporary B-tree for the order"


def test_resolving_a_prefix_loads_neither_asyncio_nor_aiosqlite(journal: Path) -> None:
    """The writing commands start fast with a prefix too: no event loop to resolve it."""
    code = (
        "import atexit, sys\n"
        "heavy = ('asyncio', 'aiosqlite')\n"
        "atexit.register(lambda: print([m for m in heavy if m in sys.modules]))\n"
        "from orchestrator.cli.main import main\n"
        f"main(['abort', 'c0ffee03', '--db', {str(journal)!r}])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"
    assert inbox(journal) == [("abort", PAUSED[2])]

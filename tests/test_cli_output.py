"""Human output never hands the terminal raw control characters from the journal.

Log lines, errors, state, ids and file paths are written by steps, workflow files and other
processes; `show`, `runs` and `workflows` print them with each control character escaped
visibly, while `--json` stays exact JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from procs import query
from test_cli import cli

from orchestrator import Runtime, Workflow
from orchestrator.cli.daemon import _EscapingFormatter
from orchestrator.cli.output import escape

TITLE = "\x1b]0;pwned\x07"  # OSC: retitles the terminal
CLEAR = "\x1b[2J"  # CSI: clears the screen
RAW = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


async def hostile(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.log.info("title %s clear %s", TITLE, CLEAR)
    ctx.log.warning("two\nlines\rand a\tcarriage return")
    return {**state, "note": f"{TITLE}\x9b\u202e", "x": "日本"}


async def fails(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(f"boom {CLEAR}\nsecond line")


def seed(db: Path) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        flow = Workflow(id="w", pipelines={"go": [hostile], "bad": [fails]})
        async with Runtime(db) as rt:
            await rt.register(flow)
            ok = await rt.invoke(flow.id, "go", {"n": 0})
            bad = await rt.invoke(flow.id, "bad", {"n": 0})
            return ok.run_id, bad.run_id

    ok, bad = asyncio.run(go())
    # Ids are validated where workflows are defined; a journal written by another process
    # (or by hand) may still hold anything.
    query(db, "UPDATE runs SET trigger_id = ? WHERE run_id = ?", (f"bad{TITLE}", bad))
    return ok, bad


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (TITLE, r"\x1b]0;pwned\x07"),
        ("a\nb\tc\rd", r"a\nb\tc\rd"),
        ("\x00\x7f\x9b", r"\x00\x7f\x9b"),
        ("\u202eevil\u2028", r"\u202eevil\u2028"),
        ("\udcff", r"\udcff"),
        ("plain é 日本 [red]", "plain é 日本 [red]"),
    ],
)
def test_escape_makes_each_control_character_visible(text: str, shown: str) -> None:
    assert escape(text) == shown


def test_show_runs_and_errors_print_no_raw_control_characters(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, bad = seed(db)
    for args in (["show", ok], ["show", bad], ["runs"], ["workflows"]):
        out = cli(*args, "--db", str(db))
        assert out.returncode == 0, out.stderr
        for char in RAW:
            assert char not in out.stdout + out.stderr, (args, char)
    shown = cli("show", ok, "--db", str(db)).stdout
    assert r"title \x1b]0;pwned\x07 clear \x1b[2J" in shown
    assert r"two\nlines\rand a\tcarriage return" in shown
    failed = cli("show", bad, "--db", str(db)).stdout
    assert r"boom \x1b[2J\nsecond line" in failed and r"bad\x1b]0;pwned\x07" in failed
    table = cli("runs", "--db", str(db)).stdout.splitlines()
    assert len(table) == 3, "a value never splits a row"


def test_json_output_stays_exact(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, _ = seed(db)
    doc = json.loads(cli("show", ok, "--db", str(db), "--json").stdout)
    assert doc["state"]["note"] == f"{TITLE}\x9b\u202e"
    assert any(TITLE in (entry["message"] or "") for entry in doc["timeline"])
    runs = json.loads(cli("runs", "--db", str(db), "--json").stdout)
    assert {run["trigger_id"] for run in runs} == {"go", f"bad{TITLE}"}


def test_an_error_line_is_escaped_too(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    seed(db)
    out = cli("show", f"x{TITLE}\n", "--db", str(db))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr


def test_the_daemons_log_lines_are_escaped() -> None:
    formatter = _EscapingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(f"bad {TITLE}")
    except ValueError:
        record = logging.LogRecord("o", logging.ERROR, "f", 1, "load %s", (CLEAR,), sys.exc_info())
    line = formatter.format(record)
    assert line.startswith(r"ERROR load \x1b[2J") and "\x1b" not in line and "\x07" not in line
    assert r"ValueError: bad \x1b]0;pwned\x07" in line


def test_a_terminal_that_cannot_encode_a_character_gets_an_escape(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, _ = seed(db)
    latin = {"PYTHONIOENCODING": "latin-1"}
    out = cli("show", ok, "--db", str(db), env=latin)
    assert out.returncode == 0 and r'"x": "\u65e5\u672c"' in out.stdout, out.stderr
    doc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "show", ok, "--db", str(db), "--json"],
        capture_output=True,
        env={**os.environ, **latin},
        timeout=60,
        check=True,
    )
    assert json.loads(doc.stdout.decode("latin-1"))["state"]["x"] == "日本"

"""The `orchestrator` command as users run it: real subprocesses, real journal files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from procs import query

from orchestrator import RunInfo, RunStatus, Runtime, Workflow
from orchestrator.cli.output import runs_table
from orchestrator.clock import Clock

ROOT = Path(__file__).resolve().parent.parent


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state["n"] + 1}


async def boom(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("exploded [red]not markup[/red]")


def seed(db: Path) -> list[str]:
    async def go() -> list[str]:
        async with Runtime(db) as rt:
            await rt.register(Workflow(id="w", pipelines={"go": [inc, inc], "bad": [inc, boom]}))
            ok = await rt.invoke("w", "go", {"n": 0})
            bad = await rt.invoke("w", "bad", {"n": 0})
            return [ok.run_id, bad.run_id]

    return asyncio.run(go())


def test_runs_json_lists_runs_newest_first_with_stable_fields(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, bad = seed(db)
    out = cli("runs", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert [r["run_id"] for r in runs] == [bad, ok]
    assert set(runs[0]) == {
        "run_id",
        "workflow_id",
        "trigger_id",
        "status",
        "step",
        "created_at",
        "updated_at",
        "error",
    }
    assert runs[0]["status"] == "failed" and "exploded" in runs[0]["error"]
    assert runs[1]["created_at"].endswith("Z")
    failed = json.loads(cli("runs", "--db", str(db), "--json", "--status", "failed").stdout)
    assert [r["run_id"] for r in failed] == [bad]
    limited = json.loads(cli("runs", "--db", str(db), "--json", "--limit", "1").stdout)
    assert [r["run_id"] for r in limited] == [bad]
    assert json.loads(cli("runs", "--db", str(db), "--json", "--workflow", "x").stdout) == []
    table = cli("runs", "--db", str(db)).stdout
    assert ok in table and "completed" in table and "failed" in table


def test_show_prints_state_and_timeline(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, bad = seed(db)
    out = cli("show", ok, "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["state"] == {"n": 2} and doc["status"] == "completed" and doc["version"]
    kinds = [e["kind"] for e in doc["timeline"]]
    assert kinds == [
        "run.started",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "run.completed",
    ]
    assert set(doc["timeline"][0]) >= {"at", "source", "kind", "message", "data"}
    text = cli("show", bad, "--db", str(db))
    assert text.returncode == 0
    assert "failed" in text.stdout and "[STEP_FAILED]" in text.stdout and "boom" in text.stdout


def test_db_defaults_to_env_then_current_folder(tmp_path: Path) -> None:
    ok, _ = seed(tmp_path / "orchestrator.db")
    here = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    assert ok in [r["run_id"] for r in here]
    other = tmp_path / "sub"
    other.mkdir()
    via_env = cli(
        "runs", "--json", cwd=other, env={"ORCHESTRATOR_DB": str(tmp_path / "orchestrator.db")}
    )
    assert ok in [r["run_id"] for r in json.loads(via_env.stdout)]


def test_reading_a_missing_journal_prints_an_empty_result_and_creates_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "missing.db"
    out = cli("runs", "--db", str(db), "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []
    assert cli("runs", "--db", str(db)).stdout.strip() == "no runs"
    assert not db.exists()


def test_unknown_run_and_bad_usage_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    seed(db)
    out = cli("show", "nope", "--db", str(db))
    assert out.returncode == 2 and "no run 'nope'" in out.stderr
    assert cli("runs", "--db", str(db), "--status", "weird").returncode == 2
    assert cli("runs", "--db", str(db), "--limit", "0").returncode == 2
    assert cli("frobnicate").returncode == 2


@pytest.mark.parametrize(
    "content", [b"not a database at all\n" * 50, b"SQLite format 3\x00" + b"\xff" * 2000]
)
def test_a_corrupt_journal_is_a_clear_error_not_a_traceback(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(content)
    for args in (["runs"], ["show", "x"]):
        out = cli(*args, "--db", str(db))
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and "not a journal" in out.stderr
    assert db.read_bytes() == content


def test_run_executes_a_pipeline_file_and_prints_the_final_state() -> None:
    out = cli(
        "run",
        "examples/pipelines/etl.py",
        "--module-home",
        "examples/pipelines",
        "--allow",
        r"^json$",
        "--allow",
        r"^adaptors(\.|$)",
        "--state",
        '{"raw": "[1, 2]"}',
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["total"] == 750


def test_run_exit_codes(tmp_path: Path) -> None:
    failing = tmp_path / "fail.py"
    failing.write_text(
        "def a(s):\n    return s\n\n"
        "def b(s):\n    raise ValueError('bad input')\n\n"
        "pipeline = [a, b]\n"
    )
    out = cli("run", str(failing))
    assert out.returncode == 1 and "'b'" in out.stderr and "bad input" in out.stderr
    blocked = tmp_path / "blocked.py"
    blocked.write_text("import json\nimport subprocess\npipeline = []\n")
    out = cli("run", str(blocked))
    assert out.returncode == 2 and "subprocess" in out.stderr and "line 2" in out.stderr
    assert cli("run", str(tmp_path / "absent.py")).returncode == 2
    bad_json = cli("run", str(failing), "--state", "{nope")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    assert cli("run", str(failing), "--state", "[1]").returncode == 2
    assert "Traceback" not in out.stderr + bad_json.stderr


def test_every_command_takes_db(tmp_path: Path) -> None:
    """DESIGN: every command takes --db; `run` (not journaled) takes it and leaves it alone."""
    import argparse

    from orchestrator.cli.main import _parser

    def leaves(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
        """The commands under `parser`: a group (`journal`) gives its own commands."""
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [(parser.prog, parser)]
        return [leaf for sub in groups[0].choices.values() for leaf in leaves(sub)]

    commands = leaves(_parser())
    assert "orchestrator journal migrate" in [name for name, _ in commands]
    for name, sub in commands:
        assert any("--db" in action.option_strings for action in sub._actions), name
    pipeline = tmp_path / "p.py"
    pipeline.write_text("def inc(state):\n    return {'n': state['n'] + 1}\n\npipeline = [inc]\n")
    db = tmp_path / "untouched.db"
    out = cli("run", str(pipeline), "--state", '{"n": 1}', "--db", str(db))
    assert out.returncode == 0 and json.loads(out.stdout) == {"n": 2}, out.stderr
    assert not db.exists()


def test_version_prints_the_installed_package_version() -> None:
    out = cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"orchestrator {version('durable-orchestrator')}\n"


def backdate(db: Path, run_id: str, seconds: float, *, status: str | None = None) -> None:
    """Move a run's creation (and its last update) `seconds` into the past."""
    at = Clock().now_us() - int(seconds * 1e6)
    query(db, "UPDATE runs SET created_at = ?, updated_at = ? WHERE run_id = ?", (at, at, run_id))
    if status is not None:
        query(db, "UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))


def test_runs_since_lists_the_runs_created_within_the_window(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, bad = seed(db)
    backdate(db, ok, 2 * 3600)

    def listed(*args: str) -> list[str]:
        out = cli("runs", "--db", str(db), "--json", *args)
        assert out.returncode == 0, out.stderr
        return [r["run_id"] for r in json.loads(out.stdout)]

    assert listed("--since", "1h") == [bad]
    assert listed("--since", "3h") == [bad, ok]
    assert listed("--since", "90m", "--status", "completed") == []
    assert listed("--since", "100000d") == [bad, ok]  # past the epoch: every run
    assert bad in cli("runs", "--db", str(db), "--since", "1h").stdout
    out = cli("runs", "--db", str(db), "--since", "yesterday")
    assert out.returncode == 2 and "invalid duration 'yesterday'" in out.stderr
    assert "Traceback" not in out.stderr


def test_runs_shows_how_long_an_unfinished_run_has_been_going(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ok, bad = seed(db)
    backdate(db, bad, 3600, status="running")  # created an hour ago, not updated since
    rows = {
        line.split()[0]: line.split()[-1]
        for line in cli("runs", "--db", str(db)).stdout.splitlines()
    }
    assert re.fullmatch(r"6\d\.\dm", rows[bad]), rows[bad]  # not 0ms
    assert rows[ok].endswith("ms") or rows[ok].endswith("s"), rows[ok]


def test_runs_table_durations_end_now_for_runs_not_final() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    now = created + timedelta(seconds=18)

    def info(status: str) -> RunInfo:
        return RunInfo(
            run_id=f"r-{status}",
            workflow_id="w",
            trigger_id="t",
            status=RunStatus(status),
            step=None,
            state={},
            error=None,
            version="1",
            created_at=created,
            updated_at=created + timedelta(milliseconds=250),
        )

    table = runs_table([info("running"), info("paused"), info("completed")], now)
    durations = {line.split()[0]: line.split()[-1] for line in table.splitlines()[1:]}
    assert durations == {"r-running": "18.0s", "r-paused": "18.0s", "r-completed": "250ms"}

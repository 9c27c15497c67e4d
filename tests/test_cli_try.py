"""``orchestrator try FILE [WORKFLOW] TRIGGER [JSON]``, end to end in a subprocess.

One run of one pipeline of a workflow file, on a throwaway journal: the timeline, then
how it ended. Exit 0 completed or paused, 1 failed (or still running at --timeout), 2 bad
input (a file that does not load, an unknown workflow or trigger, bad JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import ROOT, cli

from orchestrator.cli.trying import MAX_FILE_BYTES


def tried(*args: str | Path, db: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--db", str(db)] if db is not None else []
    return cli("try", *map(str, args), *extra)


def refused(out: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a bad input."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == "" and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    return out.stderr


def test_a_completed_run_prints_its_timeline_and_state(examples: Path, db: Path) -> None:
    out = tried(examples / "nightly_report.py", "now", db=db)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(
        " of nightly_report (trigger now), timeline:"
    )
    kinds = [line.split()[3] for line in lines[1 : lines.index("")]]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert any("report-" in line and "0 files, 0 rows" in line for line in lines)
    assert "completed" in lines
    state = json.loads("\n".join(lines[lines.index("state") + 1 :]))
    assert (state["files"], state["rows"]) == (0, 0)
    assert not db.exists()  # --db is left alone: the journal was a throwaway


def test_a_failed_run_exits_1_with_its_error(examples: Path) -> None:
    out = tried(examples / "deploy.py", "request", "{}")
    assert out.returncode == 1, out.stderr
    assert "step.failed [build] step 'build' failed: KeyError: 'service'" in out.stdout
    assert "failed at step build: step 'build' failed: KeyError: 'service' [STEP_FAILED]" in (
        out.stdout
    )


def test_a_paused_run_says_what_it_waits_for_and_stops(examples: Path) -> None:
    out = tried(examples / "approval.py", "request", '{"request_id": "r-1"}')
    assert out.returncode == 0, out.stderr
    assert (
        'paused in step wait_for_decision, waiting for approval.decided where request_id == "r-1" '
        "(or a timeout at "
    ) in out.stdout
    assert "try stops here: nothing can resume a run on its throwaway journal" in out.stdout

    slept = tried(examples / "deploy.py", "deploy", "request", '{"service": "a", "version": "1"}')
    assert slept.returncode == 0, slept.stderr
    assert "paused in step bake, waiting for its sleep to end at " in slept.stdout


def test_json_prints_the_run_as_show_does(examples: Path) -> None:
    out = tried(examples / "approval.py", "approval", "request", '{"request_id": "r-1"}', "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert (shown["workflow_id"], shown["status"], shown["step"]) == (
        "approval",
        "paused",
        "wait_for_decision",
    )
    assert shown["timeline"][-1]["kind"] == "run.paused"


def test_a_schedule_or_a_file_trigger_is_tried_with_the_json_given(examples: Path) -> None:
    night = '{"scheduled_for": "2026-03-11T02:00:00+00:00"}'
    out = tried(examples / "nightly_report.py", "nightly", night, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"]["report"].endswith("report-2026-03-11.json")

    (examples / "inbox").mkdir()
    csv = examples / "inbox" / "sales.csv"
    csv.write_text("sku,qty\nA,2\n")
    created = {"path": str(csv), "size": 12, "dir": str(csv.parent), "glob": "*.csv"}
    out = tried(examples / "ingest.py", "csv", json.dumps(created), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads((examples / "outbox" / "sales.json").read_text())["rows"] == 1


def test_a_run_still_running_at_the_timeout_is_stopped(tmp_path: Path) -> None:
    path = tmp_path / "slow.py"
    path.write_text(
        "import threading\nfrom orchestrator import Workflow\n\n"
        "def forever(state):\n    threading.Event().wait()\n\n"
        "w = Workflow(id='slow', pipelines={'go': [forever]})\n"
    )
    out = tried(path, "go", "--timeout", "0.5")
    assert out.returncode == 1, out.stderr
    assert "step.started [forever]" in out.stdout
    assert "still running at step forever after 0.5 s: stopped (see --timeout)" in out.stdout


def _file(tmp_path: Path, text: str | bytes, name: str = "w.py") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


TWO = (
    "from orchestrator import Trigger, Workflow\n"
    "a = Workflow(id='a', pipelines={'go': [dict], 'only_a': [dict]})\n"
    "b = Workflow(id='b', pipelines={'go': [dict]})\n"
)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["a", "nope"], "workflow 'a' has no trigger 'nope' (it has: go, only_a)"),
        (["c", "go"], "w.py has no workflow 'c' (it has: a, b)"),
        (["go"], "w.py: trigger 'go' is in workflows a, b; name the workflow"),
        (["nope"], "w.py has no trigger 'nope' (it has a: go, only_a; b: go)"),
        (["only_a", "{"], "the run's state is refused: "),
        (["only_a", "[1]"], "the run's state is refused: "),
        (["a", "go", "{}", "more"], "try takes [WORKFLOW] TRIGGER [JSON], got 4 values"),
    ],
)
def test_unknown_names_and_bad_json_are_bad_input(
    tmp_path: Path, args: list[str], says: str
) -> None:
    assert says in refused(tried(_file(tmp_path, TWO), *args))


def test_the_trigger_alone_names_the_only_workflow_that_has_it(tmp_path: Path) -> None:
    out = tried(_file(tmp_path, TWO), "only_a", '{"x": 1}', "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == {"x": 1}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("from orchestrator import Workflow\n\nw = Workflow(\n", "w.py:3: syntax error"),
        ("import json\n\nraise SystemExit(4)\n", "w.py:3: the file called sys.exit(4) at import"),
        ("import os\nos._exit(3)\n", "the file ended the process at import (exit code 3)"),
        ("x = 1\n", "w.py: the file defines no module-level Workflow"),
        (b"x = '\xff'\n", "w.py: the file is not UTF-8 text"),
    ],
)
def test_a_file_that_does_not_load_says_where_and_why(
    tmp_path: Path, text: str | bytes, says: str
) -> None:
    error = refused(tried(_file(tmp_path, text), "go"))
    assert says in error and error.rstrip().endswith("[LOAD_FAILED]")


def test_a_file_that_hangs_at_import_is_stopped_by_its_probe(tmp_path: Path) -> None:
    (tmp_path / "orchestrator.toml").write_text("probe_timeout = 0.5\n")
    error = refused(tried(_file(tmp_path, "while True:\n    pass\n"), "go"))
    assert "importing the file did not finish within 0.5 s" in error


def test_what_is_not_a_workflow_file_is_bad_input(tmp_path: Path) -> None:
    assert "no such file: " in refused(tried(tmp_path / "missing.py", "go"))
    assert "is not a file; try takes one workflow file" in refused(tried(tmp_path, "go"))
    huge = tmp_path / "huge.py"
    with huge.open("wb") as out:
        out.truncate(MAX_FILE_BYTES + 1)
    assert f"has {MAX_FILE_BYTES + 1} bytes, more than a workflow file has" in refused(
        tried(huge, "go")
    )


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"a": "\xff"}', "is not valid UTF-8 (byte 0xff"),
        (b"[" * 100_000, "the run's state is refused"),
    ],
)
def test_json_that_is_not_text_or_too_deep_is_bad_input(
    examples: Path, data: bytes, says: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "try", examples / "approval.py", "request", data],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert says in out.stderr.decode() and "Traceback" not in out.stderr.decode()


def test_a_state_over_the_payload_bound_is_bad_input(examples: Path) -> None:
    env = {**os.environ, "ORCHESTRATOR_MAX_PAYLOAD_BYTES": "100"}
    out = subprocess.run(
        [
            *(sys.executable, "-m", "orchestrator", "try", str(examples / "approval.py")),
            *("request", json.dumps({"request_id": "x" * 200})),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 2 and "the run's state is refused" in out.stderr, out.stderr

"""Failed steps journal their traceback (the user's frames, redacted); `show`, `logs` print it."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import traceback_steps
from procs import ROOT, cli, show

from orchestrator import Runtime, Workers
from orchestrator.errors import format_traceback

SECRET = "tok-S3CRET-4471"
STEPS_FILE = Path(traceback_steps.__file__).name


def runtime(db: Path) -> Runtime:
    return Runtime(
        db,
        workflows=[traceback_steps.WORKFLOW],
        env={"API_TOKEN": SECRET},
        secrets=["API_TOKEN"],
        workers=Workers(max=1, warm=0),
    )


def failed_entry(shown: dict[str, object]) -> dict[str, object]:
    timeline = shown["timeline"]
    assert isinstance(timeline, list)
    return next(entry for entry in timeline if entry["kind"] == "step.failed")


@pytest.mark.parametrize("pipeline", ["inline", "thread", "async", "isolated"])
async def test_a_failed_step_journals_its_traceback_redacted(
    db: Path, pipeline: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator.runtime"):
        async with runtime(db) as rt:
            result = await rt.invoke("tb", pipeline, {"token": SECRET})
    assert result.error_code == "STEP_FAILED"
    trace = failed_entry(show(db, result.run_id))["data"]["traceback"]  # type: ignore[index]
    assert f'{STEPS_FILE}", line' in trace and "in _check" in trace and "in parse" in trace
    assert traceback_steps.RAISING_LINE in trace  # the source line
    assert "orchestrator/" not in trace.replace(str(ROOT), "")  # the orchestrator's frames cut
    assert trace.rstrip().endswith("ValueError: cannot parse ***")
    assert SECRET not in trace
    # The state is journaled as the step got it (documented); the timeline is redacted.
    text = cli("show", result.run_id, "--db", str(db)).stdout.split("\ntimeline\n")[1]
    assert f'{STEPS_FILE}", line' in text and SECRET not in text
    # The human output keeps one line a line, the traceback under its entry.
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if " step.failed " in line and "***" in line)
    assert lines[at + 1].strip() == "Traceback (most recent call last):"
    logged = [r for r in caplog.records if r.name == "orchestrator.runtime" and "failed" in r.msg]
    assert len(logged) == 1
    message = logged[0].getMessage()
    assert result.run_id in message and "tb" in message and "STEP_FAILED" in message
    assert "parse" in message and SECRET not in message


async def test_logs_prints_one_run_or_all_with_tracebacks(db: Path) -> None:
    async with runtime(db) as rt:
        first = await rt.invoke("tb", "thread", {"token": "a"})
        second = await rt.invoke("tb", "inline", {"token": "b"})
    one = cli("logs", first.run_id[:8], "--db", str(db))
    assert one.returncode == 0, one.stderr
    assert first.run_id[:8] in one.stdout and second.run_id[:8] not in one.stdout
    assert "step.failed [parse]" in one.stdout and "Traceback (most recent" in one.stdout
    every = cli("logs", "--db", str(db)).stdout.splitlines()
    runs = [line.split()[2] for line in every if " step.failed " in line]
    assert runs == [first.run_id[:8], second.run_id[:8]]  # oldest first
    assert cli("logs", "--limit", "1", "--db", str(db)).stdout.count("step.failed") == 1
    missing = cli("logs", "--db", str(db.with_name("none.db")))
    assert missing.returncode == 0 and missing.stdout == ""


async def test_logs_json_prints_one_object_a_line_with_the_traceback_in_its_data(
    db: Path,
) -> None:
    async with runtime(db) as rt:
        failed = await rt.invoke("tb", "thread", {"token": "a"})
    out = cli("logs", failed.run_id, "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(
        set(entry) == {"id", "run_id", "at", "source", "kind", "step", "message", "data"}
        for entry in entries
    )
    [entry] = [entry for entry in entries if entry["kind"] == "step.failed"]
    assert entry["run_id"] == failed.run_id and entry["step"] == "parse"
    assert entry["data"]["traceback"].startswith("Traceback (most recent call last):")
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)  # oldest first
    assert entry["at"].endswith("Z")


async def fail_once(db: Path, token: str) -> str:
    async with runtime(db) as rt:
        return (await rt.invoke("tb", "thread", {"token": token})).run_id


def test_logs_follow_sees_an_entry_committed_after_it_started(db: Path) -> None:
    asyncio.run(fail_once(db, "before"))
    with subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "logs", "-f", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)  # a follower that hangs fails, not the suite
        watchdog.start()
        try:
            assert proc.stdout is not None
            assert "step.failed" in proc.stdout.readline()  # what was there: it is reading
            after = asyncio.run(fail_once(db, "after"))
            line = proc.stdout.readline()
            while line and " step.failed " not in line:  # "": it ended instead of following
                line = proc.stdout.readline()
            assert after[:8] in line
        finally:
            watchdog.cancel()
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(timeout=30) == 0


def test_a_long_traceback_keeps_its_head_and_tail() -> None:
    try:
        traceback_steps._check("long " * 1000)
    except ValueError as exc:
        text = format_traceback(exc, limit=2000)
    assert len(text) <= 2000
    assert text.startswith("Traceback (most recent call last):") and "in _check" in text
    assert "characters cut" in text and text.rstrip().endswith("long long")


def test_chained_exceptions_keep_the_users_frames_only() -> None:
    def outer() -> None:
        try:
            traceback_steps._check("x")
        except ValueError as exc:
            raise RuntimeError("wrapped") from exc

    try:
        asyncio.run(asyncio.to_thread(outer))
    except RuntimeError as exc:
        text = format_traceback(exc)
    assert "in _check" in text and "in outer" in text and "direct cause" in text
    assert "asyncio/" not in text and "concurrent/" not in text and "threading.py" not in text

"""`orchestrator up` as a real process: hot reload, the lease, stopping, and `invoke`.

Every daemon here is ``python -m orchestrator up DIR --headless`` (`procs.Daemon`), every
command a real ``python -m orchestrator`` process; workflow files are plain files in
``tmp_path`` that the daemon's watcher picks up. Nothing is timed tightly: each test waits
for conditions, with generous limits for a shared machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, alive, cli, query

from orchestrator.cli.daemon import GC_THRESHOLDS, SWITCH_INTERVAL
from orchestrator.folder.loader import digest_of
from orchestrator.testing import eventually_blocking

TIMEOUT = 30.0


def write(path: Path, text: str) -> bytes:
    data = textwrap.dedent(text).encode()
    path.write_bytes(data)
    return data


def value_flow(workflow_id: str, value: str) -> str:
    """A workflow file whose one step sets ``state["value"] = value``."""
    return textwrap.dedent(
        f"""\
        from orchestrator import Workflow


        def step(state):
            return {{**state, "value": "{value}"}}


        workflow = Workflow(id="{workflow_id}", pipelines={{"go": [step]}})
        """
    )


def workflows(db: Path) -> dict[str, Any]:
    """``orchestrator workflows --json``."""
    out = cli("workflows", "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def versions(document: dict[str, Any]) -> dict[str, str]:
    return {w["workflow_id"]: w["version"] for w in document["workflows"]}


def invoke(db: Path, workflow_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("invoke", workflow_id, "go", *extra, "--db", str(db))


def show(db: Path, run_id: str) -> dict[str, Any]:
    out = cli("show", run_id, "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    shown: dict[str, Any] = json.loads(out.stdout)
    return shown


def run_status(db: Path, run_id: str) -> str | None:
    rows = query(db, "SELECT status FROM runs WHERE run_id = ?", (run_id,))
    return rows[0][0] if rows else None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "workflows").resolve()
    path.mkdir()
    return path


# -- hot reload ---------------------------------------------------------------------------


def test_hot_reload_keeps_the_last_good_version_through_every_kind_of_broken_edit(
    folder: Path, db: Path
) -> None:
    (folder / "orchestrator.toml").write_text("probe_timeout = 1\n")
    one = write(folder / "one.py", value_flow("one", "one"))
    with Daemon(folder, db) as daemon:
        daemon.start()

        def reloaded(what: str, check: Any) -> dict[str, Any]:
            def poll() -> dict[str, Any] | None:
                document = workflows(db)
                return document if check(document) else None

            result: dict[str, Any] = eventually_blocking(
                alive(daemon.proc, poll, what, daemon.log),
                what=what,
                timeout=TIMEOUT,
                interval=0.1,  # each look is a CLI process
                details=daemon.log,
            )
            return result

        def runs_value(expected: str, version: str) -> None:
            out = invoke(db, "two", "--wait")
            assert out.returncode == 0, out.stderr
            shown = show(db, out.stdout.strip())
            assert shown["status"] == "completed"
            assert shown["state"] == {"value": expected}
            assert shown["version"] == version

        path = folder / "two.py"
        v1 = write(path, value_flow("two", "v1"))
        document = reloaded("two.py to load", lambda d: "two" in versions(d))
        assert versions(document) == {"one": digest_of(one), "two": digest_of(v1)}
        [two] = [w for w in document["workflows"] if w["workflow_id"] == "two"]
        assert two["file"] == str(path) and document["errors"] == []
        runs_value("v1", digest_of(v1))

        broken = [
            ("syntax", value_flow("two", "v2").replace("def step", "def step(("), 4, "syntax"),
            ("loop", "while True:\n    pass\n", None, "did not finish within 1 s"),
            ("exit", "import sys\n\nsys.exit(4)\n", 3, "sys.exit(4)"),
        ]
        for kind, source, line, reason in broken:
            write(path, source)
            document = reloaded(
                f"the {kind} error",
                lambda d, reason=reason: any(reason in e["message"] for e in d["errors"]),
            )
            [error] = document["errors"]
            assert (error["file"], error["line"]) == (str(path), line), kind
            assert versions(document)["two"] == digest_of(v1), f"{kind}: last good stays"
            runs_value("v1", digest_of(v1))

        v2 = write(path, value_flow("two", "v2"))
        # The new version and the cleared error may commit apart: wait for both.
        reloaded("the fix", lambda d: versions(d).get("two") == digest_of(v2) and d["errors"] == [])
        runs_value("v2", digest_of(v2))

        path.unlink()
        document = reloaded("two to go", lambda d: "two" not in versions(d))
        assert versions(document) == {"one": digest_of(one)} and document["errors"] == []
        out = invoke(db, "two", "--wait")
        assert out.returncode == 2 and "no workflow 'two'" in out.stderr
        assert "loaded: one" in out.stderr

        assert document["daemon"]["pid"] == daemon.pid and document["daemon"]["ready"]
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.stop() == 0


# -- the lease ----------------------------------------------------------------------------


def test_a_second_daemon_is_refused_and_a_killed_ones_lease_is_taken_over_at_once(
    folder: Path, db: Path
) -> None:
    write(folder / "one.py", value_flow("one", "one"))
    with Daemon(folder, db) as first:
        first.start()
        second = cli("up", str(folder), "--db", str(db), "--headless")
        assert second.returncode != 0
        assert f"pid {first.pid}" in second.stderr
        assert first.proc is not None and first.proc.poll() is None, "the first one goes on"
        assert workflows(db)["daemon"]["pid"] == first.pid

        first.kill()
        # The heartbeat looks fresh for an hour: only the dead pid lets the next one in.
        query(db, "UPDATE lease SET heartbeat_at = heartbeat_at + 3600000000")
        with Daemon(folder, db) as third:
            third.start()
            document = workflows(db)
            assert document["daemon"]["pid"] == third.pid and document["daemon"]["ready"]
            assert versions(document) == {"one": digest_of((folder / "one.py").read_bytes())}


# -- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_cleanly_and_releases_the_lease(
    folder: Path, db: Path, sig: signal.Signals
) -> None:
    write(folder / "one.py", value_flow("one", "one"))
    with Daemon(folder, db) as daemon:
        daemon.start()
        assert workflows(db)["daemon"]["pid"] == daemon.pid
        assert daemon.stop(sig) == 0, daemon.log()
    assert query(db, "SELECT count(*) FROM lease") == [(0,)]
    assert workflows(db)["daemon"] is None
    assert "stopped cleanly" in daemon.log()


def napping_flow(marks: Path, *, seconds: float, sync: bool, first_only: bool) -> str:
    """A workflow whose step notes each start in `marks`, sleeps, then notes its end."""
    # Slow on purpose: a step longer or shorter than the grace period is what is tested.
    sleep = f"time.sleep({seconds})" if sync else f"await asyncio.sleep({seconds})"
    condition = 'marks.read_text().count("started") == 1' if first_only else "True"
    return textwrap.dedent(
        f"""\
        import asyncio
        import time
        from pathlib import Path

        from orchestrator import Workflow


        {"def" if sync else "async def"} nap(state):
            marks = Path({str(marks)!r})
            with marks.open("a") as file:
                file.write("started\\n")
            if {condition}:
                {sleep}
            with marks.open("a") as file:
                file.write("finished\\n")
            return {{**state, "napped": True}}


        workflow = Workflow(id="nap", pipelines={{"go": [nap]}})
        """
    )


def marks_of(marks: Path) -> list[str]:
    return marks.read_text().split() if marks.exists() else []


@pytest.mark.parametrize("sync", [False, True], ids=["async-step", "sync-step"])
def test_a_step_longer_than_the_grace_is_cancelled_at_stop_and_runs_again_after_restart(
    folder: Path, db: Path, tmp_path: Path, sync: bool
) -> None:
    marks = tmp_path / "marks"
    write(folder / "nap.py", napping_flow(marks, seconds=30, sync=sync, first_only=True))
    with Daemon(folder, db, "--grace", "1") as daemon:
        daemon.start()
        out = invoke(db, "nap")
        assert out.returncode == 0, out.stderr
        run_id = out.stdout.strip()
        daemon.wait_until(lambda: marks_of(marks) == ["started"], TIMEOUT, "the step to start")
        started = time.monotonic()
        assert daemon.stop() == 0, daemon.log()
        # 30 s of sleep against a 1 s grace: well under 30 s means the step was not awaited.
        assert time.monotonic() - started < 15, daemon.log()
    assert marks_of(marks) == ["started"]
    assert run_status(db, run_id) == "running", "left to run again, not failed"
    assert query(db, "SELECT count(*) FROM lease") == [(0,)]

    with Daemon(folder, db, "--grace", "1") as daemon:
        daemon.start()
        daemon.wait_until(
            lambda: run_status(db, run_id) == "completed",
            TIMEOUT,
            "the run to complete after the restart",
        )
        assert show(db, run_id)["state"] == {"napped": True}
        assert marks_of(marks) == ["started", "started", "finished"]
        assert daemon.stop() == 0


def test_a_step_shorter_than_the_grace_finishes_before_the_daemon_exits(
    folder: Path, db: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    write(folder / "nap.py", napping_flow(marks, seconds=1.5, sync=False, first_only=False))
    with Daemon(folder, db, "--grace", "20") as daemon:
        daemon.start()
        out = invoke(db, "nap")
        run_id = out.stdout.strip()
        daemon.wait_until(lambda: marks_of(marks) == ["started"], TIMEOUT, "the step to start")
        assert daemon.stop(signal.SIGINT) == 0, daemon.log()
    assert marks_of(marks) == ["started", "finished"]
    assert run_status(db, run_id) == "completed"
    assert query(db, "SELECT count(*) FROM lease") == [(0,)]


# -- invoke -------------------------------------------------------------------------------


def test_invoke_wait_without_a_daemon_says_so_and_the_run_starts_with_the_next_daemon(
    folder: Path, db: Path
) -> None:
    write(folder / "late.py", value_flow("late", "finally"))
    started = time.monotonic()
    out = cli("invoke", "late", "go", '{"n": 1}', "--wait", "--db", str(db))
    elapsed = time.monotonic() - started
    assert out.returncode == 1
    assert "no daemon" in out.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s to notice that no daemon runs"
    run_id = out.stdout.strip()
    # A queued run the journal knows at once, not started until a daemon applies it.
    assert run_id and run_status(db, run_id) == "queued"

    with Daemon(folder, db) as daemon:
        daemon.start()
        daemon.wait_until(
            lambda: run_status(db, run_id) == "completed", TIMEOUT, "the queued run to complete"
        )
        assert show(db, run_id)["state"] == {"n": 1, "value": "finally"}


def test_invoke_exit_codes_with_a_ready_daemon(folder: Path, db: Path) -> None:
    write(folder / "one.py", value_flow("one", "one"))
    write(
        folder / "broken_step.py",
        """\
        from orchestrator import Workflow


        def explode(state):
            raise ValueError("the warehouse is on fire")


        def wait(state, ctx):
            return ctx.pause(event="never")


        failing = Workflow(id="failing", pipelines={"go": [explode]})
        waiting = Workflow(id="waiting", pipelines={"go": [wait]})
        """,
    )
    with Daemon(folder, db) as daemon:
        daemon.start()

        ok = invoke(db, "one", '{"n": 1}', "--wait")
        assert ok.returncode == 0 and "completed" in ok.stderr, ok.stderr
        assert 'state {"n": 1, "value": "one"}' in ok.stderr.splitlines()
        assert show(db, ok.stdout.strip())["state"] == {"n": 1, "value": "one"}

        paused = invoke(db, "waiting", "--wait")
        assert paused.returncode == 0 and "paused" in paused.stderr, paused.stderr

        failed = invoke(db, "failing", "--wait")
        assert failed.returncode == 1
        assert "failed" in failed.stderr and "the warehouse is on fire" in failed.stderr
        failed_id = failed.stdout.strip()
        assert run_status(db, failed_id) == "failed"
        # One line in the daemon's log, and the step's own frame in the journal.
        line = f"run {failed_id} of failing failed at step explode: STEP_FAILED: "
        daemon.wait_until(lambda: line in daemon.log(), TIMEOUT, "the failed run's log line")
        assert daemon.log().count(f"run {failed_id} of failing failed") == 1
        entry = next(e for e in show(db, failed_id)["timeline"] if e["kind"] == "step.failed")
        trace = entry["data"]["traceback"]
        assert f'{folder / "broken_step.py"}", line 5, in explode' in trace
        assert 'raise ValueError("the warehouse is on fire")' in trace

        unknown = invoke(db, "nope", "--wait")
        assert unknown.returncode == 2
        assert "no workflow 'nope'" in unknown.stderr
        assert "loaded: failing, one, waiting" in unknown.stderr
        assert unknown.stdout == ""

        no_trigger = cli("invoke", "one", "nope", "--db", str(db))
        assert no_trigger.returncode == 2 and "has no trigger 'nope'" in no_trigger.stderr

        bad_json = invoke(db, "one", "{not json")
        assert bad_json.returncode == 2 and bad_json.stdout == ""
        assert daemon.proc is not None and daemon.proc.poll() is None


# -- reading a journal with no daemon -----------------------------------------------------


def test_workflows_on_a_missing_journal_prints_an_empty_result(db: Path) -> None:
    assert workflows(db) == {"workflows": [], "errors": [], "daemon": None, "standbys": []}
    text = cli("workflows", "--db", str(db))
    assert text.returncode == 0
    assert "daemon: none running" in text.stdout and "no workflows loaded" in text.stdout
    assert not db.exists(), "a reading command creates no journal"


# -- the garbage collector ----------------------------------------------------------------


def test_the_daemon_tunes_its_own_garbage_collector_and_switch_interval(
    folder: Path, db: Path
) -> None:
    write(
        folder / "gc_probe.py",
        """\
        import gc
        import sys

        from orchestrator import Workflow


        async def probe(state):  # async: it runs in the daemon's own process
            return {
                "threshold": list(gc.get_threshold()),
                "frozen": gc.get_freeze_count(),
                "switch": sys.getswitchinterval(),
            }


        workflow = Workflow(id="gc_probe", pipelines={"go": [probe]})
        """,
    )
    with Daemon(folder, db) as daemon:
        daemon.start()
        out = invoke(db, "gc_probe", "--wait")
        assert out.returncode == 0, out.stderr
        state = show(db, out.stdout.strip())["state"]
        assert daemon.stop() == 0
    assert state["threshold"] == list(GC_THRESHOLDS)
    assert state["frozen"] > 0  # what was loaded at start is out of every collection
    assert state["switch"] == SWITCH_INTERVAL

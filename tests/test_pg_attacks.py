"""A daemon on a PostgreSQL journal under attack: real processes, a real server.

The server stopped and started again under a running daemon; a daemon frozen past its
lease while another takes its journal over (running and paused runs); hostile input on the
command line. Acknowledged work is never lost, no step's checkpoint is written twice, a
fenced daemon's writes never land, and no password reaches a log or an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from postgres import Cluster
from procs import ROOT, Daemon, cli, query

from orchestrator.clock import Clock
from orchestrator.journal.liveness import STALE_AFTER_US
from orchestrator.journal.postgres.connection import connect_options, parse_url
from orchestrator.testing import eventually_blocking

STEPS = 6
PASSWORD = "s3cret"


def slow_flow(folder: Path, seconds: float) -> None:
    """A workflow whose `STEPS` steps each take `seconds` and count in ``state["n"]``."""
    folder.mkdir()
    (folder / "slow.py").write_text(
        textwrap.dedent(
            f"""\
            import time

            from orchestrator import Workflow


            def step(state):
                time.sleep({seconds})
                return {{**state, "n": state.get("n", 0) + 1}}


            workflow = Workflow(id="slow", pipelines={{"go": [step] * {STEPS}}})


            def wait(state, ctx):
                return ctx.pause(event="go.on", into="got")


            waiting = Workflow(id="waiting", pipelines={{"go": [wait, step]}})
            """
        )
    )


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def invoke(url: str, count: int) -> list[str]:
    """`count` runs of ``slow``, acknowledged by the CLI: their ids."""
    ids = []
    for _ in range(count):
        done = cli("invoke", "slow", "go", "--db", url)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    return ids


def checkpoints(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM checkpoints")[0][0])


def assert_each_ran_once(url: str, run_ids: list[str]) -> None:
    """Each run's steps are all there, in order, none twice, and its state says so."""
    for run_id in run_ids:
        rows = query(
            url,
            "SELECT c.position FROM checkpoints c JOIN runs r ON r.id = c.run"
            " WHERE r.run_id = ? ORDER BY c.position",
            (run_id,),
        )
        assert [row[0] for row in rows] == list(range(STEPS + 1)), run_id
        shown = cli("show", run_id, "--json", "--db", url)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == {"n": STEPS}, run_id


def all_completed(url: str, run_ids: list[str]) -> bool:
    rows = query(url, "SELECT run_id, status FROM runs")
    done = {run_id for run_id, status in rows if status == "completed"}
    return done >= set(run_ids)


def test_a_server_stopped_and_started_again_under_a_daemon_loses_nothing(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    url = with_password(own_cluster.create_database("outage"))
    folder = tmp_path / "flows"
    slow_flow(folder, 0.2)
    with Daemon(folder, url) as daemon:  # type: ignore[arg-type]
        daemon.start()
        run_ids = invoke(url, 4)
        daemon.wait_until(lambda: checkpoints(url) > len(run_ids), 60, "the runs to be running")
        own_cluster.halt()
        daemon.wait_until(lambda: "journal writes failing" in daemon.log(), 60, "the outage")
        own_cluster.resume()  # well within the writer's patience (30 s)
        daemon.wait_until(lambda: all_completed(url, run_ids), 120, "the runs to complete")
        assert_each_ran_once(url, run_ids)
        assert "journal writes recovered" in daemon.log()
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "Traceback" not in log and PASSWORD not in log


def test_a_daemon_stopped_while_the_server_is_down_never_says_it_exited_cleanly(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    """SIGTERM during an outage: its last writes cannot land, so exit 3 (not 0); a daemon
    started once the server is back finishes every run."""
    url = with_password(own_cluster.create_database("down"))
    folder = tmp_path / "flows"
    slow_flow(folder, 0.2)
    with Daemon(folder, url) as daemon:  # type: ignore[arg-type]
        daemon.start()
        run_ids = invoke(url, 3)
        daemon.wait_until(lambda: checkpoints(url) > len(run_ids), 60, "the runs to be running")
        own_cluster.halt()
        daemon.wait_until(lambda: "journal writes failing" in daemon.log(), 60, "the outage")
        assert daemon.stop() == 3, daemon.log()
        assert "runs can no longer be recorded" in daemon.log()
    own_cluster.resume()
    with Daemon(folder, url) as again:  # type: ignore[arg-type]
        again.start()
        again.wait_until(lambda: all_completed(url, run_ids), 120, "the runs to complete")
        assert_each_ran_once(url, run_ids)
        assert again.stop() == 0, again.log()
    assert "Traceback" not in again.log() and PASSWORD not in again.log()


def test_a_frozen_daemon_is_fenced_by_the_next_and_its_writes_never_land(
    tmp_path: Path, pg_url: str
) -> None:
    url = with_password(pg_url)
    folder = tmp_path / "flows"
    slow_flow(folder, 0.3)
    with Daemon(folder, url) as first, Daemon(folder, url) as second:  # type: ignore[arg-type]
        first.start()
        run_ids = invoke(url, 3)
        paused = cli("invoke", "waiting", "go", "--db", url)
        assert paused.returncode == 0, paused.stderr
        waiting = paused.stdout.strip()
        first.wait_until(
            lambda: (
                query(url, "SELECT status FROM runs WHERE run_id = ?", (waiting,)) == [("paused",)]
            ),
            60,
            "a run to pause",
        )
        first.wait_until(lambda: checkpoints(url) > len(run_ids), 60, "the runs to be running")
        os.kill(first.pid, signal.SIGSTOP)
        try:

            def stale() -> bool:
                rows = query(url, "SELECT heartbeat_at FROM daemons WHERE pid = ?", (first.pid,))
                return bool(rows[0][0] < Clock().now_us() - STALE_AFTER_US)

            eventually_blocking(stale, what="the frozen daemon to be stale", timeout=60)
            second.start()  # takes the journal over: fences the first
            emitted = cli("emit", "go.on", '{"ok": true}', "--db", url)
            assert emitted.returncode == 0, emitted.stderr  # resumes the paused run
            everything = [*run_ids, waiting]
            second.wait_until(lambda: all_completed(url, everything), 120, "the runs to complete")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert first.proc is not None
        assert first.proc.wait(timeout=60) == 3, first.log()  # its next batch is refused
        assert "fenced" in first.log()
        # Every batch of a daemon writes its heartbeat: none of the first's landed after
        # the fence.
        [(heartbeat_at, fenced_at)] = query(
            url, "SELECT heartbeat_at, fenced_at FROM daemons WHERE pid = ?", (first.pid,)
        )
        assert fenced_at is not None and heartbeat_at < fenced_at
        assert_each_ran_once(url, run_ids)
        shown = cli("show", waiting, "--json", "--db", url)
        assert json.loads(shown.stdout)["state"] == {"got": {"ok": True}, "n": 1}
        assert second.stop() == 0, second.log()
    log = first.log()  # both daemons write to the one log file
    assert "Traceback" not in log and PASSWORD not in log


@pytest.mark.parametrize(
    "args",
    [
        ("emit", "t\x01y", "{}"),
        ("emit", "t", '{"a": "\\u0000"}'),
        ("emit", "t", "{}", "--key", "k\x7f"),
        ("emit", "t", '{"a": "\\ud800"}'),
        ("emit", "t", "[" * 5000 + "]" * 5000),
        ("emit", "t" * 2000, "{}"),
        ("emit", "t", "{}", "--key", "k" * 300),
        ("emit", os.fsdecode(b"t\xff"), "{}"),
        ("invoke", os.fsdecode(b"w\xff"), "go"),
        ("show", os.fsdecode(b"\xfe")),
        ("runs", "--workflow", os.fsdecode(b"a\xffb")),
        ("logs", "a" * 5000),
        ("resume", "nope", '{"a": "\\ud800"}'),
        ("signal", "nope", "x" * 100_000),
    ],
    ids=lambda args: f"{args[0]}:{ascii(args[1:])[:30]}",
)
def test_hostile_cli_input_on_a_postgresql_journal_gets_one_line(
    tmp_path: Path, pg_url: str, args: tuple[str, ...]
) -> None:
    """A clean result or one error line; never a traceback, never the password."""
    url = with_password(pg_url)
    assert cli("journal", "migrate", "--db", url).returncode == 0
    done = cli(*args, "--db", url)
    assert "Traceback" not in done.stderr and PASSWORD not in done.stdout + done.stderr
    if done.returncode != 0:
        assert done.returncode in (1, 2), done
        errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert cli("emit", "still.works", "{}", "--db", url).returncode == 0


def test_a_url_with_its_own_options_keeps_them_and_finds_the_journal(
    tmp_path: Path, pg_url: str
) -> None:
    """``?options=...`` replaced the journal's search_path: "relation runs does not exist"."""
    url = with_password(pg_url) + "?options=-c%20statement_timeout%3D4321"
    folder = tmp_path / "flows"
    slow_flow(folder, 0)
    with Daemon(folder, url) as daemon:  # type: ignore[arg-type]
        daemon.start()
        [run_id] = invoke(url, 1)
        daemon.wait_until(lambda: all_completed(url, [run_id]), 60, "the run to complete")
        listed = cli("runs", "--json", "--db", url)
        assert listed.returncode == 0 and run_id in listed.stdout, listed.stderr
        assert daemon.stop() == 0, daemon.log()
    options = connect_options(parse_url(url))
    with psycopg.connect(url, **options) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)


TALK = """
from orchestrator import Workflow


def say(state, ctx):
    ctx.log.info("said after the restart")
    return state


workflow = Workflow(id="talk", pipelines={"go": [say]})
"""


def test_invoke_wait_and_logs_follow_outlast_a_server_restart(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    """Both exited 2 ("cannot connect ... the database system is shutting down") on a
    restart of a second, while the daemon went on and the run completed.

    The outage begins once both follow: the invoke printed its run's id (queued, its
    reader may still be opening) and the follower printed an earlier run's line.
    """
    url = with_password(own_cluster.create_database("follow"))
    folder = tmp_path / "flows"
    slow_flow(folder, 0.5)
    (folder / "talk.py").write_text(TALK)
    with Daemon(folder, url) as daemon:  # type: ignore[arg-type]
        daemon.start()
        said = cli("invoke", "talk", "go", "--wait", "--db", url)
        assert said.returncode == 0, said.stderr
        [run_id] = invoke(url, 1)
        command = [sys.executable, "-m", "orchestrator"]
        outs = {name: (tmp_path / f"{name}.out", tmp_path / f"{name}.err") for name in ("w", "f")}
        procs = {}
        for name, args in (("w", ["invoke", "slow", "go", "--wait"]), ("f", ["logs", "-f"])):
            out, err = outs[name]
            with out.open("w") as stdout, err.open("w") as stderr:
                procs[name] = subprocess.Popen(
                    [*command, *args, "--db", url], stdout=stdout, stderr=stderr, cwd=ROOT
                )

        def said_lines() -> int:
            return outs["f"][0].read_text().count("said after the restart")

        try:
            daemon.wait_until(lambda: said_lines() == 1 or None, 60, "the follower to follow")
            daemon.wait_until(lambda: outs["w"][0].read_text().strip() or None, 60, "the invoke")
            own_cluster.halt()
            daemon.wait_until(lambda: "journal writes failing" in daemon.log(), 60, "the outage")
            own_cluster.resume()
            waited = procs["w"].wait(timeout=120)
            assert waited == 0, (outs["w"][1].read_text(), daemon.log())
            assert "completed" in outs["w"][1].read_text()
            waited_id = outs["w"][0].read_text().strip()
            daemon.wait_until(lambda: all_completed(url, [run_id, waited_id]), 60, "the runs")
            talked = cli("invoke", "talk", "go", "--db", url)
            assert talked.returncode == 0, talked.stderr
            daemon.wait_until(  # the follower prints what was journaled after the restart
                lambda: said_lines() == 2 or None, 60, "the follower to print the new run's line"
            )
            assert procs["f"].poll() is None, outs["f"][1].read_text()
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                proc.wait(timeout=60)
        assert daemon.stop() == 0, daemon.log()
    for _, err in outs.values():
        text = err.read_text()
        assert "Traceback" not in text and PASSWORD not in text, text

"""Attacks on the steps standbys serve (real daemons, PostgreSQL): hostile rows and timing.

The active daemon has one worker; a first run's step holds it (a gate file), so the next
run's step is offered to the standby. Each test then attacks the table or the processes
and reads the journal: every run ends, no daemon exits, no secret reaches `step_jobs`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from postgres import Cluster
from procs import cli, query
from test_pg_spread_steps import all_ended, daemons, emit, flows_folder, mark, marks, open_gate

WAIT = 60.0
SECRET = "s3cr3t-of-the-workflow-env"
RUNTIME_SECRET = "s3cr3t-of-the-active-daemon"

FLOW = """
import os
import pathlib
import time

from orchestrator import Step, Trigger, Workflow

MARKS = pathlib.Path(__file__).resolve().parent.parent / "marks"


def work(state, ctx):
    (MARKS / f"{state['n']}.start").write_text(f"{os.getppid()} {os.getpid()}")
    mode = state.get("mode", "")
    if mode.startswith("corrupt"):
        return {**state, "daemon": os.getppid()}
    if mode == "secret":
        ctx.log.info(f"env {ctx.env['API_SECRET']} runtime {ctx.env.get('SHOP_TOKEN', '-')}")
    if mode == "huge":
        return {**state, "daemon": os.getppid(), "big": "x" * 5_000_000}
    if mode == "surrogate":
        return {**state, "daemon": os.getppid(), "bad": "a\\udcffb"}
    if mode == "nul":
        return {**state, "daemon": os.getppid(), "k\\x00": "v\\x00"}
    if mode == "raise surrogate":
        raise RuntimeError("bad \\udcff text")
    if mode == "raise surrogate type":
        raise type("Bad\\udcffError", (Exception,), {})("a message")
    if mode == "log surrogate":
        ctx.log.info("bad \\udcff line")
        return {**state, "daemon": os.getppid()}
    if mode == "print":  # what step code prints reaches its daemon's log
        print(f"printed {ctx.env['API_SECRET']} and {ctx.env.get('SHOP_TOKEN', '-')}", flush=True)
    deadline = time.monotonic() + 120
    while not (MARKS / "gate").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if mode == "secret":
        raise RuntimeError(f"refused with {ctx.env['API_SECRET']}")
    return {**state, "daemon": os.getppid()}


async def done(state):
    return {**state, "done": True}


workflow = Workflow(
    id="job",
    triggers={"go": Trigger(event="job")},
    pipelines={"go": [Step(work), done]},
    env={"API_SECRET": "THE-VALUE"},
)
""".replace("THE-VALUE", SECRET)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return flows_folder(tmp_path, FLOW)


def emit_state(url: str, state: dict[str, object]) -> None:
    done = cli("emit", "job", json.dumps(state), "--db", url)
    assert done.returncode == 0, done.stderr


AUDIT = """
CREATE TABLE step_jobs_seen (id bigint, request text, state text, reply text);
CREATE FUNCTION step_jobs_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO step_jobs_seen VALUES (NEW.id, NEW.request, NEW.state, NEW.reply);
  RETURN NEW;
END $$;
CREATE TRIGGER step_jobs_seen AFTER INSERT OR UPDATE ON step_jobs
  FOR EACH ROW EXECUTE FUNCTION step_jobs_seen();
"""


def audit(url: str) -> None:
    """Keep every version of every `step_jobs` row (in `step_jobs_seen`)."""
    query(url, AUDIT)


def seen(url: str) -> list[tuple[object, ...]]:
    return query(url, "SELECT id, request, state, reply FROM step_jobs_seen")


def test_no_secret_reaches_the_step_jobs_table(
    folder: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", RUNTIME_SECRET)
    with daemons(folder, pg_url, 1, 1) as (active, standby):
        audit(pg_url)
        emit(pg_url, 1)
        active.wait_until(partial(mark, folder, 1), WAIT, "the first step")
        emit_state(pg_url, {"n": 2, "mode": "secret"})
        daemon, _ = active.wait_until(partial(mark, folder, 2), WAIT, "the second step")
        assert daemon == standby.pid
        open_gate(folder)
        ended = active.wait_until(partial(all_ended, pg_url, 2), WAIT, "the runs to end")
        rows = seen(pg_url)
    assert ended[2][0] == "failed"
    assert any(row[3] is not None for row in rows)  # the reply, as the standby wrote it
    text = "\n".join(json.dumps(row) for row in rows)
    assert "refused with" in text
    assert SECRET not in text and RUNTIME_SECRET not in text


def test_what_a_step_prints_on_a_standby_is_masked_in_the_standbys_log(
    folder: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby's log masks the workflow's secrets as the active daemon's log does."""
    monkeypatch.setenv("SHOP_TOKEN", RUNTIME_SECRET)
    with daemons(folder, pg_url, 1, 1) as (active, standby):
        emit(pg_url, 1)
        active.wait_until(partial(mark, folder, 1), WAIT, "the first step")
        emit_state(pg_url, {"n": 2, "mode": "print"})
        daemon, _ = active.wait_until(partial(mark, folder, 2), WAIT, "the second step")
        assert daemon == standby.pid
        standby.wait_until(lambda: "printed" in standby.log() or None, WAIT, "the printed line")
        open_gate(folder)
        ended = active.wait_until(partial(all_ended, pg_url, 2), WAIT, "the runs to end")
    assert ended[2][0] == "completed"
    assert "printed *** and ***" in standby.log(), standby.log()
    assert SECRET not in standby.log() and RUNTIME_SECRET not in standby.log()


# Another process corrupting the rows: a request as it is offered, a reply as it is written
# (what it becomes: the state's "mode" says).
CORRUPT = """
CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF strpos(NEW.state, '"corrupt request text"') > 0 THEN NEW.request := 'not json {'; END IF;
  IF strpos(NEW.state, '"corrupt request shape"') > 0 THEN NEW.request := '{"workflow": 1}'; END IF;
  IF NEW.reply IS NOT NULL THEN
    IF strpos(NEW.state, '"corrupt reply text"') > 0 THEN NEW.reply := 'not json {'; END IF;
    IF strpos(NEW.state, '"corrupt reply list"') > 0 THEN NEW.reply := '[1, 2]'; END IF;
    IF strpos(NEW.state, '"corrupt reply state"') > 0 THEN
      NEW.reply := '{"ok": "not json {"}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply outbox"') > 0 THEN
      NEW.reply := '{"ok": "{}", "outbox": {"emits": [[1, 2, 3]], "starts": [["r", 5, 6, 7]]}}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply pause"') > 0 THEN
      NEW.reply := '{"pause": {"event": "go", "conditions": "x", "into": null, "timeout": null,'
        || ' "on_timeout": "fail"}}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply wait"') > 0 THEN
      NEW.reply := '{"pause": {"event": 5, "conditions": [], "into": 7, "timeout": "soon",'
        || ' "on_timeout": "fail"}}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply emit"') > 0 THEN
      NEW.reply := '{"ok": "{}", "outbox": {"emits": [["' || repeat('e', 32)
        || '", "a\\u0000b", {}, null]]}}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply start"') > 0 THEN
      NEW.reply := '{"ok": "{}", "outbox": {"starts": [["' || repeat('f', 32)
        || '", "job", "go", {"x": "\\ud800"}, null]]}}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply crashed"') > 0 THEN
      NEW.reply := '{"crashed": "a\\u0000\\ud800", "by": "\\ud800"}';
    END IF;
    IF strpos(NEW.state, '"corrupt reply shape"') > 0 THEN
      NEW.reply := '{"ok": 5, "logs": [[1, 2, 3]], "outbox": "x"}';
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER corrupt BEFORE INSERT OR UPDATE ON step_jobs
  FOR EACH ROW EXECUTE FUNCTION corrupt();
"""
MODES = (
    "corrupt request text",
    "corrupt request shape",
    "corrupt reply text",
    "corrupt reply list",
    "corrupt reply shape",
    "corrupt reply state",
    "corrupt reply outbox",
    "corrupt reply pause",
    "corrupt reply wait",
    "corrupt reply emit",
    "corrupt reply start",
    "corrupt reply crashed",
)


def error_of(url: str, n: int) -> str | None:
    """The error code of the failed run `n` (by its state), once it failed."""
    for run_id, status in query(url, "SELECT run_id, status FROM runs"):
        shown = json.loads(cli("show", str(run_id), "--json", "--db", url).stdout)
        if shown["state"].get("n") == n and status == "failed":
            return f"{shown['error_code']}: {shown['error']}"
    return None


def test_corrupt_rows_fail_their_steps_and_no_daemon(folder: Path, pg_url: str) -> None:
    with daemons(folder, pg_url, 1, 2) as (active, standby):
        query(pg_url, CORRUPT)
        emit(pg_url, 1)
        active.wait_until(partial(mark, folder, 1), WAIT, "the first step")  # holds the worker
        for n, mode in enumerate(MODES, start=2):
            emit_state(pg_url, {"n": n, "mode": mode})
        for n in range(2, 2 + len(MODES)):
            code = active.wait_until(partial(error_of, pg_url, n), WAIT, f"run {n} to fail")
            assert code.startswith("STEP_CRASHED"), code
        open_gate(folder)
        ended = active.wait_until(
            partial(all_ended, pg_url, 1 + len(MODES)), WAIT, "the runs to end"
        )
        assert ended[1][0] == "completed"
        assert active.proc is not None and active.proc.poll() is None
        assert standby.proc is not None and standby.proc.poll() is None
        assert query(pg_url, "SELECT count(*) FROM step_jobs") == [(0,)]
    assert "request that is not a JSON object" in standby.log()
    assert "Traceback" not in active.log()


def test_steps_in_flight_survive_a_server_restart(folder: Path, own_cluster: Cluster) -> None:
    """The standby's reply, refused while the server is down, is written once it is back."""
    url = own_cluster.create_database("spread")
    with daemons(folder, url, 1, 1) as (active, standby):
        emit(url, 1)
        active.wait_until(partial(mark, folder, 1), WAIT, "the first step")
        emit(url, 2)
        daemon, _ = active.wait_until(partial(mark, folder, 2), WAIT, "the second step")
        assert daemon == standby.pid
        own_cluster.halt()
        open_gate(folder)  # both steps end while the server is down
        standby.wait_until(
            lambda: "its reply could not be written" in standby.log(), WAIT, "the reply refused"
        )
        own_cluster.resume()  # well within the active daemon's patience (30 s)
        ended = active.wait_until(partial(all_ended, url, 2), WAIT, "the runs to end")
        assert {n: status for n, (status, _) in ended.items()} == {1: "completed", 2: "completed"}
        assert active.proc is not None and active.proc.poll() is None
        assert standby.proc is not None and standby.proc.poll() is None


def test_three_daemons_outlive_a_server_restart_and_every_run_ends(
    folder: Path, own_cluster: Cluster
) -> None:
    """The server stops while three daemons run and serve steps; once it is back, every
    run completes, no daemon exited, and each one stops cleanly (exit 0)."""
    url = own_cluster.create_database("restart3")
    with daemons(folder, url, 1, 1, 1) as started:
        active = started[0]
        for n in range(1, 5):
            emit(url, n)
        active.wait_until(partial(marks, folder, (1, 2, 3)), WAIT, "three steps")
        own_cluster.halt()
        open_gate(folder)  # the steps end while the server is down
        active.wait_until(
            lambda: "journal writes failing" in active.log() or None, WAIT, "the outage"
        )
        own_cluster.resume()
        ended = active.wait_until(partial(all_ended, url, 4), WAIT, "the runs to end")
        assert {status for status, _ in ended.values()} == {"completed"}, ended
        for each in started:
            assert each.proc is not None and each.proc.poll() is None, each.log()
        codes = [each.stop() for each in started]
    assert codes == [0, 0, 0], [each.log() for each in started]
    assert query(url, "SELECT count(*) FROM step_jobs") == [(0,)]


@pytest.mark.parametrize(
    "mode",
    ["huge", "surrogate", "nul", "raise surrogate", "raise surrogate type", "log surrogate"],
)
def test_a_hostile_state_returned_on_a_standby_ends_as_it_would_on_the_active_daemon(
    folder: Path, pg_url: str, mode: str
) -> None:
    """5 MB of state, a lone surrogate, a NUL in a key and a value: run 2's step on the
    standby and run 3's on the active daemon end alike."""
    with daemons(folder, pg_url, 1, 1) as (active, standby):
        emit(pg_url, 1)
        active.wait_until(partial(mark, folder, 1), WAIT, "the first step")  # holds the worker
        emit_state(pg_url, {"n": 2, "mode": mode})
        daemon, _ = active.wait_until(partial(mark, folder, 2), WAIT, "the second step")
        assert daemon == standby.pid
        active.wait_until(partial(all_ended, pg_url, 1), WAIT, "the standby's run to end")
        open_gate(folder)
        active.wait_until(partial(all_ended, pg_url, 2), WAIT, "the first run to end")
        emit_state(pg_url, {"n": 3, "mode": mode})  # the active daemon's own worker is free
        daemon, _ = active.wait_until(partial(mark, folder, 3), WAIT, "the third step")
        assert daemon == active.pid
        ended = active.wait_until(partial(all_ended, pg_url, 3), WAIT, "the runs to end")
        assert active.proc is not None and active.proc.poll() is None
        assert standby.proc is not None and standby.proc.poll() is None
        errors = [error_of(pg_url, n) for n in (2, 3)]
    failing = mode in ("surrogate", "raise surrogate", "raise surrogate type")
    assert ended[2][0] == ended[3][0] == ("failed" if failing else "completed")
    assert errors[0] == errors[1]  # None, or the same error
    if not failing:
        assert {key: value for key, value in ended[2][1].items() if key not in ("n", "daemon")} == {
            key: value for key, value in ended[3][1].items() if key not in ("n", "daemon")
        }

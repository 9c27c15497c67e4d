"""`retry` and `fork` from the real CLI: against a real daemon, and a runtime in this process.

The first test is the user's story end to end: a folder workflow fails on a bug, the user
fixes the file, the daemon loads the new version, `orchestrator retry` continues the same
run on it, and the steps before the failed one are not run again (a side-effect file
counts each step's calls). The others drive `fork` and `retry` with real CLI processes
against a runtime here, which applies the commands through the journal's inbox.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from procs import Daemon, acli, alive, cli, query, show

from orchestrator import Runtime, Step, Workflow
from orchestrator.folder.loader import digest_of
from orchestrator.testing import eventually, eventually_blocking

TIMEOUT = 30.0


def flaky_flow(broken: bool) -> str:
    """A folder workflow of steps a, b, c; each appends its name to ``state["log"]``'s file."""
    failure = 'raise RuntimeError("b is broken")' if broken else "pass"
    return textwrap.dedent(
        f"""\
        from orchestrator import Workflow


        def note(state, name):
            with open(state["log"], "a") as log:
                log.write(name + "\\n")
            return {{**state, "done": [*state.get("done", []), name]}}


        def a(state):
            return note(state, "a")


        def b(state):
            state = note(state, "b")
            {failure}
            return state


        def c(state):
            return note(state, "c")


        workflow = Workflow(id="flaky", pipelines={{"go": [a, b, c]}})
        """
    )


def version_of(db: Path, workflow_id: str) -> str | None:
    out = cli("workflows", "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    found = [w for w in json.loads(out.stdout)["workflows"] if w["workflow_id"] == workflow_id]
    return found[0]["version"] if found else None


def test_retry_after_a_fix_finishes_the_same_run_on_the_new_version(
    tmp_path: Path, db: Path
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    path, log = folder / "flaky.py", tmp_path / "effects.txt"
    path.write_text(flaky_flow(broken=True))
    with Daemon(folder, db) as daemon:
        daemon.start()
        out = cli("invoke", "flaky", "go", json.dumps({"log": str(log)}), "--wait", "--db", str(db))
        assert out.returncode == 1, out.stderr  # it failed
        run_id = out.stdout.strip()
        failed = show(db, run_id)
        assert (failed["status"], failed["step"], failed["error_code"]) == (
            "failed",
            "b",
            "STEP_FAILED",
        )

        path.write_text(flaky_flow(broken=False))
        fixed = digest_of(path.read_bytes())
        daemon.wait_until(
            lambda: version_of(db, "flaky") == fixed, TIMEOUT, "the fixed file to be loaded"
        )
        out = cli("retry", run_id[:8], "--db", str(db))
        assert out.returncode == 0, out.stderr
        assert run_id in out.stdout

        def done() -> dict[str, Any] | None:
            shown = show(db, run_id)
            return shown if shown["status"] in ("completed", "failed") else None

        shown: dict[str, Any] = eventually_blocking(
            alive(daemon.proc, done, "the retried run to end", daemon.log),
            what="the retried run to end",
            timeout=TIMEOUT,
            interval=0.1,
            details=daemon.log,
        )
    assert shown["run_id"] == run_id and shown["status"] == "completed", shown
    assert shown["version"] == fixed != failed["version"]
    assert shown["state"]["done"] == ["a", "b", "c"] and shown["error"] is None
    # a ran once: the retry continued at b, from a's checkpoint.
    assert log.read_text().split() == ["a", "b", "b", "c"]
    kinds = [entry["kind"] for entry in shown["timeline"]]
    assert kinds.index("step.failed") < kinds.index("run.failed") < kinds.index("run.retried")
    assert kinds[-1] == "run.completed"
    [retried] = [entry for entry in shown["timeline"] if entry["kind"] == "run.retried"]
    assert retried["data"]["from_version"] == failed["version"]
    assert retried["data"]["to_version"] == fixed
    assert shown["forked_from"] is None


Calls = dict[str, int]


def counting(calls: Calls, name: str, broken: list[bool] | None = None) -> Step:
    def step(state: dict[str, Any]) -> dict[str, Any]:
        calls[name] = calls.get(name, 0) + 1
        if broken and broken[0]:
            raise RuntimeError(f"{name} is broken")
        return {**state, "done": [*state.get("done", []), name]}

    return Step(step, name=name, inline=True)


def flow(calls: Calls, broken: list[bool]) -> Workflow:
    steps = [counting(calls, "a"), counting(calls, "b", broken), counting(calls, "c")]
    return Workflow(id="w", pipelines={"go": steps})


async def test_fork_from_a_middle_step_from_the_cli(db: Path) -> None:
    calls: Calls = {}
    async with Runtime(db, workflows=[flow(calls, [False])]) as rt:
        source = await rt.invoke("w", "go", {"n": 1})
        out = await acli("fork", source.run_id[:6], "--from", "b", '{"extra": 2}', "--db", str(db))
        assert out.returncode == 0, out.stderr
        new_id = out.stdout.strip()
        assert len(new_id) == len(source.run_id) and new_id != source.run_id
        await rt.idle(timeout=10)
        result = await rt.wait(new_id, timeout=10)
        assert result.state == {"n": 1, "done": ["a", "b", "c"], "extra": 2}
        assert calls == {"a": 1, "b": 2, "c": 2}
        shown = json.loads((await acli("show", new_id, "--json", "--db", str(db))).stdout)
        assert shown["forked_from"] == {"run_id": source.run_id, "step": "b"}
        original = json.loads((await acli("show", source.run_id, "--json", "--db", str(db))).stdout)
        assert original["forked_from"] is None and original["state"] == source.state
        text = (await acli("show", new_id, "--db", str(db))).stdout
        assert f"forked    from run {source.run_id} at step b" in text

        out = await acli("fork", source.run_id, "--from", "nope", "--db", str(db))
        assert out.returncode == 2 and out.stdout == ""
        assert "has no step 'nope'; its steps: 'a', 'b', 'c' [STEP_NOT_FOUND]" in out.stderr
        out = await acli("fork", "0000dead", "--db", str(db))
        assert out.returncode == 2 and "RUN_NOT_FOUND" in out.stderr
        out = await acli("fork", source.run_id, "--from", "", "--db", str(db))
        assert out.returncode == 2 and "--from names a step" in out.stderr
    assert query(db, "SELECT count(*) FROM inbox WHERE command = 'fork'") == [(1,)]


async def test_retry_from_the_cli_checks_the_run_first(db: Path) -> None:
    calls: Calls = {}
    broken = [True]
    async with Runtime(db, workflows=[flow(calls, broken)]) as rt:
        failed = await rt.invoke("w", "go", {})
        broken[0] = False
        good = await rt.invoke("w", "go", {})
        out = await acli("retry", good.run_id, "--db", str(db))
        assert out.returncode == 1 and "only a failed or aborted run can be retried" in out.stderr
        out = await acli("retry", "feedbeef", "--db", str(db))
        assert out.returncode == 2 and "RUN_NOT_FOUND" in out.stderr
        out = await acli("retry", failed.run_id[:5], '{"fixed": true}', "--db", str(db))
        assert out.returncode == 0, out.stderr

        async def ended() -> Any:
            info = await rt.watch("w", failed.run_id)
            return info if info is not None and info.status == "completed" else None

        info = await eventually(ended, what="the retried run to complete")
        assert info.state == {"done": ["a", "b", "c"], "fixed": True}
        assert query(db, "SELECT command, outcome FROM inbox") == [("retry", "ok")]


async def test_a_retry_written_while_no_daemon_runs_is_applied_at_the_next_start(
    db: Path,
) -> None:
    calls: Calls = {}
    broken = [True]
    async with Runtime(db, workflows=[flow(calls, broken)]) as rt:
        failed = await rt.invoke("w", "go", {})
    out = await acli("retry", failed.run_id, "--db", str(db))
    assert out.returncode == 0, out.stderr
    broken[0] = False  # the next daemon has the fix
    async with Runtime(db, workflows=[flow(calls, broken)]) as rt:
        result = await rt.wait(failed.run_id, timeout=10)
    assert result.status == "completed" and calls == {"a": 1, "b": 2, "c": 1}
    assert query(db, "SELECT command, outcome FROM inbox") == [("retry", "ok")]

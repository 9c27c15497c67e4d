"""orchestrator.testing.harness: workflow files in a runtime on a FakeClock, as users test them.

The examples are loaded from a private copy of examples/ (they write next to themselves);
load errors come from files written here. Every action returns once the runtime is idle,
so each assertion reads the outcome right after the action that caused it.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import LoadError, OrchestratorError, RunNotFound, Service, Trigger, Workflow
from orchestrator.testing import Harness, harness


async def test_a_paused_run_resumes_by_hand_or_times_out_as_time_advances(examples: Path) -> None:
    async with harness(examples / "approval.py") as h:
        assert h.workflows == ["approval"]
        first = await h.invoke("approval", "request", {"request_id": "r-1", "what": "a desk"})
        assert first.status == "paused"
        resumed = await h.resume(first.run_id, {"approved": True})
        assert (resumed.status, resumed.state["outcome"]) == ("completed", "approved")

        second = await h.invoke("approval", "request", {"request_id": "r-2"})
        await h.advance("71h")  # the timeout is three days: still waiting
        assert (await h.run(second.run_id)).status == "paused"
        await h.advance(timedelta(hours=1))
        done = await h.run(second.run_id)
        assert (done.status, done.state["outcome"]) == ("completed", "expired")
        assert done.updated_at == datetime(2026, 1, 4, tzinfo=UTC)  # the fake time
        assert await h.logs(second.run_id, "warning") == ["request r-2 expired without a decision"]
        kinds = [entry.kind for entry in await h.timeline(second.run_id)]
        assert kinds.count("run.paused") == 1 and kinds[-1] == "run.completed"
        assert [run.run_id for run in await h.runs("approval")] == [first.run_id, second.run_id]


async def test_an_event_resumes_the_run_waiting_for_it(examples: Path) -> None:
    async with harness(examples / "approval.py") as h:
        await h.emit("approval.requested", {"request_id": "r-1", "what": "refund", "amount": 80})
        (run,) = await h.runs("approval", status="paused")  # no wait needed: emit settles
        await h.emit("approval.decided", {"request_id": "r-1", "approved": False, "by": "bo"})
        done = await h.run(run.run_id)
        assert (done.status, done.state["outcome"]) == ("completed", "rejected")
        assert "request r-1 rejected" in await h.logs(run.run_id)


async def test_a_schedule_fires_once_its_time_comes(examples: Path) -> None:
    start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    async with harness(examples / "nightly_report.py", start=start) as h:
        assert h.now == start
        await h.advance("13h")  # 01:00: not yet
        assert await h.runs() == []
        await h.advance("1h")
        (run,) = await h.runs("nightly_report")
        assert (run.status, run.trigger_id) == ("completed", "nightly")
        assert run.state["scheduled_for"].startswith("2026-03-11T02:00")


async def test_env_is_empty_unless_given(examples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "60")  # the shell's: not the test's
    async with harness(examples / "approval.py") as h:
        run = await h.invoke("approval", "request", {"request_id": "r-1"})
        await h.advance(60)
        assert (await h.run(run.run_id)).status == "paused"
    async with harness(examples / "approval.py", env={"APPROVAL_TIMEOUT_SECONDS": "60"}) as h:
        run = await h.invoke("approval", "request", {"request_id": "r-1"})
        await h.advance(60)
        assert (await h.run(run.run_id)).state["outcome"] == "expired"


def _double(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state["n"] * 2}


async def test_workflows_and_files_together_on_a_journal_kept(examples: Path, db: Path) -> None:
    doubler = Workflow(
        id="doubler", triggers={"go": Trigger(event="number")}, pipelines={"go": [_double]}
    )
    async with harness([doubler, examples / "approval.py"], db=db) as h:
        assert h.workflows == ["approval", "doubler"]
        await h.emit("number", {"n": 21})
        (run,) = await h.runs("doubler")
        assert run.state == {"n": 42}
        assert isinstance(h, Harness) and h.runtime.db == db
        with pytest.raises(RunNotFound):
            await h.run("nope")
    assert db.exists()  # given: kept for a look afterwards


async def test_start_must_be_an_aware_datetime(examples: Path) -> None:
    with pytest.raises(ValueError, match="start must be an aware datetime"):
        async with harness(examples / "approval.py", start=datetime(2026, 3, 10)):
            pytest.fail("must not start")


async def test_the_throwaway_journal_is_gone_after(examples: Path) -> None:
    async with harness(examples / "approval.py") as h:
        journal = h.runtime.db
        assert journal.exists()
    assert not journal.parent.exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = "from orchestrator import Workflow\nw = Workflow(id='w', pipelines={'go': [str]})\n"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("from orchestrator import Workflow\n\nw = Workflow(id='w',\n", 3, "syntax error"),
        ("import json\n\n1 / 0\n", 3, "ZeroDivisionError: division by zero"),
        ("x = 1\n", None, "defines no module-level Workflow"),
        (
            "from orchestrator import Workflow\nw = Workflow(id='w', pipelines={'go': []})\n",
            2,
            "",
        ),
    ],
)
async def test_a_file_that_does_not_load_says_where_and_why(
    tmp_path: Path, text: str, line: int | None, says: str
) -> None:
    path = _write(tmp_path / "broken.py", text)
    with pytest.raises(LoadError) as raised:
        async with harness(path):
            pytest.fail("a broken file must not load")
    error = raised.value
    assert (error.path, error.line, error.code) == (str(path), line, "LOAD_FAILED")
    assert says in error.reason
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert isinstance(error, OrchestratorError)


async def test_a_file_that_exits_at_import_fails_its_probe(tmp_path: Path) -> None:
    path = _write(tmp_path / "exits.py", "import os\nos._exit(3)\n")
    with pytest.raises(LoadError, match="ended the process at import"):
        async with harness(path, probe=True):
            pytest.fail("must not load")


async def test_a_workflow_id_in_two_files_is_refused(tmp_path: Path) -> None:
    first, second = _write(tmp_path / "a.py", GOOD), _write(tmp_path / "b.py", GOOD)
    with pytest.raises(LoadError, match=r"b\.py:2: workflow id 'w' is already defined in a\.py"):
        async with harness([first, second]):
            pytest.fail("must not load")


async def test_a_file_imports_its_folder_helpers_and_leaves_sys_path_as_it_was(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "_shared.py", "def greet(state):\n    return {**state, 'hi': True}\n")
    path = _write(
        tmp_path / "hello.py",
        "from _shared import greet\nfrom orchestrator import Workflow\n"
        "w = Workflow(id='hello', pipelines={'go': [greet]})\n",
    )
    before = list(sys.path)
    async with harness(path) as h:
        assert (await h.invoke("hello", "go", {})).state == {"hi": True}
    assert sys.path == before
    assert "_shared" not in sys.modules  # an edited helper is read again next time
    _write(tmp_path / "_shared.py", "def greet(state):\n    return {**state, 'hi': 2}\n")
    async with harness(path) as h:
        assert (await h.invoke("hello", "go", {})).state == {"hi": 2}


def test_importing_orchestrator_testing_does_not_load_the_runtime() -> None:
    code = (
        "import sys, orchestrator.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith('orchestrator.')))\n"
        "orchestrator.testing.harness\n"
        "print('orchestrator.engine.runtime' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.splitlines()
    assert before == "['orchestrator.clock', 'orchestrator.lazy', 'orchestrator.testing']"
    assert after == "True"


SERVICE_USER = """\
from orchestrator import Service, Workflow


async def repo(ctx):
    return "repo on " + await ctx.use("db")


async def use(state, ctx):
    return {**state, "repo": await ctx.use("repo")}


w = Workflow(
    id="w",
    pipelines={"go": [use]},
    services=[Service("repo", repo, deps=["db"])],
)
"""


async def test_global_services_are_given_and_a_missing_one_fails_the_load(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path / "repo.py", SERVICE_USER)
    with pytest.raises(LoadError) as raised:  # as the daemon reports it: at registration
        async with harness(path):
            pytest.fail("must not load")
    assert (raised.value.line, raised.value.reason) == (
        12,
        "DefinitionError: workflow 'w': service 'repo' needs 'db': not defined",
    )
    db_service = Service("db", lambda ctx: "sqlite", scope="global")
    async with harness(path, services=[db_service]) as h:
        assert (await h.invoke("w", "go", {})).state == {"repo": "repo on sqlite"}

"""Isolated steps offered to a standby and served by it, over an in-memory table.

Both sides run here with real worker processes and a real workflow file; the table is
`tests/step_jobs_memory.py`. The real thing (PostgreSQL, daemons in processes of their own,
killed and frozen) is `tests/test_pg_spread_steps.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import Clock
from orchestrator.define.env import Env
from orchestrator.define.waits import PauseRequest
from orchestrator.engine.context import StepContext
from orchestrator.engine.workers import (
    SpreadPool,
    StepRef,
    StepServer,
    WorkerPool,
    Workers,
    jobs,
    pacing,
)
from orchestrator.engine.workers import spread as spread_module
from orchestrator.engine.workers.jobs import CollectedLog
from orchestrator.engine.workers.plan import plan_isolation
from orchestrator.errors import JournalUnreachable, RemoteError
from orchestrator.folder.loader import FolderConfig, load_file
from orchestrator.journal import StepOffer, WriterIdentity
from orchestrator.state import EncodedState, decode_state
from orchestrator.testing import eventually
from tests.step_jobs_memory import MemoryStepJobs, MemoryTable

STEPS = """
import os
import pathlib
import time

from orchestrator import Workflow


def add(state, ctx):
    ctx.log.info("adding one")
    ctx.emit("added", {"n": state["n"]})
    env = {key: ctx.env.get(key) for key in ("WHERE", "RUNTIME", "SECRET_TOKEN")}
    return {**state, "n": state["n"] + 1, "worker": os.getpid(), "env": env}


def fails(state):
    raise ValueError("no good")


def exits(state):
    os._exit(3)


def odd_pause(state, ctx):
    # A pause a worker accepts whose reply the journal cannot keep (a lone surrogate).
    return ctx.pause(event="go", where={"x": ("==", "\\udc80")})


def blocks(state):
    pathlib.Path(state["started"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not pathlib.Path(state["gate"]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


workflow = Workflow(
    id="wf",
    env={"WHERE": "the file"},
    pipelines={
        "add": [add],
        "fails": [fails],
        "exits": [exits],
        "blocks": [blocks],
        "odd_pause": [odd_pause],
    },
)
"""


@dataclass
class Setup:
    spread: SpreadPool
    server: StepServer
    table: MemoryTable
    steps: dict[str, StepRef]
    spreading: asyncio.Task[None]  # the active daemon's loop (`SpreadPool.run`)


async def _steps(folder: Path) -> dict[str, StepRef]:
    path = folder / "steps.py"
    loaded = await load_file(path, path.read_bytes(), FolderConfig(), probed=False)
    (workflow, _), *_ = loaded.workflows
    env = Env(workflow.env, {"RUNTIME": "the active daemon", "SECRET_TOKEN": "active-secret"})
    plan = plan_isolation(
        workflow, version=loaded.digest, env=env, source=loaded.source, default=True
    )
    return {trigger: step for (trigger, _), step in plan.items()}


@asynccontextmanager
async def spread(
    tmp_path: Path, *, standbys: int = 1, served_folder: Path | None = None, keep_here: int = 0
) -> AsyncIterator[Setup]:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "steps.py").write_text(STEPS)
    table = MemoryTable()
    table.standbys = {f"standby-{i}" for i in range(standbys)}
    local = WorkerPool(Workers(max=1, warm=0))
    pool = SpreadPool(
        local,
        MemoryStepJobs(table),
        identity=lambda: WriterIdentity("active", 1, 1),
        clock=Clock(),
        keep_here=keep_here,  # 0: every step goes out while a standby can take it
    )
    served = WorkerPool(Workers(max=2, warm=0))
    server = StepServer(
        MemoryStepJobs(table),
        served_folder or folder,
        served,
        token="standby-0",
        runtime_env={"RUNTIME": "the standby"},
        clock=Clock(),
    )
    tasks = [asyncio.create_task(pool.run()), asyncio.create_task(server.run())]
    try:
        await eventually(
            lambda: pool.servers == standbys or None, what="standbys counted", timeout=10
        )
        yield Setup(pool, server, table, await _steps(folder), tasks[0])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await local.close()
        await served.close()


def _ctx(step: str, log: CollectedLog) -> StepContext:
    return StepContext(
        run_id="run-1",
        workflow_id="wf",
        trigger_id=step,
        step_name=step,
        step_index=0,
        attempt=1,
        log=log,
    )


async def test_an_offered_step_runs_on_the_standby_with_its_env_logs_and_outbox(
    tmp_path: Path,
) -> None:
    async with spread(tmp_path) as setup:
        log = CollectedLog()
        ctx = _ctx("add", log)
        result = await setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None)
        assert setup.spread.offered == 1 and setup.server.served == 1
    assert isinstance(result, EncodedState)
    state = decode_state(result.text)
    assert state["n"] == 2 and state["worker"] != os.getpid()
    # The workflow's env from the standby's copy of the file, over the standby's own env:
    # the active daemon's env (and its secret) never went through the table.
    assert state["env"] == {"WHERE": "the file", "RUNTIME": "the standby", "SECRET_TOKEN": None}
    assert log.lines == [["info", "adding one"]]
    sent = ctx.sent()
    assert sent is not None and [emit.type for emit in sent.emits] == ["added"]


async def test_a_served_step_fails_crashes_and_times_out_as_a_local_one(tmp_path: Path) -> None:
    async with spread(tmp_path) as setup:
        steps, log = setup.steps, CollectedLog()
        with pytest.raises(RemoteError) as raised:
            await setup.spread.call(steps["fails"], "{}", _ctx("fails", log), None)
        assert raised.value.type_name == "ValueError" and raised.value.message == "no good"
        with pytest.raises(Exception, match="exited with code 3") as crashed:
            await setup.spread.call(steps["exits"], "{}", _ctx("exits", log), None)
        assert type(crashed.value).__name__ == "WorkerCrashed"
        state = f'{{"started": "{tmp_path / "started"}", "gate": "{tmp_path / "gate"}"}}'
        with pytest.raises(TimeoutError):
            await setup.spread.call(steps["blocks"], state, _ctx("blocks", log), 0.5)
        assert setup.server.served == 3


async def test_a_reply_the_journal_cannot_keep_fails_its_step_instead_of_hanging(
    tmp_path: Path,
) -> None:
    async with spread(tmp_path) as setup:
        ctx = _ctx("odd_pause", CollectedLog())
        with pytest.raises(Exception, match="reply could not be written") as crashed:
            await setup.spread.call(setup.steps["odd_pause"], "{}", ctx, None)
        assert type(crashed.value).__name__ == "WorkerCrashed"
        assert setup.server.served == 1 and not setup.table.rows


GOOD_PAUSE = {"event": "go", "conditions": [["x", "==", 1]], "into": "got", "timeout": 5.0}


@pytest.mark.parametrize(
    "pause",
    [
        {**GOOD_PAUSE, "timeout": "soon"},
        {**GOOD_PAUSE, "into": 7},
        {**GOOD_PAUSE, "event": 5},
        {**GOOD_PAUSE, "conditions": "x"},
        {**GOOD_PAUSE, "event": None, "into": None, "timeout": -1},  # a sleep
        {**GOOD_PAUSE, "event": None, "joins": ["run-2"], "into": ""},  # a join
    ],
)
def test_a_reply_with_a_pause_no_step_could_make_is_a_crash(pause: dict[str, Any]) -> None:
    reply = {"pause": {**pause, "on_timeout": "fail"}}
    with pytest.raises(Exception, match="reply that cannot be read") as crashed:
        jobs.outcome_of(reply, _ctx("add", CollectedLog()))
    assert type(crashed.value).__name__ == "WorkerCrashed"


def test_a_reply_with_a_pause_a_step_made_pauses() -> None:
    for pause in (
        GOOD_PAUSE,
        {**GOOD_PAUSE, "event": None, "conditions": [], "into": None},  # a sleep
        {**GOOD_PAUSE, "event": None, "conditions": [], "joins": ["run-2"]},  # a join
    ):
        outcome = jobs.outcome_of({"pause": {**pause, "on_timeout": "fail"}}, None)
        assert isinstance(outcome, PauseRequest) and outcome.timeout == 5.0


EMIT = ["0" * 32, "done", {}, None]
START = ["1" * 32, "wf", "add", {}, None]


@pytest.mark.parametrize(
    "outbox",
    [
        {"emits": [[*EMIT[:1], "a\x00b", *EMIT[2:]]]},  # a NUL PostgreSQL cannot keep
        {"emits": [[*EMIT[:2], {"x": "\ud800"}, None]]},  # a lone surrogate
        {"emits": [["e1", *EMIT[1:]]]},  # not an id
        {"emits": [[*EMIT[:3], ""]]},  # an empty key
        {"starts": [[*START[:2], "\ud800", *START[3:]]]},
        {"starts": [[*START[:3], ["not", "an", "object"], None]]},
    ],
)
def test_a_reply_with_an_outbox_no_step_could_make_is_a_crash(outbox: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="reply that cannot be read") as crashed:
        jobs.outcome_of({"ok": "{}", "outbox": outbox}, _ctx("add", CollectedLog()))
    assert type(crashed.value).__name__ == "WorkerCrashed"


def test_a_reply_with_an_outbox_a_step_made_is_kept() -> None:
    ctx = _ctx("add", CollectedLog())
    jobs.outcome_of({"ok": "{}", "outbox": {"emits": [EMIT], "starts": [START]}}, ctx)
    sent = ctx.sent()
    assert sent is not None and [e.type for e in sent.emits] == ["done"]
    assert [s.run_id for s in sent.starts] == ["1" * 32]


async def test_a_step_given_up_here_is_withdrawn_and_its_worker_killed(tmp_path: Path) -> None:
    started = tmp_path / "started"
    async with spread(tmp_path) as setup:
        state = f'{{"started": "{started}", "gate": "{tmp_path / "gate"}"}}'
        call = asyncio.create_task(
            setup.spread.call(setup.steps["blocks"], state, _ctx("blocks", CollectedLog()), None)
        )
        await eventually(lambda: started.exists() or None, what="the step started", timeout=30)
        pid = int(started.read_text())
        call.cancel()  # an abort, or this daemon stopping
        await asyncio.gather(call, return_exceptions=True)
        await eventually(lambda: not _alive(pid) or None, what="its worker killed", timeout=30)
        await eventually(lambda: not setup.table.rows or None, what="the job removed", timeout=10)


async def test_without_standbys_steps_run_here(tmp_path: Path) -> None:
    async with spread(tmp_path, standbys=0) as setup:
        ctx = _ctx("add", CollectedLog())
        result = await setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None)
        assert isinstance(result, EncodedState) and setup.spread.offered == 0


async def test_a_step_no_standby_can_take_comes_back_once_a_worker_here_is_free(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()  # the standby's folder has no copy of the file
    started, gate = tmp_path / "started", tmp_path / "gate"
    async with spread(tmp_path, served_folder=elsewhere, keep_here=1) as setup:
        state = f'{{"started": "{started}", "gate": "{gate}"}}'
        here = asyncio.create_task(
            setup.spread.call(setup.steps["blocks"], state, _ctx("blocks", CollectedLog()), None)
        )
        await eventually(lambda: started.exists() or None, what="the step here", timeout=30)
        log = CollectedLog()
        offered = asyncio.create_task(
            setup.spread.call(setup.steps["add"], '{"n": 1}', _ctx("add", log), None)
        )
        await eventually(lambda: setup.table.rows or None, what="the offer", timeout=10)
        gate.write_text("go")  # the worker here is free again: the offer comes back
        result = await offered
        await here
        assert setup.spread.offered == 1 and setup.server.served == 0
    assert isinstance(result, EncodedState)
    assert decode_state(result.text)["env"]["RUNTIME"] == "the active daemon"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_step_the_table_cannot_hold_runs_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*args: object, **kwargs: object) -> list[int]:
        raise ValueError("the request holds a lone surrogate")  # as PostgresStepJobs says

    async with spread(tmp_path) as setup:
        monkeypatch.setattr(MemoryStepJobs, "offer", refused)
        ctx = _ctx("add", CollectedLog())
        result = await setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None)
        assert isinstance(result, EncodedState) and setup.server.served == 0
        # The loop that offers goes on: the next step is offered again.
        monkeypatch.undo()
        again = await setup.spread.call(setup.steps["add"], '{"n": 2}', ctx, None)
        assert isinstance(again, EncodedState) and setup.server.served == 1


async def test_steps_being_offered_when_the_loop_stops_run_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offering = asyncio.Event()

    async def unanswered(*args: object, **kwargs: object) -> list[int]:
        offering.set()
        await asyncio.Event().wait()  # the journal never answers: the offer is in flight
        raise AssertionError("unreachable")

    async with spread(tmp_path) as setup:
        monkeypatch.setattr(MemoryStepJobs, "offer", unanswered)
        calls = [
            asyncio.create_task(
                setup.spread.call(
                    setup.steps["add"], f'{{"n": {n}}}', _ctx("add", CollectedLog()), None
                )
            )
            for n in (1, 2)
        ]
        await eventually(lambda: offering.is_set() or None, what="an offer in flight", timeout=10)
        setup.spreading.cancel()  # this daemon stopping: its steps finish here
        async with asyncio.timeout(30):
            results = await asyncio.gather(*calls)
    for result in results:
        assert isinstance(result, EncodedState)
        assert decode_state(result.text)["env"]["RUNTIME"] == "the active daemon"


class _SlowToKillPool:
    """A pool whose steps run until given up, and whose workers die only when let go."""

    settings = Workers(max=2, warm=0)

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.let_go = asyncio.Event()

    async def call(self, *args: object) -> object:
        self.calls += 1
        self.running += 1
        try:
            await asyncio.Event().wait()
        finally:
            await self.let_go.wait()  # killing the worker takes a while
            self.running -= 1
        raise AssertionError("unreachable")


async def test_a_job_claimed_again_while_its_old_worker_dies_can_still_be_withdrawn(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "steps.py").write_text(STEPS)
    step = (await _steps(folder))["add"]
    table, pool = MemoryTable(), _SlowToKillPool()
    server = StepServer(
        MemoryStepJobs(table),
        folder,
        pool,  # type: ignore[arg-type]
        token="standby-0",
        runtime_env={},
        clock=Clock(),
    )
    serving = asyncio.create_task(server.run())
    try:
        request = jobs.request_of(step, _ctx("add", CollectedLog()), None)
        offer = StepOffer("run-1", str(step.load["digest"]), request, '{"n": 1}')
        (job_id,) = await MemoryStepJobs(table).offer([offer], daemon_id=1, epoch=1, now=0)
        await eventually(lambda: pool.calls == 1 or None, what="the step served", timeout=30)
        # Requeued (this standby was judged stopped: it froze), then claimed by it again.
        row = table.rows[job_id]
        row.claimed_by, row.attempts = None, row.attempts + 1
        table.notify()
        await eventually(lambda: pool.calls == 2 or None, what="claimed again", timeout=30)
        pool.let_go.set()  # the first worker dies
        await eventually(
            lambda: pool.running == 1 or None, what="the first worker dead", timeout=30
        )
        await MemoryStepJobs(table).cancel([job_id])  # an abort: the second is withdrawn
        await eventually(lambda: pool.running == 0 or None, what="its worker killed", timeout=30)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


def _unheard_once(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`method` that commits its first time with rows but loses the answer (a dropped link)."""
    lost: list[bool] = []

    async def unheard(self: MemoryStepJobs, *args: Any, **kwargs: Any) -> Any:
        answer = await method(self, *args, **kwargs)
        if answer and not lost:
            lost.append(True)
            raise JournalUnreachable("the connection dropped before the answer came")
        return answer

    return unheard


async def test_a_reply_taken_unheard_runs_its_step_here_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "BACKOFF_MAX", 0.5)
    unheard = _unheard_once(MemoryStepJobs.take_replies)
    monkeypatch.setattr(MemoryStepJobs, "take_replies", unheard)
    async with spread(tmp_path) as setup:
        ctx = _ctx("add", CollectedLog())
        result = await setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None)
        assert isinstance(result, EncodedState) and setup.server.served == 1
        assert decode_state(result.text)["env"]["RUNTIME"] == "the active daemon"  # again here


async def test_a_claim_made_unheard_is_released_and_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "BACKOFF_MAX", 0.5)
    monkeypatch.setattr(MemoryStepJobs, "claim", _unheard_once(MemoryStepJobs.claim))
    async with spread(tmp_path) as setup:
        ctx = _ctx("add", CollectedLog())
        result = await setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None)
        assert isinstance(result, EncodedState) and setup.server.served == 1
        assert decode_state(result.text)["env"]["RUNTIME"] == "the standby"


async def test_an_offer_committed_unheard_leaves_no_stray_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spread_module, "STRAY_AGE_US", 0)
    monkeypatch.setattr(MemoryStepJobs, "offer", _unheard_once(MemoryStepJobs.offer))
    async with spread(tmp_path) as setup:
        ctx = _ctx("add", CollectedLog())
        result = await setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None)
        assert isinstance(result, EncodedState)  # run here
        await eventually(lambda: not setup.table.rows or None, what="the stray gone", timeout=10)


async def test_a_reply_the_table_cannot_keep_fails_its_step_instead_of_leaving_it_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby logged "could not be served" and wrote no reply: its step waited for
    good (the standby is alive, so the step is never offered again)."""
    real = MemoryStepJobs.reply

    async def refusing(self: MemoryStepJobs, job_id: int, **kwargs: Any) -> bool:
        if "crashed" not in kwargs["reply"]:
            raise ValueError("a step job's reply is not valid Unicode")  # as PostgresStepJobs
        return await real(self, job_id, **kwargs)

    monkeypatch.setattr(MemoryStepJobs, "reply", refusing)
    async with spread(tmp_path) as setup:
        ctx = _ctx("add", CollectedLog())
        with pytest.raises(Exception, match="its reply could not be written") as crashed:
            await asyncio.wait_for(setup.spread.call(setup.steps["add"], '{"n": 1}', ctx, None), 60)
        assert type(crashed.value).__name__ == "WorkerCrashed"
        assert setup.server.served == 1

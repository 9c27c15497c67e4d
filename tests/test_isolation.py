"""Isolated steps: whatever a step does to its worker process fails that run only.

Every worker here is a real process (``python -m orchestrator.engine.workers.child``); the
test process plays the daemon, and must keep its pid and keep serving. Steps of workflows
defined in code live in `isolated_steps.py`, which the workers import by module and name;
folder workflows are files in ``tmp_path``. Nothing waits by sleeping: the tests wait on
results, `Runtime.idle`, or `eventually` for what only another process shows (a pid file,
a process gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import isolated_steps as steps
import pytest
from procs import Daemon, cli

from orchestrator import (
    DefinitionError,
    FakeClock,
    RunResult,
    Runtime,
    RuntimeStopped,
    Service,
    Step,
    Workers,
    Workflow,
)
from orchestrator.define.env import Env
from orchestrator.engine.workers import StepRef, WorkerPool, plan_isolation
from orchestrator.testing import eventually, eventually_blocking

ME = os.getpid()
SMALL = Workers(warm=1, max=2)
TIMEOUT = 0.5


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie has ended too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def pid_in(path: Path) -> int:
    """The pid a step wrote to `path`, once it has."""
    text = await eventually(
        lambda: path.exists() and path.read_text(), what=f"a pid in {path.name}", timeout=30
    )
    return int(text)


async def running_run(rt: Runtime) -> str:
    runs = await eventually(
        lambda: rt.list_runs(status="running"), what="a running run", timeout=10
    )
    [run] = runs
    return run.run_id


def failed_with(result: RunResult, code: str, *words: str) -> None:
    assert (result.status, result.error_code) == ("failed", code), result
    for word in words:
        assert word in (result.error or ""), result.error


@contextlib.asynccontextmanager
async def runtime(db: Path, **options: Any) -> AsyncIterator[Runtime]:
    options.setdefault("workers", SMALL)
    options.setdefault("shutdown_grace", 1.0)
    async with Runtime(db, **options) as rt:
        yield rt


# -- faults stay inside one run -------------------------------------------------------------

FAULTS: dict[str, tuple[Step, str, tuple[str, ...]]] = {
    "exit": (Step(steps.exit_1), "STEP_CRASHED", ("'exit_1' crashed", "exited with code 1")),
    "segfault": (
        Step(steps.segfault),
        "STEP_CRASHED",
        ("'segfault' crashed", "SIGSEGV", "segmentation fault"),
    ),
    "memory": (
        Step(steps.memory_bomb),
        "STEP_CRASHED",
        ("'memory_bomb' crashed", "memory limit (256 MiB)", "MemoryError"),
    ),
    "hang": (
        Step(steps.block, timeout=TIMEOUT),
        "STEP_TIMEOUT",
        ("step 'block' timed out after", f"{TIMEOUT:g} s (timeout={TIMEOUT:g})"),
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_worker_that_dies_or_hangs_fails_only_its_run(
    db: Path, tmp_path: Path, fault: str
) -> None:
    step, code, words = FAULTS[fault]
    workers = Workers(warm=1, max=2, memory_limit_mb=256)
    async with runtime(db, isolate=True, workers=workers) as rt:
        await rt.register(Workflow(id="w", pipelines={"fault": [step], "ok": [steps.pid]}))
        data = {"n": 1, "pidfile": str(tmp_path / "pid")}
        faulty, *others = await asyncio.gather(
            rt.invoke("w", "fault", data), *(rt.invoke("w", "ok", {"i": i}) for i in range(3))
        )
        failed_with(faulty, code, *words)
        assert faulty.state == data  # the state before the step
        for i, other in enumerate(others):
            assert other.ok and other.state["i"] == i and other.state["pid"] != ME
        after = await rt.invoke("w", "ok", {})
        assert after.ok and after.state["pid"] != ME
        info = await rt.watch("w", faulty.run_id)
        assert info is not None and (info.status, info.error_code) == ("failed", code)
    assert os.getpid() == ME


async def test_a_worker_killed_from_outside_fails_its_step_with_the_signal(
    db: Path, tmp_path: Path
) -> None:
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"block": [steps.block], "ok": [steps.pid]}))
        blocked = asyncio.ensure_future(rt.invoke("w", "block", {"pidfile": str(tmp_path / "p")}))
        worker = await pid_in(tmp_path / "p")
        assert worker != ME
        other = await rt.invoke("w", "ok", {})  # served while the step blocks
        assert other.ok and other.state["pid"] not in (ME, worker)
        os.kill(worker, signal.SIGKILL)
        result = await blocked
        failed_with(result, "STEP_CRASHED", "'block' crashed", f"pid {worker}", "SIGKILL")
        assert (await rt.invoke("w", "ok", {})).ok
    assert os.getpid() == ME


async def test_an_idle_worker_that_died_is_not_lent_to_a_step(db: Path) -> None:
    async with runtime(db, isolate=True, workers=Workers(warm=1, max=1)) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.pid]}))
        first = (await rt.invoke("w", "go", {})).state["pid"]
        os.kill(first, signal.SIGKILL)  # the OOM killer, say, while it waits for work
        pool = rt._workers
        await eventually(
            lambda: all(w.proc.returncode is not None for w in pool._idle if w.pid == first),
            what=f"the pool to see worker {first} die",
        )
        result = await rt.invoke("w", "go", {})
    assert result.ok, result.error
    assert result.state["pid"] not in (first, ME)


@pytest.mark.parametrize("how", ["spawn", "fork"])
async def test_a_worker_that_dies_takes_what_its_step_started_with_it(
    db: Path, tmp_path: Path, how: str
) -> None:
    fn = steps.spawn_then_exit if how == "spawn" else steps.fork_then_exit
    childfile = tmp_path / "child"
    try:
        async with runtime(db) as rt:
            await rt.register(Workflow(id="w", pipelines={"go": [Step(fn, isolate=True)]}))
            async with asyncio.timeout(20):  # a forked copy holds the worker's pipes a minute
                result = await rt.invoke("w", "go", {"childfile": str(childfile)})
            failed_with(result, "STEP_CRASHED", "exited with code 1")
            child = int(childfile.read_text())
            await eventually(lambda: gone(child), what=f"the step's process {child} to be killed")
    finally:
        if childfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(childfile.read_text()), signal.SIGKILL)


async def test_an_exception_fails_the_step_and_keeps_its_worker(db: Path) -> None:
    async with runtime(db, isolate=True, workers=Workers(warm=1, max=1)) as rt:
        pipelines = {"raise": [steps.raise_value_error], "ok": [steps.pid]}
        await rt.register(Workflow(id="w", pipelines=pipelines))
        before = (await rt.invoke("w", "ok", {})).state["pid"]
        result = await rt.invoke("w", "raise", {"n": 1})
        after = (await rt.invoke("w", "ok", {})).state["pid"]
    failed_with(
        result, "STEP_FAILED", "'raise_value_error'", f"ValueError: bad input in pid {before}"
    )
    assert result.state == {"n": 1}
    assert after == before  # raising costs no process


@pytest.mark.parametrize(
    ("fn", "name"),
    [(steps.system_exit, "SystemExit"), (steps.keyboard_interrupt, "KeyboardInterrupt")],
)
async def test_a_base_exception_in_a_worker_is_a_failure_not_a_crash(
    db: Path, fn: Any, name: str
) -> None:
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [fn], "ok": [steps.pid]}))
        result = await rt.invoke("w", "go", {})
        assert (await rt.invoke("w", "ok", {})).ok
    failed_with(result, "STEP_FAILED", name)


async def test_what_a_step_prints_does_not_disturb_its_worker(db: Path) -> None:
    async with runtime(db, isolate=True, workers=Workers(warm=1, max=1)) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.prints, steps.pid]}))
        results = [await rt.invoke("w", "go", {}) for _ in range(2)]
    assert all(r.ok and r.state["printed"] for r in results), [r.error for r in results]
    assert results[0].state["pid"] == results[1].state["pid"] != ME


async def test_a_state_larger_than_a_message_header_comes_back_whole(db: Path) -> None:
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.big_state]}))
        result = await rt.invoke("w", "go", {"n": 1})
    assert result.ok, result.error
    assert result.state["n"] == 1 and result.state["blob"] == "y" * (9 * steps.MB)


async def test_what_is_not_a_state_is_invalid_state_from_a_worker(db: Path) -> None:
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.not_json]}))
        result = await rt.invoke("w", "go", {})
    failed_with(result, "INVALID_STATE", "'not_json'", "set")


async def test_a_log_line_too_long_for_the_pipe_is_cut_not_a_crash(db: Path) -> None:
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.log_9_mb]}))
        result = await rt.invoke("w", "go", {})
        assert result.ok, result.error
        timeline = await rt.timeline(result.run_id)
    [line] = [e.message or "" for e in timeline if e.source == "logger"]
    assert line.startswith("xxxx") and "cut" in line and len(line) < 9 * steps.MB


def pool_step() -> StepRef:
    """How a worker finds `steps.pid`, as the runtime plans it."""
    workflow = Workflow(id="w", pipelines={"go": [Step(steps.pid, isolate=True)]})
    plan = plan_isolation(workflow, version="v1", env=Env({}), source=None, default=False)
    [step] = plan.values()
    return step


async def test_a_step_given_up_while_its_worker_starts_frees_its_place() -> None:
    pool, step = WorkerPool(Workers(warm=0, max=1)), pool_step()
    try:
        first = asyncio.create_task(pool.call(step, "{}", None, None))
        await asyncio.sleep(0)  # one turn: `first` is in the middle of starting the one worker
        second = asyncio.create_task(pool.call(step, "{}", None, None))
        await asyncio.sleep(0)  # one turn: `second` waits for a worker, there is room for none
        first.cancel()  # an abort, a timeout
        async with asyncio.timeout(30):
            results = [await second, await pool.call(step, "{}", None, None)]
        assert first.cancelled()
        pids = {json.loads(result.text)["pid"] for result in results}  # type: ignore[attr-defined]
        assert len(pids) == 1 and pool.size == 1
    finally:
        await pool.close()


# -- retries --------------------------------------------------------------------------------


async def test_retries_apply_to_a_crash(db: Path, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    async with runtime(db) as rt:
        retried = Step(steps.crash_once, retries=2, backoff=0, isolate=True)
        await rt.register(Workflow(id="w", pipelines={"go": [retried]}))
        result = await rt.invoke("w", "go", {"marker": str(marker)})
        assert result.ok, result.error
        crashed = int(marker.read_text())
        assert result.state["pid"] not in (ME, crashed)  # a new worker ran the retry
        timeline = await rt.timeline(result.run_id)
    [retry] = [e for e in timeline if e.kind == "step.failed"]
    assert retry.step == "crash_once" and retry.data == {"attempt": 1, "retry": True}
    assert f"(pid {crashed}) exited with code 1" in (retry.message or "")
    assert "retrying" in (retry.message or "")


async def test_retries_apply_to_a_timeout_in_a_new_worker(db: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hung"
    # A step's timeout includes waiting for a worker, and a cold one takes a moment to start
    # on a busy machine: the retry gets the second warm worker, and time to spare.
    async with runtime(db, workers=Workers(warm=2, max=2)) as rt:
        retried = Step(steps.hang_once, timeout=2, retries=1, backoff=0, isolate=True)
        await rt.register(Workflow(id="w", pipelines={"go": [retried]}))
        result = await rt.invoke("w", "go", {"marker": str(marker)})
        assert result.ok, result.error
        hung = int(marker.read_text())
        assert result.state["pid"] not in (ME, hung)
        await eventually(lambda: gone(hung), what=f"the hung worker {hung} to be killed")
        timeline = await rt.timeline(result.run_id)
    [retry] = [e for e in timeline if e.kind == "step.failed"]
    assert "timed out" in (retry.message or "") and retry.data == {"attempt": 1, "retry": True}


async def test_a_crash_on_every_attempt_fails_after_its_retries(db: Path) -> None:
    async with runtime(db) as rt:
        crashing = Step(steps.exit_1, retries=1, backoff=0, isolate=True)
        await rt.register(Workflow(id="w", pipelines={"go": [crashing]}))
        result = await rt.invoke("w", "go", {})
        failed_with(result, "STEP_CRASHED", "exited with code 1")
        timeline = await rt.timeline(result.run_id)
    retries = [e for e in timeline if e.kind == "step.failed" and e.data]
    assert [e.data for e in retries] == [{"attempt": 1, "retry": True}]


# -- a step given up is a process killed ---------------------------------------------------


async def test_a_timeout_kills_the_worker_and_what_its_step_started(
    db: Path, tmp_path: Path
) -> None:
    data = {"pidfile": str(tmp_path / "pid"), "childfile": str(tmp_path / "child")}
    async with runtime(db, isolate=True, workers=Workers(warm=1, max=1)) as rt:
        hung = Step(steps.block_with_child, timeout=TIMEOUT)
        await rt.register(Workflow(id="w", pipelines={"go": [hung], "warm": [steps.pid]}))
        warm = await rt.invoke("w", "warm", {})  # the step below starts at once in this worker
        result = await rt.invoke("w", "go", data)
        failed_with(result, "STEP_TIMEOUT", "timed out")
        worker, child = int((tmp_path / "pid").read_text()), int((tmp_path / "child").read_text())
        assert worker == warm.state["pid"]
        await eventually(lambda: gone(worker), what=f"worker {worker} to be killed")
        await eventually(lambda: gone(child), what=f"the step's process {child} to be killed")
        assert worker not in rt._workers.pids()


async def test_an_abort_kills_the_worker_of_the_step(db: Path, tmp_path: Path) -> None:
    async with runtime(db) as rt:
        await rt.register(
            Workflow(id="w", pipelines={"go": [Step(steps.block, isolate=True)], "ok": [steps.pid]})
        )
        blocked = asyncio.ensure_future(rt.invoke("w", "go", {"pidfile": str(tmp_path / "p")}))
        worker = await pid_in(tmp_path / "p")
        await rt.abort(await running_run(rt))
        result = await blocked
        assert (result.status, result.error_code) == ("aborted", "ABORTED")
        await eventually(lambda: gone(worker), what=f"worker {worker} to be killed")
        assert (await rt.invoke("w", "ok", {})).ok  # the runtime still serves


async def test_no_worker_outlives_the_runtime(db: Path, tmp_path: Path) -> None:
    async with runtime(db, shutdown_grace=0.1, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.block], "ok": [steps.pid]}))
        blocked = asyncio.ensure_future(rt.invoke("w", "go", {"pidfile": str(tmp_path / "p")}))
        busy = await pid_in(tmp_path / "p")
        idle = (await rt.invoke("w", "ok", {})).state["pid"]  # a second worker, idle now
        pids = rt._workers.pids()
        assert busy != idle and {busy, idle} <= set(pids)
    assert [pid for pid in pids if not gone(pid)] == []
    with pytest.raises(RuntimeStopped):  # the run continues when the journal is next opened
        await blocked


# -- what step code sees in a worker -----------------------------------------------------


async def test_ctx_log_env_and_idempotency_key_in_a_worker(db: Path) -> None:
    workflow = Workflow(
        id="w", pipelines={"go": [steps.with_ctx]}, env={"REGION": "eu"}, isolate=True
    )
    async with runtime(db, env={"ISO_RUNTIME_SETTING": "from the runtime"}) as rt:
        await rt.register(workflow)
        result = await rt.invoke("w", "go", {})
        assert result.ok, result.error
        timeline = await rt.timeline(result.run_id)
    state = result.state
    assert state["pid"] != ME
    assert state["key"] == f"{result.run_id}:with_ctx"
    assert (state["region"], state["from_runtime"]) == ("eu", "from the runtime")
    assert state["attempt"] == 1
    logged = [(e.kind, e.step, e.message) for e in timeline if e.source == "logger"]
    assert logged == [
        ("info", "with_ctx", f"hello from pid {state['pid']}"),
        ("warning", "with_ctx", "second line"),
    ]


async def test_a_log_line_after_its_step_ended_never_lands_in_another_run(
    db: Path, tmp_path: Path
) -> None:
    release, logged = tmp_path / "release", tmp_path / "logged"
    data = {"release": str(release), "logged": str(logged)}
    async with runtime(db, isolate=True, workers=Workers(warm=1, max=1)) as rt:
        pipelines = {"late": [steps.log_later], "ok": [steps.pid_with_ctx]}
        await rt.register(Workflow(id="w", pipelines=pipelines))
        first = await rt.invoke("w", "late", data)
        release.touch()
        await eventually(logged.exists, what="the step's thread to log")
        second = await rt.invoke("w", "ok", {})
        assert first.ok and second.ok and first.state["pid"] == second.state["pid"]
        lines = [
            e.message
            for run in (first, second)
            for e in await rt.timeline(run.run_id)
            if e.source == "logger"
        ]
    assert lines == []


async def test_secrets_are_redacted_from_what_a_worker_logs_and_raises(db: Path) -> None:
    env = {"API_TOKEN": "tok-123456", "PLAIN": "visible-value", "DB_PASS": "hunter22"}
    flow = Workflow(id="w", pipelines={"go": [Step(steps.leaky, retries=1, isolate=True)]})
    async with runtime(db, env=env, secrets=["DB_PASS"]) as rt:
        await rt.register(flow)
        result = await rt.invoke("w", "go", {})
        entries = await rt.timeline(result.run_id)
    failed_with(result, "STEP_FAILED", "PermissionError")
    journaled = " ".join(f"{e.message} {e.data}" for e in entries) + (result.error or "")
    assert "tok-123456" not in journaled and "hunter22" not in journaled
    assert "visible-value" in journaled and "***" in journaled
    raw = db.read_bytes()  # the WAL was checkpointed into it at close
    assert b"tok-123456" not in raw and b"hunter22" not in raw


async def test_an_isolated_step_pauses_and_an_event_resumes_the_run(db: Path) -> None:
    workflow = Workflow(id="w", pipelines={"go": [steps.ask, steps.pid]}, isolate=True)
    async with runtime(db) as rt:
        await rt.register(workflow)
        paused = await rt.invoke("w", "go", {"n": 1})
        assert paused.status == "paused", paused.error
        await rt.emit("reply.sent", {"answer": 42})
        await rt.idle()
        info = await rt.watch("w", paused.run_id)
    assert info is not None and info.status == "completed", info
    assert info.state["reply"] == {"answer": 42} and info.state["pid"] != ME


async def test_an_isolated_steps_pause_keeps_its_conditions(db: Path) -> None:
    workflow = Workflow(id="w", pipelines={"go": [steps.ask_for_payment, steps.pid]}, isolate=True)
    async with runtime(db) as rt:
        await rt.register(workflow)
        first, second = [await rt.invoke("w", "go", {"order": n}) for n in (1, 2)]
        assert first.status == second.status == "paused"
        await rt.emit("order.paid", {"order": 2, "amount": 5})
        await rt.idle()
        infos = [await rt.watch("w", run.run_id) for run in (first, second)]
    assert [info.status for info in infos if info] == ["paused", "completed"]
    assert infos[1] is not None and infos[1].state["payment"] == {"order": 2, "amount": 5}


async def test_a_signal_during_an_isolated_step_is_merged_into_what_it_returns(
    db: Path, tmp_path: Path
) -> None:
    data = {"pidfile": str(tmp_path / "pid"), "release": str(tmp_path / "release")}
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.wait_for_release]}))
        running = asyncio.ensure_future(rt.invoke("w", "go", data))
        await pid_in(tmp_path / "pid")
        await rt.signal(await running_run(rt), {"flag": "signalled"})
        (tmp_path / "release").touch()
        result = await running
    assert result.ok, result.error
    assert result.state == {**data, "released": True, "flag": "signalled"}


async def test_an_isolated_step_sleeps_on_the_runtime_clock(db: Path) -> None:
    clock = FakeClock()
    workflow = Workflow(id="w", pipelines={"go": [steps.nap, steps.pid]}, isolate=True)
    async with runtime(db, clock=clock) as rt:
        await rt.register(workflow)
        paused = await rt.invoke("w", "go", {})
        assert paused.status == "paused", paused.error
        await clock.advance(29)
        info = await rt.watch("w", paused.run_id)
        assert info is not None and info.status == "paused"
        await clock.advance(2)
        info = await rt.watch("w", paused.run_id)
    assert info is not None and info.status == "completed", info
    assert info.state["pid"] != ME


async def test_a_workflow_service_is_built_once_per_worker(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = tmp_path / "builds"
    count.touch()
    monkeypatch.setenv(steps.COUNT_FILE, str(count))  # workers inherit the environment
    workers = Workers(warm=1, max=1, recycle_after_steps=3)
    async with runtime(db, workers=workers) as rt:
        await rt.register(steps.services_workflow)
        results = [await rt.invoke("services", "shared", {}) for _ in range(4)]
    assert all(r.ok for r in results), [r.error for r in results]
    pids = [r.state["pid"] for r in results]
    assert pids[0] == pids[1] == pids[2] != pids[3] and ME not in pids
    assert len({r.state["shared"] for r in results[:3]}) == 1  # one instance in that worker
    assert count.read_text().split() == [str(pids[0]), str(pids[3])]


async def test_a_run_service_is_closed_at_the_end_of_the_isolated_step(
    db: Path, tmp_path: Path
) -> None:
    cleanups = tmp_path / "cleanups"
    cleanups.touch()
    async with runtime(db) as rt:
        await rt.register(steps.services_workflow)
        result = await rt.invoke("services", "per_run", {"cleanups": str(cleanups)})
    assert result.ok, result.error
    assert result.state["seen"] == ["opened", "closed"]  # read by the step after it


@pytest.mark.parametrize("owner", ["runtime", "local workflow"])
async def test_a_service_a_worker_cannot_build_is_a_clear_failure(db: Path, owner: str) -> None:
    service = Service("shared", lambda ctx: object())
    step = Step(steps.use_shared, isolate=True)
    if owner == "runtime":  # built in the daemon: it cannot cross to a worker
        workflow, options = Workflow(id="w", pipelines={"go": [step]}), {"services": [service]}
    else:  # not at the top level of the step's module: the worker cannot find it
        workflow, options = Workflow(id="w", pipelines={"go": [step]}, services=[service]), {}
    async with runtime(db, **options) as rt:
        await rt.register(workflow)
        result = await rt.invoke("w", "go", {})
    failed_with(result, "STEP_FAILED", "no service 'shared'", "this step is isolated")
    assert "top level of the step's module" in (result.error or "")
    assert "runtime services are not available" in (result.error or "")


async def test_the_pause_service_is_a_clear_failure_in_a_worker(db: Path) -> None:
    async with runtime(db) as rt:
        step = Step(steps.uses_pause_service, isolate=True)
        await rt.register(Workflow(id="w", pipelines={"go": [step]}))
        result = await rt.invoke("w", "go", {})
    failed_with(result, "STEP_FAILED", "'uses_pause_service'", "not available in an isolated step")
    assert "isolate=False" in (result.error or "")


# -- which steps are isolated ---------------------------------------------------------------


async def test_a_step_that_says_isolate_false_wins_over_its_workflow(db: Path) -> None:
    def here(state: dict[str, Any]) -> dict[str, Any]:  # local: fine, it is not isolated
        return {**state, "here": os.getpid()}

    workflow = Workflow(
        id="w", pipelines={"go": [steps.pid, Step(here, isolate=False)]}, isolate=True
    )
    async with runtime(db) as rt:
        await rt.register(workflow)
        result = await rt.invoke("w", "go", {})
    assert result.ok, result.error
    assert result.state["pid"] != ME and result.state["here"] == ME


async def test_inline_and_async_steps_are_not_isolated_by_default(db: Path) -> None:
    pipeline = [steps.pid, Step(steps.pid_inline, inline=True), steps.pid_async]
    async with runtime(db, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": pipeline}))
        result = await rt.invoke("w", "go", {})
    assert result.ok, result.error
    assert result.state["pid"] != ME
    assert result.state["inline_pid"] == ME and result.state["async_pid"] == ME


async def test_an_explicitly_isolated_async_step_runs_in_a_worker(db: Path) -> None:
    async with runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [Step(steps.pid_async, isolate=True)]}))
        result = await rt.invoke("w", "go", {})
    assert result.ok and result.state["async_pid"] != ME


async def test_an_embedded_runtime_does_not_isolate_unless_asked(db: Path) -> None:
    async with runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.pid]}))
        result = await rt.invoke("w", "go", {})
    assert result.ok and result.state["pid"] == ME


PID_FLOW = """\
import os

from orchestrator import Workflow


def sync_pid(state):
    return {**state, "sync": os.getpid()}


async def async_pid(state):
    return {**state, "async": os.getpid()}


workflow = Workflow(id="{id}", pipelines={"go": [sync_pid, async_pid]}{extra})
"""


def pid_flow(workflow_id: str, extra: str = "") -> str:
    return PID_FLOW.replace("{id}", workflow_id).replace("{extra}", extra)


async def test_a_folder_setting_isolates_its_sync_steps(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "orchestrator.toml").write_text("[steps]\nisolate = true\n")
    (folder / "plain.py").write_text(pid_flow("plain"))
    (folder / "opted_out.py").write_text(pid_flow("opted_out", ", isolate=False"))
    async with runtime(db, workflows_dir=folder) as rt:
        plain = await rt.invoke("plain", "go", {})
        opted_out = await rt.invoke("opted_out", "go", {})
    assert plain.ok and opted_out.ok, (plain.error, opted_out.error)
    assert plain.state["sync"] != ME and plain.state["async"] == ME
    assert opted_out.state == {"sync": ME, "async": ME}  # the workflow wins over the folder


async def test_a_folder_without_the_setting_is_not_isolated(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "plain.py").write_text(pid_flow("plain"))
    async with runtime(db, workflows_dir=folder) as rt:
        result = await rt.invoke("plain", "go", {})
    assert result.ok and result.state == {"sync": ME, "async": ME}


async def test_a_folder_that_says_isolate_false_wins_over_the_runtime(
    db: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "orchestrator.toml").write_text("[steps]\nisolate = false\n")
    (folder / "plain.py").write_text(pid_flow("plain"))
    (folder / "opted_in.py").write_text(pid_flow("opted_in", ", isolate=True"))
    async with runtime(db, workflows_dir=folder, isolate=True) as rt:
        plain = await rt.invoke("plain", "go", {})
        opted_in = await rt.invoke("opted_in", "go", {})
    assert plain.ok and plain.state == {"sync": ME, "async": ME}
    assert opted_in.ok and opted_in.state["sync"] != ME and opted_in.state["async"] == ME


@pytest.mark.parametrize(
    "settings",
    [
        {"max": 0},
        {"warm": -1},
        {"memory_limit_mb": 32},
        {"recycle_after_steps": 0},
        {"recycle_above_mb": True},
    ],
)
def test_workers_settings_are_checked(settings: dict[str, Any]) -> None:
    [name] = settings
    with pytest.raises(ValueError, match=f"Workers {name}"):
        Workers(**settings)


def test_runtime_isolate_and_workers_are_checked(db: Path) -> None:
    with pytest.raises(ValueError, match="isolate"):
        Runtime(db, isolate="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Workers"):
        Runtime(db, workers={"max": 2})  # type: ignore[arg-type]


def test_a_step_cannot_be_inline_and_isolated() -> None:
    with pytest.raises(DefinitionError, match=r"inline.*isolate"):
        Step(steps.pid, inline=True, isolate=True)


def local_function() -> Any:
    def local(state: dict[str, Any]) -> dict[str, Any]:
        return state

    return local


@pytest.mark.parametrize("fn", [lambda state: state, local_function()], ids=["lambda", "local"])
@pytest.mark.parametrize("how", ["step", "workflow", "runtime"])
async def test_an_isolated_step_must_be_a_top_level_function(db: Path, fn: Any, how: str) -> None:
    step = Step(fn, name="inner", isolate=True if how == "step" else None)
    workflow = Workflow(
        id="w", pipelines={"go": [step]}, isolate=True if how == "workflow" else None
    )
    async with runtime(db, isolate=how == "runtime") as rt:
        with pytest.raises(DefinitionError) as raised:
            await rt.register(workflow)
        assert not rt.has_workflow("w")
    message = str(raised.value)
    assert "'inner'" in message and "top level of a module" in message
    assert "isolate=False" in message


# -- versions -------------------------------------------------------------------------------

VERSIONED = """\
import os

from orchestrator import Workflow

VERSION = {version}


def ask(state, ctx):
    return ctx.pause("go.on", into="reply")


def answer(state):
    return {{**state, "version": VERSION, "pid": os.getpid()}}


workflow = Workflow(id="pinned", pipelines={{"go": [ask, answer]}})
"""


async def test_a_paused_run_resumes_on_the_code_of_its_version(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "pinned.py").write_text(VERSIONED.format(version=1))
    async with runtime(db, workflows_dir=folder, isolate=True) as rt:
        first = rt.registry("pinned").version
        old = await rt.invoke("pinned", "go", {})
        assert old.status == "paused", old.error
        (folder / "pinned.py").write_text(VERSIONED.format(version=2))
        await eventually(
            lambda: rt.registry("pinned").version != first, what="version 2 to load", timeout=30
        )
        new = await rt.invoke("pinned", "go", {})
        assert new.status == "paused", new.error
        await rt.emit("go.on", {})  # resumes both
        await rt.idle()
        ended = {run: await rt.watch("pinned", run) for run in (old.run_id, new.run_id)}
    versions = {
        run: (info.status, info.state.get("version")) for run, info in ended.items() if info
    }
    assert versions == {old.run_id: ("completed", 1), new.run_id: ("completed", 2)}
    assert all(info.state["pid"] != ME for info in ended.values() if info)


# -- recycling ----------------------------------------------------------------------------


async def test_a_worker_is_replaced_after_its_steps(db: Path) -> None:
    workers = Workers(warm=1, max=1, recycle_after_steps=2)
    async with runtime(db, workers=workers, isolate=True) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.pid]}))
        pids = [(await rt.invoke("w", "go", {})).state["pid"] for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert gone(pids[0]) and gone(pids[2])


async def test_a_worker_that_grew_past_its_memory_is_replaced(db: Path) -> None:
    workers = Workers(warm=1, max=1, recycle_above_mb=64)
    async with runtime(db, workers=workers, isolate=True) as rt:
        await rt.register(
            Workflow(id="w", pipelines={"grow": [steps.keep_100_mb], "go": [steps.pid]})
        )
        small = [(await rt.invoke("w", "go", {})).state["pid"] for _ in range(2)]
        grown = (await rt.invoke("w", "grow", {})).state["pid"]
        fresh = (await rt.invoke("w", "go", {})).state["pid"]
    assert small[0] == small[1] == grown  # a small worker is kept
    assert fresh != grown
    await eventually(lambda: gone(grown), what=f"the grown worker {grown} to exit")


# -- the daemon ---------------------------------------------------------------------------

CRASHY = """\
import os

from orchestrator import Workflow


def crash(state):
    os._exit(1)


def ok(state):
    return {**state, "pid": os.getpid()}


workflow = Workflow(id="crashy", pipelines={"crash": [crash], "ok": [ok]})
"""


def show(db: Path, run_id: str) -> dict[str, Any]:
    out = cli("show", run_id, "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    shown: dict[str, Any] = json.loads(out.stdout)
    return shown


BLOCKING = """\
import os
import time

from orchestrator import Workflow


def block(state):
    if os.path.exists(state["release"]):
        return {**state, "pid": os.getpid()}
    with open(state["pidfile"], "w") as file:
        file.write(str(os.getpid()))
    time.sleep(60)
    return state


workflow = Workflow(id="blocking", pipelines={"go": [block]})
"""


@pytest.mark.slow
def test_a_worker_does_not_outlive_a_daemon_killed_with_sigkill(tmp_path: Path) -> None:
    folder, db, pidfile = tmp_path / "workflows", tmp_path / "journal.db", tmp_path / "pid"
    release = tmp_path / "release"
    folder.mkdir()
    (folder / "blocking.py").write_text(BLOCKING)
    with Daemon(folder, db) as daemon:
        daemon.start()
        data = json.dumps({"pidfile": str(pidfile), "release": str(release)})
        started = cli("invoke", "blocking", "go", data, "--db", str(db))
        assert started.returncode == 0, started.stderr + daemon.log()
        run_id = started.stdout.strip()
        worker = int(
            daemon.wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30, "the step")
        )
        assert worker != daemon.pid
        daemon.kill()
    eventually_blocking(lambda: gone(worker), what=f"worker {worker} to die with the daemon")
    release.touch()
    with Daemon(folder, db) as daemon:  # the run is recovered, its step runs in a new worker
        daemon.start()
        daemon.wait_until(lambda: show(db, run_id)["status"] == "completed", 30, "the run")
        assert show(db, run_id)["state"]["pid"] not in (worker, daemon.pid)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()


@pytest.mark.slow
def test_the_daemon_survives_a_step_that_exits_its_process(tmp_path: Path) -> None:
    folder, db = tmp_path / "workflows", tmp_path / "journal.db"
    folder.mkdir()
    (folder / "crashy.py").write_text(textwrap.dedent(CRASHY))
    with Daemon(folder, db) as daemon:
        daemon.start()
        pid = daemon.pid
        crashed = cli("invoke", "crashy", "crash", "--wait", "--db", str(db))
        assert crashed.returncode == 1, crashed.stderr + daemon.log()
        assert "exited with code 1" in crashed.stderr
        shown = show(db, crashed.stdout.strip())
        assert (shown["status"], shown["error_code"]) == ("failed", "STEP_CRASHED")
        ok = cli("invoke", "crashy", "ok", "--wait", "--db", str(db))
        assert ok.returncode == 0, ok.stderr + daemon.log()
        state = show(db, ok.stdout.strip())["state"]
        assert state["pid"] not in (pid, ME)  # `up` isolates sync steps
        assert daemon.proc is not None and daemon.proc.poll() is None and daemon.pid == pid
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()


FLAKY_IMPORT = """
from pathlib import Path

from orchestrator import Workflow

if Path(__file__).with_name("poisoned").exists():
    raise RuntimeError("this file cannot be imported here")


def step(state):
    return {**state, "ran": True}


workflow = Workflow(id="flaky", pipelines={"go": [step]})
"""


async def test_a_file_that_fails_to_load_in_the_worker_fails_the_step_not_the_worker(
    db: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "flaky.py").write_text(FLAKY_IMPORT)
    async with runtime(db, workflows_dir=folder, isolate=True) as rt:
        (folder / "poisoned").write_text("")  # after the daemon loaded it: only workers see it
        failed = await rt.invoke("flaky", "go", {})
        failed_with(failed, "STEP_FAILED", "RuntimeError: this file cannot be imported here")
        (folder / "poisoned").unlink()
        again = await rt.invoke("flaky", "go", {})  # the same worker loads it this time
    assert again.ok and again.state == {"ran": True}, again.error


async def test_workers_beyond_warm_exit_once_idle_after_a_burst(db: Path, tmp_path: Path) -> None:
    workers = Workers(warm=1, max=3, idle_seconds=0.3)
    release = tmp_path / "release"
    async with runtime(db, isolate=True, workers=workers) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [steps.wait_for_release]}))
        burst = [
            asyncio.ensure_future(
                rt.invoke(
                    "w", "go", {"pidfile": str(tmp_path / f"pid{n}"), "release": str(release)}
                )
            )
            for n in range(3)
        ]
        pids = {await pid_in(tmp_path / f"pid{n}") for n in range(3)}
        assert len(pids) == 3  # the burst took three workers
        release.touch()
        assert all(result.ok for result in await asyncio.gather(*burst))
        await eventually(
            lambda: sum(map(gone, pids)) == 2, what="the workers beyond warm to exit", timeout=10
        )
        again = await rt.invoke(
            "w", "go", {"pidfile": str(tmp_path / "pid"), "release": str(release)}
        )
        assert again.ok and await pid_in(tmp_path / "pid") in pids  # the warm one stayed

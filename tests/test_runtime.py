"""The runtime core: invoke, checkpoints, failures, timeouts, retries, abort, lifecycle."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator import (
    FakeClock,
    JournalCorrupt,
    JournalLocked,
    RunNotActive,
    RunNotFound,
    Runtime,
    RuntimeNotStarted,
    Step,
    StepContext,
    TriggerNotFound,
    ValidationError,
    Workflow,
    WorkflowNotFound,
)
from orchestrator.journal import open_journal
from orchestrator.journal.ops import Stmt
from orchestrator.journal.sqlite.writer import GroupCommitWriter, Rows
from orchestrator.testing import eventually

pytestmark = pytest.mark.both_backends  # each test taking `db` runs on SQLite and PostgreSQL


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state["n"] + 1}


def sync_inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state["n"] + 1}


async def checkpoints(db: Path, run_id: str) -> list[dict[str, Any]]:
    reader = await open_journal(db).open_reader()
    try:
        return [c.state for c in await reader.checkpoints(run_id)]
    finally:
        await reader.close()


async def test_invoke_runs_steps_in_series_and_checkpoints_each(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc, sync_inc, inc]}))
        result = await rt.invoke("w", "go", {"n": 0})
        assert result.ok and result.status == "completed"
        assert result.state == {"n": 3}
        assert await checkpoints(db, result.run_id) == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
        info = await rt.watch("w", result.run_id)
        assert info is not None
        assert (info.status, info.step, info.state, info.trigger_id) == (
            "completed",
            None,
            {"n": 3},
            "go",
        )
        assert info.version == rt.registry("w").version


async def test_timeline_lists_run_and_step_lifecycle_and_logs_in_order(db: Path) -> None:
    def noisy(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.log.info("working on %s", state["n"])
        ctx.log.warning("careful")
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc, noisy]}))
        result = await rt.invoke("w", "go", {"n": 0})
        entries = await rt.timeline(result.run_id)
    kinds = [(e.source, e.kind, e.step) for e in entries]
    assert kinds == [
        ("runtime", "run.started", None),
        ("runtime", "step.started", "inc"),
        ("runtime", "step.completed", "inc"),
        ("runtime", "step.started", "noisy"),
        ("logger", "info", "noisy"),
        ("logger", "warning", "noisy"),
        ("runtime", "step.completed", "noisy"),
        ("runtime", "run.completed", None),
    ]
    assert entries[4].message == "working on 1"
    assert [e.at for e in entries] == sorted(e.at for e in entries)


async def test_state_is_isolated_between_steps_and_checkpoints(db: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def first(state: dict[str, Any]) -> dict[str, Any]:
        out = {"items": [1]}
        seen.append(out)
        return out

    async def mutator(state: dict[str, Any]) -> dict[str, Any]:
        state["items"].append(2)  # mutates its input in place
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [first, mutator]}))
        result = await rt.invoke("w", "go", {})
    assert seen == [{"items": [1]}]  # what `first` returned is untouched
    assert await checkpoints(db, result.run_id) == [{}, {"items": [1]}, {"items": [1, 2]}]


async def test_failing_step_fails_the_run_and_names_the_step(db: Path) -> None:
    ran: list[str] = []

    async def boom(state: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no stock")

    async def after(state: dict[str, Any]) -> dict[str, Any]:
        ran.append("after")
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc, boom, after], "ok": [inc]}))
        result = await rt.invoke("w", "go", {"n": 0})
        assert not result.ok and result.status == "failed"
        assert result.error is not None and "'boom'" in result.error and "no stock" in result.error
        assert result.error_code == "STEP_FAILED"
        assert result.state == {"n": 1}  # the last good state
        assert ran == []
        info = await rt.watch("w", result.run_id)
        assert info is not None and info.status == "failed" and info.step == "boom"
        # The runtime keeps serving other runs.
        assert (await rt.invoke("w", "ok", {"n": 0})).state == {"n": 1}
        timeline = [(e.kind, e.step) for e in await rt.timeline(result.run_id)]
        # The failed step shows when it began, so its duration can be read off.
        assert timeline[-3:] == [
            ("step.started", "boom"),
            ("step.failed", "boom"),
            ("run.failed", None),
        ]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


def _raise(exc: BaseException) -> Any:
    raise exc


NOISE = "".join(f"{n * 7919 % 100003:05x}" for n in range(2000))  # 10,000 characters, no repeats


@pytest.mark.parametrize(
    ("hostile", "said"),
    [
        pytest.param(lambda s, ctx: _raise(RuntimeError(NOISE)), NOISE[:100], id="long-error"),
        pytest.param(lambda s, ctx: _raise(Unprintable()), "its str() raised", id="unprintable"),
        pytest.param(lambda s, ctx: ctx.emit("t\ud800", {}), "lone surrogate", id="emit-type"),
        pytest.param(lambda s, ctx: ctx.start("w\ud800", "go"), "lone surrogate", id="start-id"),
        pytest.param(lambda s, ctx: ctx.pause(event="e\ud800"), "valid Unicode", id="pause-event"),
        pytest.param(lambda s, ctx: ctx.pause(event="e", into="\ud800"), "valid", id="into"),
    ],
)
async def test_hostile_step_fails_its_run_and_never_the_writer(
    db: Path, hostile: Any, said: str
) -> None:
    """Each of these once reached the journal writer and failed its batch: the runtime
    stopped (PostgreSQL: a long error broke the index on errors; both: a lone surrogate
    could not be encoded), or (unprintable) the run was never driven to an end."""

    def step(state: dict[str, Any], ctx: Any) -> Any:
        hostile(state, ctx)
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [step], "ok": [inc]}))
        result = await rt.invoke("w", "go", {"n": 0})
        assert result.status == "failed" and said in (result.error or ""), result.error
        assert (await rt.invoke("w", "ok", {"n": 0})).state == {"n": 1}  # the writer goes on


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda s: [1, 2], id="list"),
        pytest.param(lambda s: {"when": object()}, id="object"),
        pytest.param(lambda s: {"x": float("nan")}, id="nan"),
        pytest.param(lambda s: None, id="none"),
    ],
)
async def test_non_json_state_fails_the_run_naming_the_step(db: Path, bad: Any) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [Step(bad, name="shape")]}))
        result = await rt.invoke("w", "go", {"n": 0})
    assert result.status == "failed" and result.error_code == "INVALID_STATE"
    assert result.error is not None and "'shape'" in result.error
    assert result.state == {"n": 0}


async def test_non_object_input_fails_the_run_clearly(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc]}))
        result = await rt.invoke("w", "go", [1, 2])
        assert result.status == "failed" and result.error_code == "INVALID_STATE"
        assert result.error is not None and "JSON object" in result.error


async def test_sys_exit_in_a_step_fails_only_that_run(db: Path) -> None:
    def leave(state: dict[str, Any]) -> dict[str, Any]:
        sys.exit(3)

    async def leave_async(state: dict[str, Any]) -> dict[str, Any]:
        sys.exit(4)

    async with Runtime(db) as rt:
        await rt.register(
            Workflow(id="w", pipelines={"t": [leave], "a": [leave_async], "ok": [inc]})
        )
        for trigger in ("t", "a"):
            result = await rt.invoke("w", trigger, {"n": 0})
            assert result.status == "failed" and "SystemExit" in (result.error or "")
        assert (await rt.invoke("w", "ok", {"n": 0})).ok


async def test_sync_steps_run_in_a_worker_thread_unless_inline(db: Path) -> None:
    threads: dict[str, bool] = {}

    def where(key: str) -> Any:
        def step(state: dict[str, Any]) -> dict[str, Any]:
            threads[key] = threading.current_thread() is threading.main_thread()
            return state

        step.__name__ = key
        return step

    async with Runtime(db) as rt:
        await rt.register(
            Workflow(
                id="w", pipelines={"go": [where("threaded"), Step(where("inline"), inline=True)]}
            )
        )
        await rt.invoke("w", "go", {})
    assert threads == {"threaded": False, "inline": True}


async def test_a_blocking_sync_step_does_not_freeze_other_runs(db: Path) -> None:
    release = threading.Event()

    def blocking(state: dict[str, Any]) -> dict[str, Any]:
        release.wait(5)
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"slow": [blocking], "fast": [inc]}))
        slow = asyncio.ensure_future(rt.invoke("w", "slow", {}))
        fast = await asyncio.wait_for(rt.invoke("w", "fast", {"n": 0}), timeout=2)
        assert fast.ok and not slow.done()
        release.set()
        assert (await slow).ok


async def test_step_timeout_fails_the_run_and_cancels_an_async_step(db: Path) -> None:
    finished: list[str] = []

    thread_done = threading.Event()

    async def hang(state: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)  # far past its timeout: it must be cancelled
        finished.append("hang")
        return state

    def hang_sync(state: dict[str, Any]) -> dict[str, Any]:
        threading.Event().wait(0.5)
        finished.append("hang_sync")
        thread_done.set()
        return {"discarded": True}

    async with Runtime(db) as rt:
        await rt.register(
            Workflow(
                id="w",
                pipelines={"a": [Step(hang, timeout=0.05)], "s": [Step(hang_sync, timeout=0.05)]},
            )
        )
        for trigger in ("a", "s"):
            result = await rt.invoke("w", trigger, {"n": 0})
            assert result.status == "failed" and result.error_code == "STEP_TIMEOUT"
            assert result.state == {"n": 0}
        assert await asyncio.to_thread(thread_done.wait, 10)
    assert finished == ["hang_sync"]  # the thread ran on, its result was discarded


async def test_a_step_timeout_reads_in_plain_words_in_the_run_and_its_retries(db: Path) -> None:
    async def hang(state: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)
        return state

    async def mine(state: dict[str, Any]) -> dict[str, Any]:
        raise TimeoutError("the API did not answer")  # the step's own: a failure, not a timeout

    async with Runtime(db) as rt:
        pipelines = {
            "once": [Step(hang, name="charge", timeout=0.05)],
            "twice": [Step(hang, name="charge", timeout=0.05, retries=1, backoff=0)],
            "own": [Step(mine, name="call", timeout=5)],
        }
        await rt.register(Workflow(id="w", pipelines=pipelines))
        once = await rt.invoke("w", "once", {})
        twice = await rt.invoke("w", "twice", {})
        own = await rt.invoke("w", "own", {})
        retried = [e.message for e in await rt.timeline(twice.run_id) if e.kind == "step.failed"]
    assert (once.error_code, once.error) == (
        "STEP_TIMEOUT",
        "step 'charge' timed out after 0.05 s (timeout=0.05)",
    )
    assert twice.error == (
        "step 'charge' timed out after 0.05 s (timeout=0.05), on its last attempt of 2"
    )
    assert retried[0] == "attempt 1 timed out after 0.05 s (timeout=0.05); retrying in 0s"
    assert (own.error_code, own.error) == (
        "STEP_FAILED",
        "step 'call' failed: TimeoutError: the API did not answer",
    )


async def test_retries_with_backoff_and_a_stable_idempotency_key(db: Path) -> None:
    clock = FakeClock()
    keys: list[str] = []

    def flaky(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        keys.append(ctx.idempotency_key)
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return {**state, "attempts": ctx.attempt}

    async with Runtime(db, clock=clock) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [Step(flaky, retries=3, backoff=10)]}))
        pending = asyncio.ensure_future(rt.invoke("w", "go", {}))
        await clock.advance(9)  # the first attempt fails, then its backoff begins, then 9 s
        assert len(keys) == 1  # the first backoff is 10 s
        await clock.advance(1)
        assert len(keys) == 2
        await clock.advance(20)  # the second backoff doubles
        result = await asyncio.wait_for(pending, 5)
        assert result.ok and result.state == {"attempts": 3}
        assert len(set(keys)) == 1 and keys[0] == f"{result.run_id}:flaky"
        retries = [e for e in await rt.timeline(result.run_id) if e.kind == "step.failed"]
        assert [e.data and e.data["attempt"] for e in retries] == [1, 2]


async def test_retries_exhausted_fail_the_run(db: Path) -> None:
    calls = 0

    async def always(state: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise RuntimeError("down")

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [Step(always, retries=2)]}))
        result = await rt.invoke("w", "go", {})
    assert calls == 3 and result.status == "failed" and "down" in (result.error or "")


async def test_abort_ends_a_running_run_and_refuses_final_or_unknown_runs(db: Path) -> None:
    started = asyncio.Event()

    async def wait_forever(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)  # until aborted
        return state

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc, wait_forever, inc], "ok": [inc]}))
        pending = asyncio.ensure_future(rt.invoke("w", "go", {"n": 0}))
        await asyncio.wait_for(started.wait(), 2)
        run_id = (await rt.list_runs(workflow="w"))[0].run_id
        await rt.abort(run_id)
        result = await asyncio.wait_for(pending, 2)
        assert result.status == "aborted" and result.state == {"n": 1}
        info = await rt.watch("w", run_id)
        assert info is not None and info.status == "aborted" and info.error_code == "ABORTED"
        with pytest.raises(RunNotActive):
            await rt.abort(run_id)
        with pytest.raises(RunNotFound):
            await rt.abort("no-such-run")
        assert (await rt.invoke("w", "ok", {"n": 0})).ok


async def test_lifecycle_events_are_observable_in_order(db: Path) -> None:
    seen: list[tuple[str, str | None]] = []
    async with Runtime(db) as rt:
        rt.on("*", lambda name, payload: seen.append((name, payload.get("step"))))
        await rt.register(Workflow(id="w", pipelines={"go": [inc, inc]}))
        await rt.invoke("w", "go", {"n": 0})
    assert seen == [
        ("run.started", None),
        ("step.started", "inc"),
        ("step.completed", "inc"),
        ("step.started", "inc#2"),
        ("step.completed", "inc#2"),
        ("run.completed", None),
    ]


async def test_a_raising_lifecycle_handler_never_affects_the_run(db: Path, caplog: Any) -> None:
    def bad(name: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    async with Runtime(db) as rt:
        rt.on("step.completed", bad)
        await rt.register(Workflow(id="w", pipelines={"go": [inc]}))
        assert (await rt.invoke("w", "go", {"n": 0})).ok
    assert "handler bug" in caplog.text


async def test_unknown_names_are_clear_errors(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc]}))
        with pytest.raises(WorkflowNotFound, match="'nope'"):
            await rt.invoke("nope", "go", {})
        with pytest.raises(TriggerNotFound, match="it has: go"):
            await rt.invoke("w", "nope", {})
        assert await rt.watch("w", "missing") is None
        with pytest.raises(RunNotFound):
            await rt.timeline("missing")
        with pytest.raises(ValueError, match="unknown lifecycle event"):
            rt.on("run.exploded", lambda n, p: None)


async def test_register_deregister_and_list(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="b", pipelines={"go": [inc]}))
        await rt.register(Workflow(id="a", pipelines={"go": [inc]}))
        assert rt.list_workflows() == ["a", "b"] and rt.has_workflow("a")
        await rt.deregister("a")
        assert rt.list_workflows() == ["b"] and not rt.has_workflow("a")
        with pytest.raises(WorkflowNotFound):
            await rt.deregister("a")


async def test_list_runs_filters_newest_first(db: Path) -> None:
    async def boom(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("x")

    async with Runtime(db) as rt:
        await rt.register(Workflow(id="a", pipelines={"go": [inc], "bad": [boom]}))
        await rt.register(Workflow(id="b", pipelines={"go": [inc]}))
        ids = [
            (await rt.invoke(w, t, {"n": 0})).run_id
            for w, t in [("a", "go"), ("b", "go"), ("a", "bad"), ("a", "go")]
        ]
        assert [r.run_id for r in await rt.list_all_runs()] == ids[::-1]
        assert [r.run_id for r in await rt.list_runs(workflow="a")] == [ids[3], ids[2], ids[0]]
        assert [r.run_id for r in await rt.list_runs(status="failed")] == [ids[2]]
        assert [r.run_id for r in await rt.list_runs(limit=2)] == [ids[3], ids[2]]


async def test_runtime_must_be_started(db: Path) -> None:
    rt = Runtime(db)
    with pytest.raises(RuntimeNotStarted):
        await rt.invoke("w", "go", {})
    async with rt:
        pass
    with pytest.raises(RuntimeNotStarted):
        await rt.list_runs()


@pytest.mark.sqlite_only  # file modes: PostgreSQL keeps its own files
async def test_journal_files_are_private(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc]}))
        await rt.invoke("w", "go", {"n": 0})
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{db}{suffix}")
            assert path.exists()
            assert path.stat().st_mode & 0o777 == 0o600, suffix


async def test_a_file_that_is_not_a_journal_is_refused_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("these are my notes\n" * 100)
    with pytest.raises(JournalCorrupt, match="not a journal"):
        async with Runtime(text):
            pass
    assert text.read_text().startswith("these are my notes")
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    foreign.chmod(0o600)  # else it is refused first as a journal open to other users
    with pytest.raises(JournalCorrupt, match="another application"):
        async with Runtime(foreign):
            pass


async def test_second_runtime_on_a_live_journal_is_refused(db: Path) -> None:
    async with Runtime(db):
        with pytest.raises(JournalLocked, match=f"pid {os.getpid()}"):
            async with Runtime(db):
                pass
    async with Runtime(db):  # released on a clean close
        pass


async def test_synchronous_level_is_validated() -> None:
    with pytest.raises(ValueError, match="FULL"):
        Runtime("x.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_a_run_result_passed_where_a_run_id_belongs_is_a_clear_error(db: Path) -> None:
    async with Runtime(db) as rt:
        await rt.register(Workflow(id="w", pipelines={"go": [inc]}))
        result = await rt.invoke("w", "go", {"n": 0})
        calls = [
            rt.wait(result),  # type: ignore[arg-type]
            rt.timeline(result),  # type: ignore[arg-type]
            rt.watch("w", result),  # type: ignore[arg-type]
            rt.abort(result),  # type: ignore[arg-type]
            rt.resume(result, {}),  # type: ignore[arg-type]
            rt.signal(result, {}),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(ValidationError, match=rf"pass its \.run_id \('{result.run_id}'\)"):
                await call
        with pytest.raises(ValidationError, match="a run id must be a string, got int"):
            await rt.wait(7)  # type: ignore[arg-type]


async def test_a_runtime_leaves_the_garbage_collector_of_its_program_as_it_was(
    db: Path,
) -> None:
    # Only `orchestrator up`, whose process is ours, tunes it (cli/daemon.py, tune_process).
    import gc
    import sys

    before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())
    switch = sys.getswitchinterval()
    wf = Workflow(id="w", pipelines={"go": [inc, Step(sync_inc), inc]})
    async with Runtime(db, workflows=[wf]) as rt:
        result = await rt.invoke("w", "go", {"n": 0})
        assert result.state == {"n": 3}
        assert (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()) == before
    assert (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()) == before
    assert sys.getswitchinterval() == switch


async def test_a_run_end_given_up_leaves_its_batch_to_the_other_runs_in_it() -> None:
    """A run's end waits for its batch through `_relay` (a light shield): cancelling one
    run's wait never cancels the batch the other runs' ends are in, and a failed batch
    fails every wait still on it."""
    import functools

    from orchestrator.engine.executor import _relay
    from orchestrator.errors import JournalError

    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []  # a callback that raises is only logged: catch it
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    for outcome in (None, JournalError("disk full")):
        batch: asyncio.Future[None] = loop.create_future()
        waiters: list[asyncio.Future[None]] = [loop.create_future() for _ in range(3)]
        for waiter in waiters:
            batch.add_done_callback(functools.partial(_relay, waiter))
        waiters[0].cancel()  # its run's task was cancelled (an abort, a shutdown)
        if outcome is None:
            batch.set_result(None)
        else:
            batch.set_exception(outcome)
        await asyncio.sleep(0)  # the batch's callbacks run
        assert not batch.cancelled()
        assert waiters[0].cancelled()
        for waiter in waiters[1:]:
            assert waiter.done()
            assert waiter.exception() is outcome
    assert errors == []


@pytest.mark.parametrize("ending", ["completed", "paused"])
async def test_a_run_settled_by_its_batch_returns_only_once_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """Its task ends once its end (or pause) is enqueued; `invoke` still waits for COMMIT."""
    reached, release = threading.Event(), threading.Event()
    apply = GroupCommitWriter._apply

    def holding(self: GroupCommitWriter, ops: Rows) -> None:
        statuses = [row[0] for row in ops.get(Stmt.SET_STATUS, [])]
        statuses += ["paused" for _ in ops.get(Stmt.SET_PARKED, [])]  # a pause's row
        if ending in statuses and not reached.is_set():
            reached.set()
            release.wait(30)
        apply(self, ops)

    async def waits(state: dict[str, Any], ctx: StepContext) -> Any:
        return ctx.pause(event="go.on")

    monkeypatch.setattr(GroupCommitWriter, "_apply", holding)
    async with Runtime(tmp_path / "journal.db") as rt:
        steps = [inc] if ending == "completed" else [waits]
        await rt.register(Workflow(id="w", pipelines={"go": steps}))
        invoked = asyncio.ensure_future(rt.invoke("w", "go", {"n": 0}))
        await eventually(lambda: reached.is_set() or None, what="the run's batch to commit")
        try:
            assert not invoked.done()
            assert rt.active_runs() == 1  # active until settled, as when its task waited
            control: Any = rt._control
            (run,) = control.runs.active.values()
            assert run.task is None  # its task has ended: the batch settles it
        finally:
            release.set()
        result = await invoked
        assert result.status == ending
        assert rt.active_runs() == 0
        conn = sqlite3.connect(tmp_path / "journal.db")
        try:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (result.run_id,))
            assert row.fetchone() == (ending,)
        finally:
            conn.close()

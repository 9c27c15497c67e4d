"""Isolated steps attacked as a hostile or clumsy workflow author would, with real processes.

Each test loads one workflow file (`FLOW`) from a folder into an embedded `Runtime` with
``isolate=True``, as ``orchestrator up`` does, and picks an attack by the run's input
(``{"kind": ...}``). Workers are few (one, mostly) so that a worker one run poisoned is the
worker the next run gets. Nothing sleeps: a test waits for what it needs to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, cli, reap

from orchestrator import Runtime
from orchestrator.engine.workers import Workers, wire
from orchestrator.engine.workers.pool import _CLOSE_GRACE
from orchestrator.testing import eventually, eventually_blocking

FLOW = textwrap.dedent(
    '''\
    import contextlib
    import os
    import signal
    import sys
    import threading

    from orchestrator import PauseRequest, Step, Workflow

    # Set by a step of one run, used by a step of a later run in the same worker.
    handoff = {}


    def fork_and_return(state, ctx):
        os.fork()  # no exec, no os._exit: both copies return from the step
        return {"pid": os.getpid()}


    def echo(state, ctx):
        return {"echo": state["n"]}


    def log_later(state, ctx):
        """Leave a thread that logs once another run's step lets it."""
        go, done = threading.Event(), threading.Event()

        def later():
            go.wait()
            ctx.log.info("a line of run %s, logged after its step", ctx.run_id)
            done.set()

        threading.Thread(target=later, daemon=True).start()
        handoff["log"] = (go, done)
        return {}


    def let_it_log(state, ctx):
        go, done = handoff.pop("log")
        go.set()
        done.wait()
        return {}


    def log_huge_line(state, ctx):
        ctx.log.info("z" * 20_000_000)
        return {}


    def return_huge_key(state, ctx):
        return {("k" * 10_000_000,): 1}


    def raise_huge_type(state, ctx):
        raise type("E" * 10_000_000, (Exception,), {})("boom")


    def pause_by_hand(state, ctx):
        return PauseRequest(object(), None, None, None, "continue")


    def whoami(state, ctx):
        return {"pid": os.getpid()}


    def fork_and_die(state, ctx):
        """A child that outlives this worker holds its stdout open; the worker dies."""
        written, write = os.pipe()
        if os.fork() == 0:
            if state["leave_group"]:
                os.setsid()
            with open(state["pidfile"], "w") as file:
                file.write(str(os.getpid()))
            os.close(write)
            signal.pause()
        os.close(write)
        os.read(written, 1)  # the pid is written (the test ends the fork that left the group)
        os._exit(5)


    def fork_and_keep(state, ctx):
        """A child that outlives the step and holds the worker's pipes."""
        pid = os.fork()
        if pid == 0:
            signal.pause()
        return {"child": pid}


    def return_generator(state, ctx):
        return (n for n in range(3))


    def return_awaitable(state, ctx):
        async def later():
            return {"awaited": True}

        return later()


    def close_stdout(state, ctx):
        sys.stdout.close()  # here the same object as sys.stderr: fd 2 closes too
        return {}


    def close_fds(state, ctx):
        os.close(1)
        os.close(2)
        return {}


    def move_cwd(state, ctx):
        os.chdir(state["to"])
        return {}


    def print_where(state, ctx):
        print("a line on stdout")
        print("a line on stderr", file=sys.stderr)
        return {"pid": os.getpid(), "cwd": os.getcwd()}


    class Unprintable:
        def __repr__(self):
            raise RuntimeError("no repr")


    class Unreadable(dict):
        def __iter__(self):
            raise RuntimeError("no iter")


    def return_unprintable_key(state, ctx):
        return {Unprintable(): 1}


    def return_unreadable_dict(state, ctx):
        return Unreadable(a=1)


    def close_all_fds_and_open_files(state, ctx):
        """Daemonizing code, clumsy: every fd from 3 up is closed; its files reuse them."""
        os.closerange(3, 1024)
        handoff["files"] = [open(f"{state['dir']}/file{n}", "w") for n in range(4)]
        return {}


    def block_forever(state, ctx):
        with open(state["pidfile"], "w") as file:
            file.write(str(os.getpid()))
        threading.Event().wait()


    def write_on_the_protocol_pipe(state, ctx):
        for fd in range(3, 10):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                    os.write(fd, b"this is not a message\\n")
        return {}


    def lower_a_limit(state, ctx):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, hard))
        return {"pid": os.getpid()}


    class OddStream:
        @property
        def closed(self):
            raise RuntimeError("no closed")

        def write(self, text):
            return len(text)


    def replace_stdout_with_an_odd_stream(state, ctx):
        sys.stdout = OddStream()
        return {"pid": os.getpid()}


    def step(state, ctx):
        return globals()[state["kind"]](state, ctx)


    workflow = Workflow(
        id="attack", pipelines={"go": [step], "in_thread": [Step(step, isolate=False)]}
    )
    '''
)


@contextlib.asynccontextmanager
async def runtime(
    tmp_path: Path, files: dict[str, str] | None = None, **workers: Any
) -> AsyncIterator[Runtime]:
    """A runtime that isolates the steps of `FLOW` and `files` (one worker unless told)."""
    folder = tmp_path / "flows"
    folder.mkdir()
    for name, text in {"attack.py": FLOW, **(files or {})}.items():
        (folder / name).write_text(text)
    settings = Workers(**{"max": 1, "warm": 0, **workers})
    async with Runtime(
        tmp_path / "journal.db", workflows_dir=folder, isolate=True, workers=settings
    ) as rt:
        yield rt


async def test_a_step_that_forks_and_returns_twice_does_not_answer_for_the_next_run(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        forked = await rt.invoke("attack", "go", {"kind": "fork_and_return"})
        assert forked.ok, forked.error
        # The copy the step forked must not serve: each later run gets its own answer.
        for n in range(3):
            result = await rt.invoke("attack", "go", {"kind": "echo", "n": n})
            assert result.state == {"echo": n}, result


async def test_a_line_logged_after_its_step_ended_never_lands_in_another_run(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        leaker = await rt.invoke("attack", "go", {"kind": "log_later"})
        assert leaker.ok, leaker.error
        victim = await rt.invoke("attack", "go", {"kind": "let_it_log"})
        assert victim.ok, victim.error
        messages = [entry.message or "" for entry in await rt.timeline(victim.run_id)]
        assert not [m for m in messages if leaker.run_id in m], messages


async def test_what_a_step_sends_back_too_big_for_a_message_fails_only_as_its_own_fault(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        logged = await rt.invoke("attack", "go", {"kind": "log_huge_line"})
        assert logged.ok, logged.error
        lines = [e.message or "" for e in await rt.timeline(logged.run_id) if e.source == "logger"]
        assert len(lines) == 1 and lines[0].startswith("z" * 1000), lines
        assert lines[0].endswith("more characters cut)")  # the journal keeps at most 64 Ki
        invalid = await rt.invoke("attack", "go", {"kind": "return_huge_key"})
        assert invalid.error_code == "INVALID_STATE", invalid.error
        raised = await rt.invoke("attack", "go", {"kind": "raise_huge_type"})
        assert raised.error_code == "STEP_FAILED", raised.error


async def test_a_pause_request_built_by_hand_wrong_fails_its_step_with_a_clear_error(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        result = await rt.invoke("attack", "go", {"kind": "pause_by_hand"})
        assert result.error_code == "STEP_FAILED", result.error
        assert "return ctx.pause(...) or ctx.sleep(...)" in (result.error or "")


async def test_a_worker_that_died_while_idle_does_not_fail_the_next_step(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        first = await rt.invoke("attack", "go", {"kind": "whoami"})
        pid = first.state["pid"]
        os.kill(pid, signal.SIGKILL)  # the OOM killer, say, picks the idle worker
        await eventually(lambda: pid not in rt._workers.pids(), what="the pool to see it die")
        second = await rt.invoke("attack", "go", {"kind": "whoami"})
        assert second.ok, second.error
        assert second.state["pid"] != pid


async def test_a_worker_that_died_idle_just_before_its_next_step_runs_it_in_another(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        first = await rt.invoke("attack", "go", {"kind": "whoami"})
        pid = first.state["pid"]
        os.kill(pid, signal.SIGKILL)  # and the next step comes before the pool saw it die
        second = await rt.invoke("attack", "go", {"kind": "whoami"})
        assert second.ok, second.error
        assert second.state["pid"] != pid


async def test_a_worker_that_dies_while_its_fork_holds_its_pipe_fails_its_step_at_once(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        for leave_group in (False, True):
            pidfile = tmp_path / f"grandchild-{leave_group}"
            data = {"kind": "fork_and_die", "leave_group": leave_group, "pidfile": str(pidfile)}
            try:
                async with asyncio.timeout(20):  # not until the fork exits: it never does
                    result = await rt.invoke("attack", "go", data)
            finally:
                if leave_group and pidfile.exists():  # out of the worker's group: ours to end
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pidfile.read_text()), signal.SIGKILL)
            assert result.error_code == "STEP_CRASHED", result.error
            assert "exited with code 5" in (result.error or "")


async def test_stopping_does_not_wait_for_a_process_a_step_left_holding_the_pipes(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        kept = await rt.invoke("attack", "go", {"kind": "fork_and_keep"})
        assert kept.ok, kept.error
        child = kept.state["child"]
        try:
            # The retired worker exits at once; its fork holds its pipes for ever.
            async with asyncio.timeout(_CLOSE_GRACE * 0.75):
                await rt.stop()
        finally:
            os.kill(child, signal.SIGKILL)  # a process the step left is not the pool's


PICKY = textwrap.dedent(
    """\
    import sys

    from orchestrator import Workflow

    if sys.argv[0].endswith("child.py"):  # in a worker process
        raise RuntimeError("this file does not load in a worker")


    def step(state):
        return state


    workflow = Workflow(id="picky", pipelines={"go": [step]})
    """
)


async def test_a_file_that_loads_in_the_daemon_but_not_in_a_worker_fails_its_step_clearly(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path, {"picky.py": PICKY}) as rt:
        for _ in range(2):  # the same worker, again: the same clear error
            result = await rt.invoke("picky", "go", {})
            assert result.error_code == "STEP_FAILED", result.error
            assert "this file does not load in a worker" in (result.error or ""), result.error


async def test_runs_waiting_for_a_worker_that_cannot_start_fail_instead_of_hanging(
    tmp_path: Path,
) -> None:
    # No worker starts within its time: every step that waited for one must fail too.
    async with runtime(tmp_path, max=2, start_timeout=0.001) as rt:
        async with asyncio.timeout(30):
            results = await asyncio.gather(
                *(rt.invoke("attack", "go", {"kind": "echo", "n": n}) for n in range(10))
            )
        for result in results:
            assert result.error_code == "STEP_CRASHED", result.error
            assert "did not start within" in (result.error or ""), result.error


async def test_what_a_sync_step_returns_is_taken_as_in_a_thread(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        generator = await rt.invoke("attack", "go", {"kind": "return_generator"})
        assert generator.error_code == "INVALID_STATE", generator.error
        assert "got generator" in (generator.error or ""), generator.error
        awaited = await rt.invoke("attack", "go", {"kind": "return_awaitable"})
        assert awaited.state == {"awaited": True}, awaited.error


async def test_a_step_that_breaks_its_worker_s_stdio_cwd_or_limits_does_not_break_the_next_run(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        before = await rt.invoke("attack", "go", {"kind": "print_where"})
        assert before.ok, before.error
        for kind in ("close_stdout", "close_fds", "move_cwd"):
            breaker = await rt.invoke("attack", "go", {"kind": kind, "to": str(tmp_path)})
            assert breaker.ok, breaker.error
            after = await rt.invoke("attack", "go", {"kind": "print_where"})
            assert after.ok, (kind, after.error)
            assert after.state["cwd"] == before.state["cwd"], kind
        odd = await rt.invoke("attack", "go", {"kind": "replace_stdout_with_an_odd_stream"})
        assert odd.ok, odd.error
        after = await rt.invoke("attack", "go", {"kind": "print_where"})
        assert after.ok and after.state["pid"] != odd.state["pid"], after.error
        limited = await rt.invoke("attack", "go", {"kind": "lower_a_limit"})
        after = await rt.invoke("attack", "go", {"kind": "print_where"})
        assert after.state["pid"] != limited.state["pid"], "a worker with lower limits"


BLOCKER = textwrap.dedent(
    """\
    import os
    import signal
    import threading

    from orchestrator import Workflow


    def block(state):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(state["pidfile"], "w") as file:
            file.write(str(os.getpid()))
        threading.Event().wait()


    workflow = Workflow(id="blocker", pipelines={"go": [block]})
    """
)


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie nobody reaped yet has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_worker_outlives_the_daemon_whatever_its_step_ignores(
    tmp_path: Path, sig: signal.Signals
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "blocker.py").write_text(BLOCKER)
    db, pidfile = tmp_path / "journal.db", tmp_path / "worker.pid"
    with Daemon(folder, db, "--grace", "1") as daemon:
        daemon.start()
        out = cli("invoke", "blocker", "go", json.dumps({"pidfile": str(pidfile)}), "--db", str(db))
        assert out.returncode == 0, out.stderr
        daemon.wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30, "the step")
        worker = int(pidfile.read_text())
        code = daemon.stop(sig, timeout=30)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), daemon.log()
    eventually_blocking(lambda: gone(worker), what=f"worker {worker} to exit", timeout=10)


@pytest.mark.parametrize("value", ["30", -1, 0, float("nan"), True, None])
def test_a_start_timeout_that_is_not_seconds_is_refused_where_it_is_given(value: Any) -> None:
    with pytest.raises(ValueError, match="start_timeout must be seconds > 0"):
        Workers(start_timeout=value)


@pytest.mark.parametrize("trigger", ["go", "in_thread"], ids=["isolated", "in a thread"])
async def test_a_state_that_cannot_even_be_read_is_an_invalid_state(
    tmp_path: Path, trigger: str
) -> None:
    async with runtime(tmp_path) as rt:
        for kind in ("return_unprintable_key", "return_unreadable_dict"):
            async with asyncio.timeout(20):
                result = await rt.invoke("attack", trigger, {"kind": kind})
            assert result.error_code == "INVALID_STATE", result.error
            assert "state could not be read: RuntimeError: no" in (result.error or "")


async def test_a_step_that_closes_the_worker_s_pipes_never_gets_messages_in_its_files(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path) as rt:
        data = {"kind": "close_all_fds_and_open_files", "dir": str(tmp_path)}
        result = await rt.invoke("attack", "go", data)
        assert result.error_code == "STEP_CRASHED", result.error
        assert "its step closed the pipes it speaks to the daemon on" in (result.error or "")
        assert [(tmp_path / f"file{n}").read_text() for n in range(4)] == [""] * 4
        after = await rt.invoke("attack", "go", {"kind": "echo", "n": 1})
        assert after.state == {"echo": 1}, after.error


async def test_many_runs_queued_for_two_workers_neither_deadlock_nor_outlive_their_abort(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path, max=2) as rt:
        pidfiles = [tmp_path / f"blocker{n}" for n in range(2)]
        blocked = [
            asyncio.create_task(
                rt.invoke("attack", "go", {"kind": "block_forever", "pidfile": str(path)})
            )
            for path in pidfiles
        ]
        await eventually(lambda: all(p.exists() for p in pidfiles), what="both workers busy")
        queued = [
            asyncio.create_task(rt.invoke("attack", "go", {"kind": "echo", "n": n}))
            for n in range(100)
        ]
        runs = await eventually(
            lambda: _runs_of(rt, 102), what="every run to be journaled", timeout=30
        )
        echoes = sorted((r for r in runs if r.state.get("kind") == "echo"), key=_n)
        for run in echoes[::2]:  # half of those waiting for a worker
            await rt.abort(run.run_id)
        for run in runs:
            if run.state.get("kind") == "block_forever":
                await rt.abort(run.run_id)
        async with asyncio.timeout(60):
            ends = await asyncio.gather(*blocked, *queued)
        statuses = [end.status for end in ends]
        assert statuses[:2] == ["aborted", "aborted"]
        for n, end in enumerate(ends[2:]):
            if n % 2:
                assert end.state == {"echo": n}, end.error
            else:
                assert end.status == "aborted", end.error
        assert len(rt._workers.pids()) <= 2


async def _runs_of(rt: Runtime, count: int) -> list[Any] | None:
    runs = await rt.list_all_runs()
    return runs if len(runs) == count else None


def _n(run: Any) -> int:
    return int(run.state["n"])


async def test_a_step_that_writes_on_the_worker_s_pipe_is_told_so(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        result = await rt.invoke("attack", "go", {"kind": "write_on_the_protocol_pipe"})
        assert result.error_code == "STEP_CRASHED", result.error
        assert "sent what is not a message" in (result.error or ""), result.error
        after = await rt.invoke("attack", "go", {"kind": "echo", "n": 2})
        assert after.state == {"echo": 2}, after.error


async def test_a_warm_worker_that_died_before_its_first_step_fails_no_step(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path, warm=1) as rt:
        idle = await eventually(lambda: list(rt._workers._idle), what="the warm worker, idle")
        pids = [worker.pid for worker in idle]
        os.kill(pids[0], signal.SIGKILL)
        result = await rt.invoke("attack", "go", {"kind": "whoami"})
        assert result.ok, result.error
        assert result.state["pid"] != pids[0]


def test_a_worker_whose_daemon_is_gone_exits_without_a_traceback() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.engine.workers.child", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert worker.stdout is not None and worker.stderr is not None
    worker.stdout.close()  # as a daemon killed before the worker said it is ready
    try:
        code = worker.wait(timeout=30)
        errors = worker.stderr.read().decode()
    finally:
        reap(worker)
        worker.stderr.close()
        if worker.stdin is not None:
            worker.stdin.close()
    assert "Traceback" not in errors, errors
    assert code == wire.EXIT_PIPES_LOST, errors

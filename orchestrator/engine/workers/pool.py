"""The warm worker processes of isolated steps, on the daemon's side.

A step borrows a worker, sends it the state, relays its ``ctx.log`` lines to the run's
timeline and takes back the new state. A worker that dies (an exit, a signal, a segfault,
its memory limit) fails that step with `WorkerCrashed`, at once even if a process it
forked holds its pipes; one that died idle (before it accepted a step) fails no step;
one whose step is given up (its timeout, an abort, shutdown) is killed with everything
it started, so a timeout is real. Healthy workers go back to the pool until they have
run `Workers.recycle_after_steps` steps, grown past `Workers.recycle_above_mb`, or been
left unfit by a step (its stdio or working directory changed); new ones start on
demand, up to `Workers.max`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ...define.outbox import Outbox
from ...errors import RemoteError, describe_exception
from ...state import EncodedState, Unencodable
from ..context import StepContext
from . import wire

_HEADER_LIMIT = 8 * 1024 * 1024  # a message header line: logs and tracebacks are capped below
_CLOSE_GRACE = 2.0  # seconds a retired worker has to exit before it is killed
_MB = 1024 * 1024
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_RELAY_CHUNK = 64 * 1024
_RELAY_LINE = 4096  # characters of one line of a worker's output that reach the log
_log = logging.getLogger("orchestrator.workers")
_output = logging.getLogger("orchestrator.workers.output")


def _default_max() -> int:
    # Isolated steps mostly wait (I/O, subprocesses): a worker per core would leave the
    # cores idle. 16 on 2 cores keeps 100 runs of 1 ms blocking I/O within 2x of threads.
    return max(16, 2 * (os.cpu_count() or 1))


@dataclass(frozen=True)
class Workers:
    """How a runtime keeps the worker processes of its isolated steps.

    Attributes:
        max: Worker processes at most; as many isolated steps run at once, the others
            wait for a worker. Defaults to twice the cores, at least 16.
        warm: Workers started with the runtime (when any step may be isolated), and
            kept however long they are idle.
        memory_limit_mb: A worker's data memory limit (``RLIMIT_DATA``): a step that
            allocates past it fails with ``STEP_CRASHED``. ``None``: no limit.
        recycle_after_steps: A worker is replaced after this many steps.
        recycle_above_mb: A worker whose resident memory grew past this is replaced.
        idle_seconds: A worker beyond `warm` idle this long exits (after a burst).
        start_timeout: Seconds a new worker has to start.
    """

    max: int = field(default_factory=_default_max)
    warm: int = 1
    memory_limit_mb: int | None = 2048
    recycle_after_steps: int = 10_000
    recycle_above_mb: int = 512
    idle_seconds: float = 60.0
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max", "recycle_after_steps", "recycle_above_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Workers {name} must be an int >= 1, got {value!r}")
        if isinstance(self.warm, bool) or not isinstance(self.warm, int) or self.warm < 0:
            raise ValueError(f"Workers warm must be an int >= 0, got {self.warm!r}")
        for name in ("idle_seconds", "start_timeout"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
                raise ValueError(f"Workers {name} must be seconds > 0, got {seconds!r}")
        limit = self.memory_limit_mb
        bad = isinstance(limit, bool) or not isinstance(limit, int) or limit < 64
        if limit is not None and bad:
            raise ValueError(f"Workers memory_limit_mb must be an int >= 64 or None, got {limit!r}")


class WorkerCrashed(Exception):
    """The worker process running a step died, or could not start: the step's failure."""


class _DiedIdle(WorkerCrashed):
    """A worker died before it took the step: it died idle, the step never began."""


@dataclass(frozen=True, eq=False)
class StepRef:
    """How a worker finds one step: what to load, and the step within it."""

    ref: dict[str, Any]
    load: dict[str, Any]
    takes_ctx: bool
    is_async: bool
    env_key: str
    env: dict[str, str]
    # `env` lies under the workflow's own env, which the worker takes from the file it
    # loads (a daemon serving another daemon's steps knows only its own runtime env).
    layered: bool = False

    @property
    def key(self) -> str:
        """The loaded module's key: one file version, or one module."""
        return str(self.ref["key"])


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Tells when the process exits, which `Process.wait` does not.

    On Python 3.11 `Process.wait` waits for the pipes to close too, and a process a step
    forked may hold them open for ever.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class _Process:
    """One worker process and what it has loaded."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        transport: asyncio.SubprocessTransport,
        exited: asyncio.Event,
        settings: Workers,
        on_idle_exit: Callable[[_Process], None],
    ) -> None:
        self.proc = proc
        self.transport = transport
        self.exited = exited  # set once the process has exited
        self._settings = settings
        self.loaded: set[str] = set()
        self.envs: set[str] = set()
        self.steps = 0
        self.rss = 0
        self.idle_since = 0.0  # time.monotonic() when it last went idle
        self.garbled = False  # it sent what is not a message: killed for it
        self.spent = False  # a step left it unfit for other steps (its stdio, its cwd)
        self.busy = False  # running a step
        self.reused = False  # back from the pool's idle workers (or warm) at least once
        self._eof = asyncio.Event()  # its stdout ended
        self.watcher = asyncio.get_running_loop().create_task(
            self._watch(on_idle_exit), name=f"worker-{proc.pid}"
        )

    async def _watch(self, on_idle_exit: Callable[[_Process], None]) -> None:
        """Once the process exits: drop it if idle; if busy, make sure its step sees it."""
        await self.exited.wait()
        if self.busy:
            # What its step started (a fork) may hold its stdout open: the end of the
            # step must not wait for theirs. Those that left its process group are waited
            # for a moment, then no longer.
            self.kill()
            try:
                async with asyncio.timeout(_CLOSE_GRACE):
                    await self._eof.wait()
            except TimeoutError:
                if self.proc.stdout is not None:
                    self.proc.stdout.feed_eof()
        else:
            on_idle_exit(self)  # a worker that died idle must not fail the next step
        self.transport.close()  # our ends of the pipes, which its forks may still hold

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def worn(self) -> bool:
        settings = self._settings
        return (
            self.spent
            or self.steps >= settings.recycle_after_steps
            or self.rss > settings.recycle_above_mb * _MB
        )

    async def ready(self) -> None:
        header = await self._read()
        if header is None or "ready" not in header:
            raise WorkerCrashed(f"a worker process could not start: {await self._death()}")

    async def run(self, step: StepRef, state_text: str, ctx: StepContext | None) -> object:
        self.busy = True
        try:
            return await self._run(step, state_text, ctx)
        finally:
            self.busy = False

    async def _run(self, step: StepRef, state_text: str, ctx: StepContext | None) -> object:
        header: dict[str, Any] = {
            "ref": step.ref,
            "takes_ctx": step.takes_ctx,
            "is_async": step.is_async,
            "ctx": None if ctx is None else {**context_spec(ctx), "env_key": step.env_key},
        }
        if step.key not in self.loaded:
            header["load"] = step.load
        if ctx is not None and step.env_key not in self.envs:
            header["env"] = step.env
            if step.layered:
                header["layered"] = True
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(wire.frame(header, state_text))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise self._crashed(await self._death(), accepted=False) from None
        if ctx is not None:
            self.envs.add(step.env_key)
        return await self._outcome(step, ctx)

    async def _outcome(self, step: StepRef, ctx: StepContext | None) -> object:
        accepted = False
        while True:
            reply = await self._read()
            if reply is None:
                raise self._crashed(await self._death(), accepted=accepted)
            if "accepted" in reply:
                accepted = True
                continue
            if "log" in reply:
                if ctx is not None:
                    ctx.log.line(str(reply["log"]), str(reply.get("text", "")))
                continue
            self.steps += 1
            self.rss = int(reply.get("rss", 0))
            self.spent = bool(reply.get("spent"))
            self.loaded.add(step.key)  # it keeps how to load it, told once
            if ctx is not None and "outbox" in reply:
                ctx.outbox = Outbox.from_json(reply["outbox"])
            return await self._result(reply)

    def _crashed(self, death: str, *, accepted: bool) -> WorkerCrashed:
        # A worker that waited idle (warm, or after steps) and died before it took this
        # one died idle (the OOM killer, a thread a step left): the step can run in
        # another worker. One started for this step is not tried again (it may never start).
        died_idle = not accepted and self.reused
        return (_DiedIdle if died_idle else WorkerCrashed)(f"its worker process {death}")

    async def _result(self, reply: dict[str, Any]) -> object:
        if "ok" in reply:
            return EncodedState(await self._payload(reply))
        if "pause" in reply:
            return wire.pause_from_json(reply["pause"])
        if "invalid" in reply:
            return Unencodable(str(reply["invalid"]))
        raised = RemoteError(
            str(reply.get("raised")), str(reply.get("message", "")), str(reply.get("traceback"))
        )
        if reply.get("memory"):
            limit = self._settings.memory_limit_mb
            what = describe_exception(raised)
            raise WorkerCrashed(
                f"its worker process reached its memory limit ({limit} MiB): {what}"
            ) from raised
        raise raised

    async def _read(self) -> dict[str, Any] | None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            line = await stdout.readline()
            if not line:
                self._eof.set()
                return None
            return wire.parse_header(line)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            _log.error("worker %d sent what is not a message (%s): retiring it", self.pid, exc)
            self.garbled = True
            self.kill()
            return None

    async def _payload(self, reply: dict[str, Any]) -> str:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            return (await stdout.readexactly(int(reply["size"]))).decode("utf-8")
        except (asyncio.IncompleteReadError, UnicodeDecodeError, KeyError, ValueError):
            raise WorkerCrashed(f"its worker process {await self._death()}") from None

    async def _death(self) -> str:
        """How the process ended, once it has (killed if it has not within a moment)."""
        await self.wait_exit()
        code = self.proc.returncode
        assert code is not None
        if self.garbled:
            return f"(pid {self.pid}) sent what is not a message (did its step write on its pipe?)"
        return describe_exit(code, self.pid)

    async def wait_exit(self) -> None:
        """Until the process has exited; killed if it has not within a moment."""
        try:
            async with asyncio.timeout(_CLOSE_GRACE):
                await self.exited.wait()
        except TimeoutError:
            self.kill()
            await self.exited.wait()

    def kill(self) -> None:
        """Kill the worker and whatever its step started (its own process group)."""
        # Also once the worker itself has died: what its step started may live on. Its
        # process group keeps its id while any of them does (killpg finds none otherwise).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def retire(self) -> None:
        """Ask an idle worker to exit: it does when its stdin closes."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()


def describe_exit(code: int, pid: int) -> str:
    """``died (pid N): exit code 1`` / ``killed by signal SIGSEGV (11)``, with a hint."""
    if code == wire.EXIT_OUT_OF_MEMORY:
        return f"(pid {pid}) ran out of memory and exited"
    if code == wire.EXIT_PIPES_LOST:
        return f"(pid {pid}) exited: its step closed the pipes it speaks to the daemon on"
    if code >= 0:
        return f"(pid {pid}) exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = ""
    if -code == signal.SIGKILL:
        hint = " (the OOM killer, or kill -9)"
    elif -code == signal.SIGSEGV:
        hint = " (a segmentation fault)"
    return f"(pid {pid}) was killed by {name} ({-code}){hint}"


def context_spec(ctx: StepContext) -> dict[str, Any]:
    """What a worker needs of a step's ctx to make its own (its env aside)."""
    return {
        "run_id": ctx.run_id,
        "workflow_id": ctx.workflow_id,
        "trigger_id": ctx.trigger_id,
        "step_name": ctx.step_name,
        "step_index": ctx.step_index,
        "attempt": ctx.attempt,
    }


class StepRunner(Protocol):
    """What runs one attempt of an isolated step: a `WorkerPool`, or a `SpreadPool`."""

    async def call(
        self, step: StepRef, state_text: str, ctx: StepContext | None, time_limit: float | None
    ) -> object:
        """The new state (encoded) or a pause; raises as `WorkerPool.call` does."""


class WorkerPool:
    """Worker processes lent to isolated steps, one step at a time each."""

    def __init__(self, settings: Workers) -> None:
        self.settings = settings
        self._idle: list[_Process] = []
        self._live: set[_Process] = set()
        self._starting = 0
        self._waiters: collections.deque[asyncio.Future[_Process | None]] = collections.deque()
        # Retired workers until their exit is seen (`close` waits for those left).
        self._reaping: set[_Process] = set()
        # The tasks that log what each worker writes to stderr, until it exits.
        self._relays: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def size(self) -> int:
        """Worker processes alive or starting."""
        return len(self._live) + self._starting

    def pids(self) -> list[int]:
        """The pids of the live workers."""
        return sorted(worker.pid for worker in self._live)

    async def warm(self) -> None:
        """Start `Workers.warm` workers ahead of the first isolated step."""
        wanted = min(self.settings.warm, self.settings.max) - self.size
        results = await asyncio.gather(
            *(self._start() for _ in range(max(0, wanted))), return_exceptions=True
        )
        for result in results:
            if isinstance(result, _Process):
                self._release(result, healthy=True)
            elif isinstance(result, WorkerCrashed):
                _log.error("a warm worker did not start: %s", result)

    async def call(
        self, step: StepRef, state_text: str, ctx: StepContext | None, time_limit: float | None
    ) -> object:
        """Run one attempt of `step` in a worker: the new state (encoded) or a pause.

        Raises:
            RemoteError: The step raised.
            WorkerCrashed: Its worker died, or none could start.
            TimeoutError: The step ran for `time_limit` seconds (its worker is killed);
                waiting for a worker does not count.
        """
        while True:
            worker = await self._acquire(step.key)
            healthy = False
            try:
                async with asyncio.timeout(time_limit):
                    result = await worker.run(step, state_text, ctx)
                healthy = True
                return result
            except _DiedIdle as died:
                _log.warning(
                    "worker %d died idle (%s): its next step runs in another", worker.pid, died
                )
            except RemoteError:
                healthy = True
                raise
            finally:
                self._release(worker, healthy=healthy)

    async def _acquire(self, key: str) -> _Process:
        while True:
            if self._closed:
                raise WorkerCrashed("the runtime is stopping: no worker process to run it")
            if self._idle:
                # One that died idle and is not dropped yet is `_DiedIdle`: `call` tries again.
                return self._take_idle(key)
            if self.size < self.settings.max:
                return await self._start()
            waiter: asyncio.Future[_Process | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                worker = await waiter
            except asyncio.CancelledError:
                handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed is not None:
                    self._release(handed, healthy=True)  # handed over as we left
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
            if worker is not None:
                return worker

    def _take_idle(self, key: str) -> _Process:
        for index in range(len(self._idle) - 1, -1, -1):
            if key in self._idle[index].loaded:
                return self._idle.pop(index)
        return self._idle.pop()

    async def _start(self) -> _Process:
        self._starting += 1
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(_HEADER_LIMIT, loop),
                *self._command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a timeout kills what the step started too
                env=_child_env(),
            )
        except BaseException as exc:  # it could not start, or its step was given up meanwhile
            self._starting -= 1
            self._wake(None)  # a step waiting for a worker tries to start one in its place
            if isinstance(exc, OSError):
                raise WorkerCrashed(f"a worker process could not start: {exc}") from None
            raise
        proc = asyncio.subprocess.Process(transport, protocol, loop)
        worker = _Process(proc, transport, protocol.exited, self.settings, self._exited_idle)
        self._live.add(worker)
        self._starting -= 1
        relay = asyncio.get_running_loop().create_task(_relay_output(proc), name="worker-stderr")
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        try:
            async with asyncio.timeout(self.settings.start_timeout):
                await worker.ready()
        except BaseException as exc:
            self._discard(worker)
            self._wake(None)  # a step waiting for a worker tries to start one in its place
            if isinstance(exc, TimeoutError):
                raise WorkerCrashed(
                    f"a worker process did not start within {self.settings.start_timeout:g} s"
                ) from None
            raise
        return worker

    def _command(self) -> list[str]:
        limit = self.settings.memory_limit_mb
        command = [sys.executable, "-m", "orchestrator.engine.workers.child", str(os.getpid())]
        return command if limit is None else [*command, str(limit)]

    def _release(self, worker: _Process, *, healthy: bool) -> None:
        if not healthy or worker.worn or self._closed or worker.proc.returncode is not None:
            self._discard(worker, kill=not healthy)
            self._wake(None)  # a waiter may start one in its place
            return
        worker.reused = True
        if not self._wake(worker):
            worker.idle_since = time.monotonic()
            self._idle.append(worker)

    async def tend(self) -> None:
        """Retire, for ever (cancel to stop), workers beyond `warm` idle too long."""
        settings = self.settings
        while True:
            await asyncio.sleep(min(10.0, settings.idle_seconds / 2))
            expired = time.monotonic() - settings.idle_seconds
            # The oldest idle worker is first: `_take_idle` takes the most recent one.
            while self._idle and len(self._live) > settings.warm:
                if self._idle[0].idle_since > expired:
                    break
                self._discard(self._idle.pop(0), kill=False)

    def _wake(self, worker: _Process | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return True
        return False

    def _exited_idle(self, worker: _Process) -> None:
        if worker in self._idle:
            self._idle.remove(worker)
            self._live.discard(worker)

    def _discard(self, worker: _Process, *, kill: bool = True) -> None:
        self._live.discard(worker)
        if kill:
            worker.kill()
        else:
            worker.retire()
        self._reaping = {w for w in self._reaping if w.proc.returncode is None}
        self._reaping.add(worker)

    async def close(self) -> None:
        """Stop every worker: idle ones exit, busy ones are killed; wait for all."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        for worker in list(self._live):
            self._discard(worker, kill=worker not in self._idle)
        self._idle.clear()
        for worker in list(self._reaping):
            await worker.wait_exit()
            worker.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.watcher
            worker.transport.close()
        self._reaping.clear()
        if self._relays:
            await asyncio.wait(self._relays, timeout=_CLOSE_GRACE)
        for relay in self._relays:
            relay.cancel()


async def _relay_output(proc: asyncio.subprocess.Process) -> None:
    """Log what a worker writes to stderr (what step code prints).

    So the daemon's log keeps it, and a dashboard on the terminal is not overwritten.
    """
    stream = proc.stderr
    assert stream is not None
    pending = b""
    while chunk := await stream.read(_RELAY_CHUNK):
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > _RELAY_LINE:  # a line without end: cut it
            lines, pending = [*lines, pending], b""
        for line in lines:
            text = line[:_RELAY_LINE].decode("utf-8", "replace").rstrip()
            _output.info("[worker %d] %s", proc.pid, text)
    if pending:
        _output.info("[worker %d] %s", proc.pid, pending.decode("utf-8", "replace").rstrip())


def _child_env() -> dict[str, str]:
    """The daemon's environment, with this package importable whatever the cwd."""
    env = dict(os.environ)
    paths = [_PACKAGE_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env

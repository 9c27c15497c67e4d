"""What a step sees as ``ctx``: who it is, a durable logger, and its idempotency key."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..clock import Clock, new_id
from ..define.env import Env
from ..define.outbox import (
    Emit,
    Outbox,
    Start,
    checked_data,
    checked_key,
    checked_name,
    keyed_id,
)
from ..define.services import ServiceScope
from ..define.waits import (
    PauseRequest,
    PauseService,
    Wait,
    join_request,
    pause_request,
    sleep_request,
)
from ..errors import JournalError, RuntimeNotStarted, describe_exception
from ..journal import JournalWriter, ops

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class StepLogger(abc.ABC):
    """``ctx.log``: like a `logging.Logger`; where its lines go is the subclass's `line`."""

    def debug(self, msg: str, *args: object) -> None:
        """Log at DEBUG."""
        self.line("debug", _format(msg, args))

    def info(self, msg: str, *args: object) -> None:
        """Log at INFO."""
        self.line("info", _format(msg, args))

    def warning(self, msg: str, *args: object) -> None:
        """Log at WARNING."""
        self.line("warning", _format(msg, args))

    def error(self, msg: str, *args: object) -> None:
        """Log at ERROR."""
        self.line("error", _format(msg, args))

    def exception(self, msg: str, *args: object) -> None:
        """Log at ERROR with the exception being handled."""
        exc = sys.exc_info()[1]
        suffix = f": {describe_exception(exc)}" if exc is not None else ""
        self.line("error", _format(msg, args) + suffix)

    @abc.abstractmethod
    def line(self, level: str, text: str) -> None:
        """Record one formatted line at `level` (``debug``, ``info``, ``warning``, ``error``)."""


class RunLogger(StepLogger):
    """The runtime's ``ctx.log``: every line lands in the run's timeline.

    Safe to call from a sync step running in a worker thread.
    """

    def __init__(
        self,
        *,
        writer: JournalWriter,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        row: int,
        position: int,
        step: str,
        logger: logging.Logger,
        redact: Callable[[str], str] = str,
        loop_thread: int | None = None,
    ) -> None:
        self._writer, self._clock, self._loop = writer, clock, loop
        # The event loop's thread (None: this one): lines from others are handed to it.
        self._loop_thread = threading.get_ident() if loop_thread is None else loop_thread
        self._row, self._position, self._step = row, position, step
        self._logger = logger
        self._redact = redact

    def line(self, level: str, text: str) -> None:
        """Journal one line in the run's timeline (secrets redacted) and log it."""
        if level not in _LEVELS:
            level = "info"
        text = self._redact(text)
        self._logger.log(_LEVELS[level], "[%s] %s", self._step, text)
        op = ops.add_timeline(
            self._row,
            self._clock.now_us(),
            "logger",
            level,
            position=self._position,
            step=self._step,
            message=text,
        )
        if threading.get_ident() == self._loop_thread:
            self._submit(op)
        else:
            self._loop.call_soon_threadsafe(self._submit, op)

    def _submit(self, op: ops.Op) -> None:
        # A log line must never fail the step; a dead writer fails the run elsewhere.
        with contextlib.suppress(JournalError):
            self._writer.submit([op])


def _format(msg: str, args: tuple[object, ...]) -> str:
    if not args:
        return str(msg)
    try:
        return str(msg) % args
    except (TypeError, ValueError):
        return " ".join([str(msg), *map(str, args)])


class StepContext:
    """The ``ctx`` passed to ``(state, ctx)`` steps run by the runtime.

    Attributes:
        run_id: The run's id.
        workflow_id: Its workflow.
        trigger_id: The trigger that started it.
        step_name: This step's name.
        step_index: This step's index in the pipeline.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        idempotency_key: Stable across every re-execution of this step of this run
            (retries and recovery after a crash): pass it to external systems to
            de-duplicate effects.
        log: A logger whose lines land in the run's timeline.
        env: Read-only settings: the workflow's env, then the runtime's (``ctx.env.get``).
        outbox: What this attempt of the step started and emitted (`start`, `emit`),
            journaled with its checkpoint.
    """

    def __init__(
        self,
        *,
        run_id: str,
        workflow_id: str,
        trigger_id: str,
        step_name: str,
        step_index: int,
        attempt: int,
        log: StepLogger | Callable[[], StepLogger],
        pause_service: PauseService | None = None,
        env: Env | None = None,
        scope: Callable[[], ServiceScope] | None = None,
        keyed: Callable[[str, str], str | None] | None = None,
    ) -> None:
        # Made on first use: most steps neither start, emit nor log.
        self._outbox: Outbox | None = None
        # What a key of a kind ("invoke", "emit") made first, if this process can tell.
        self._keyed = keyed
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.trigger_id = trigger_id
        self.step_name = step_name
        self.step_index = step_index
        self.attempt = attempt
        self.idempotency_key = f"{run_id}:{step_name}"
        # The logger, or what makes it on first use.
        self._log = log
        self._pause_service = pause_service
        self.env = env if env is not None else Env()
        self._scope = scope

    @property
    def log(self) -> StepLogger:
        """A logger whose lines land in the run's timeline."""
        log = self._log
        if not isinstance(log, StepLogger):
            log = self._log = log()
        return log

    @property
    def outbox(self) -> Outbox:
        """What this attempt of the step started and emitted, journaled with its checkpoint."""
        if self._outbox is None:
            self._outbox = Outbox()
        return self._outbox

    @outbox.setter
    def outbox(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def sent(self) -> Outbox | None:
        """The outbox if the step started or emitted anything (None: it did not)."""
        return self._outbox if self._outbox else None

    async def use(self, service_id: str) -> Any:
        """The instance of a service, by id: run, workflow or runtime (global) scope.

        The reserved ids ``__pause_service__`` and ``__env__`` give `pause_service` and `env`.
        """
        if service_id == "__pause_service__":
            return self.pause_service
        if service_id == "__env__":
            return self.env
        return await self._service_scope().get(service_id)

    def on_cleanup(self, fn: Callable[[], Any]) -> None:
        """Call `fn` (sync or async) once when this run's service scope ends."""
        self._service_scope().add_cleanup(fn)

    def _service_scope(self) -> ServiceScope:
        if self._scope is None:
            raise RuntimeNotStarted("this step runs without a runtime: services are not available")
        return self._scope()

    @property
    def pause_service(self) -> PauseService:
        """Register waits before pausing, so matching events that arrive meanwhile are kept."""
        if self._pause_service is None:
            raise RuntimeNotStarted("this step runs without a runtime: pausing is not available")
        return self._pause_service

    def pause(
        self,
        event: str | None = None,
        *,
        where: Any = None,
        into: str | None = None,
        timeout: float | None = None,
        on_timeout: str = "continue",
        wait: Wait | None = None,
    ) -> PauseRequest:
        """Return this from the step to park the run until a matching event arrives.

        Args:
            event: The event type to wait for (or pass `wait` from the pause service).
            where: Conditions on the event's data, ANDed.
            into: The state key that receives the event's data when the run resumes.
            timeout: Seconds to wait at most; ``None`` waits for ever.
            on_timeout: ``"continue"`` (with ``state[into] = None``) or ``"fail"``.
            wait: A wait registered earlier with ``ctx.pause_service.register``.
        """
        label = f"run {self.run_id} step {self.step_name!r}: ctx.pause"
        return pause_request(
            event=event,
            where=where,
            into=into,
            timeout=timeout,
            on_timeout=on_timeout,
            wait=wait,
            label=label,
        )

    def start(self, workflow: str, trigger: str, data: Any = None, key: str | None = None) -> str:
        """Start a child run of `workflow`'s `trigger` with `data`; returns its run id at once.

        The run is started once the step completes: its start commits with the step's
        checkpoint (exactly once per completed step; never for a failed attempt). It runs
        under its own workflow's mode. With `key`, a run started under that key before (by
        any process) is not started again.
        """
        label = f"run {self.run_id} step {self.step_name!r}: ctx.start"
        workflow = checked_name(workflow, "the workflow id", label)
        trigger = checked_name(trigger, "the trigger id", label)
        payload = checked_data(data, label)
        checked = checked_key(key, label)
        first = self._first("invoke", checked)
        if first is not None:  # started under this key before: nothing new
            return first
        run_id = keyed_id("invoke", checked) if checked is not None else new_id()
        self.outbox.starts.append(Start(run_id, workflow, trigger, payload, checked))
        return run_id

    def emit(self, type: str, data: Any = None, key: str | None = None) -> str:
        """Emit an event once the step completes (with its checkpoint); returns its id."""
        label = f"run {self.run_id} step {self.step_name!r}: ctx.emit"
        event_type = checked_name(type, "the event type", label)
        payload = checked_data(data, label)
        checked = checked_key(key, label)
        first = self._first("emit", checked)
        if first is not None:  # emitted under this key before: nothing new
            return first
        event_id = keyed_id("emit", checked) if checked is not None else new_id()
        self.outbox.emits.append(Emit(event_id, event_type, payload, checked))
        return event_id

    def _first(self, kind: str, key: str | None) -> str | None:
        if key is None:
            return None
        for item in self.outbox.starts if kind == "invoke" else self.outbox.emits:
            if item.key == key:
                return item.run_id if isinstance(item, Start) else item.event_id
        return self._keyed(kind, key) if self._keyed is not None else None

    def join(
        self,
        run_ids: Any,
        *,
        into: str,
        timeout: float | None = None,
        on_timeout: str = "continue",
    ) -> PauseRequest:
        """Return this from the step to park the run until every run of `run_ids` is final.

        Then ``state[into]`` is a list, in the order of `run_ids`, of ``{"run_id",
        "status", "state", "error", "error_code"}``. A timeout works like `pause`'s:
        ``"continue"`` (with ``state[into] = None``) or ``"fail"``.
        """
        label = f"run {self.run_id} step {self.step_name!r}: ctx.join"
        return join_request(run_ids, into=into, timeout=timeout, on_timeout=on_timeout, label=label)

    def sleep(self, seconds: float) -> PauseRequest:
        """Return this from the step to park the run for `seconds` (a durable timer)."""
        return sleep_request(seconds, label=f"run {self.run_id} step {self.step_name!r}: ctx.sleep")

    def __repr__(self) -> str:
        return (
            f"StepContext(run_id={self.run_id!r}, step={self.step_name!r}, attempt={self.attempt})"
        )

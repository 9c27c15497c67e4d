"""Workflow definitions: frozen data checked when it is built, with no I/O.

What a user writes in a workflow file (`Workflow`, `Step`) lives here; how it runs lives in
the executor and the pipeline runner.
"""

from __future__ import annotations

import inspect
import math
import os
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DefinitionError
from ..records import EventSource, id_problem
from . import schedules
from .conditions import Conditions
from .modes import Mode
from .services import Service, check_graph

StepFn = Callable[..., Any]


@dataclass(frozen=True)
class Step:
    """A step with policy.

    Attributes:
        fn: ``fn(state)`` or ``fn(state, ctx)``, sync or async, returning the new state.
        retries: Further attempts after a failure (0 means one attempt in all).
        backoff: Seconds before the first retry; doubled before each later one.
        timeout: Seconds one attempt may take; ``None`` for no limit.
        name: The step's name; defaults to the function's ``__name__``.
        inline: Run a sync step on the event loop instead of a worker thread. Only for
            cheap transforms: a blocking inline step freezes the whole runtime.
        isolate: Run the step in a worker process (sync or async): whatever it does to
            its process (``os._exit``, a segfault, a memory bomb, a hang past its timeout)
            fails the step with ``STEP_CRASHED`` or ``STEP_TIMEOUT``, never the runtime.
            ``None`` follows the workflow's ``isolate``, then the folder's and runtime's.
    """

    fn: StepFn
    retries: int = 0
    backoff: float = 0.0
    timeout: float | None = None
    name: str | None = None
    inline: bool = False
    isolate: bool | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise DefinitionError(f"Step needs a callable, got {self.fn!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise DefinitionError(f"Step retries must be an int >= 0, got {self.retries!r}")
        if not _is_number(self.backoff) or self.backoff < 0:
            raise DefinitionError(f"Step backoff must be seconds >= 0, got {self.backoff!r}")
        if self.timeout is not None and (not _is_number(self.timeout) or self.timeout <= 0):
            raise DefinitionError(f"Step timeout must be seconds > 0, got {self.timeout!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise DefinitionError(f"Step name must be a non-empty string, got {self.name!r}")
        if self.name is not None and not _is_plain_text(self.name):
            raise DefinitionError(
                f"Step name must be text a journal can keep (no NUL, no lone surrogate), "
                f"got {self.name!r}"
            )
        if self.isolate is not None and not isinstance(self.isolate, bool):
            raise DefinitionError(f"Step isolate must be True, False or None, got {self.isolate!r}")
        if self.isolate and self.inline:
            raise DefinitionError(
                "Step cannot be both inline (on the event loop) and isolate (in a worker "
                "process): choose one"
            )


@dataclass(frozen=True)
class BoundStep:
    """A step resolved for execution: its unique name and how to call it."""

    step: Step
    name: str
    index: int
    takes_ctx: bool
    is_async: bool


def _is_number(value: object) -> bool:
    """A finite number of seconds (NaN slipped past every comparison: no retry, no limit)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value)


def _is_plain_text(text: str) -> bool:
    """Whether `text` holds no NUL (PostgreSQL's text cannot) and no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bind_pipeline(pipeline: object, *, where: str = "pipeline") -> list[BoundStep]:
    """Resolve a pipeline's operations to named steps; repeated names get ``#2``, ``#3``."""
    if isinstance(pipeline, str | bytes) or not isinstance(pipeline, Sequence):
        raise DefinitionError(f"{where} must be a list of steps, got {type(pipeline).__name__}")
    bound: list[BoundStep] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(pipeline):
        step = item if isinstance(item, Step) else _as_step(item, where, index)
        base = step.name or getattr(step.fn, "__name__", None) or type(step.fn).__name__
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}#{seen[base]}"
        bound.append(
            BoundStep(step, name, index, _takes_ctx(step.fn, where, name), _is_async(step.fn))
        )
    return bound


def _as_step(item: object, where: str, index: int) -> Step:
    if not callable(item):
        raise DefinitionError(f"{where}[{index}] is not callable: {item!r}")
    return Step(item)


# A plain function's positional parameters (None: no signature; -1: it takes *args), found
# once: a file that defines 10,000 workflows sharing a step would otherwise read its
# signature 10,000 times.
_POSITIONAL: weakref.WeakKeyDictionary[types.FunctionType, int | None] = weakref.WeakKeyDictionary()


def _takes_ctx(fn: StepFn, where: str, name: str) -> bool:
    if isinstance(fn, types.FunctionType):
        if fn not in _POSITIONAL:
            _POSITIONAL[fn] = _positional(fn)
        positional = _POSITIONAL[fn]
    else:
        positional = _positional(fn)
    if positional is None:
        return False
    if positional < 0:
        return True
    if not positional:
        raise DefinitionError(f"{where}: step {name!r} must accept (state) or (state, ctx)")
    return positional >= 2


def _positional(fn: StepFn) -> int | None:
    """How many positional parameters `fn` takes; -1 with ``*args``; None if unknown."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return -1
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])


def _is_async(fn: StepFn) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


@dataclass(frozen=True)
class Trigger:
    """Start a run when an event of type `event` whose data matches `where` arrives.

    The run's state starts as a copy of the event's data. `where` ANDs conditions
    ``{"total": (">", 0), "customer.tier": ("==", "gold")}`` (see `conditions`). `source`
    limits it to events from one source or several (``"cli"``, ``"api"``, ``"dashboard"``,
    ``"file"``, ``"schedule"``, ``"system"``: see `EventSource`); None takes any.
    """

    event: str
    where: Mapping[str, Any] | None = None
    source: str | Sequence[str] | None = None
    conditions: Conditions = field(init=False, repr=False, compare=False)
    sources: frozenset[EventSource] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event.strip():
            raise DefinitionError(
                f"Trigger needs an event type (a non-empty string), got {self.event!r}"
            )
        label = f"Trigger(event={self.event!r})"
        object.__setattr__(self, "conditions", Conditions.parse(self.where, label=label))
        object.__setattr__(self, "sources", _sources(self.source, label))


def _sources(source: object, label: str) -> frozenset[EventSource] | None:
    if source is None:
        return None
    names = [source] if isinstance(source, str) else source
    known = ", ".join(repr(s.value) for s in EventSource)
    if not isinstance(names, list | tuple | set | frozenset) or not names:
        raise DefinitionError(f"{label}: source takes one of {known}, or a list of them")
    try:
        return frozenset(EventSource(name) for name in names)
    except ValueError:
        raise DefinitionError(
            f"{label}: source {source!r} is unknown; the sources are {known}"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """Start a run on a cron schedule, with ``{"scheduled_for": ..., "fired_at": ...}``.

    Attributes:
        cron: A five-field cron expression, e.g. ``"0 2 * * *"``.
        tz: An IANA time zone name; ``None`` is the machine's local time.
        catch_up: After downtime, fire once per missed tick instead of once in all.
    """

    cron: str
    tz: str | None = None
    catch_up: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.catch_up, bool):
            raise DefinitionError(f"Schedule catch_up must be True or False, got {self.catch_up!r}")
        schedules.validate(self.cron, self.tz, label=f"Schedule(cron={self.cron!r})")


FILE_CREATED = "file.created"


@dataclass(frozen=True)
class FileTrigger:
    """Start a run for each new file in `dir` whose name matches `glob`.

    Each new file becomes a ``file.created`` event, journaled like any other, with data
    ``{"path": ..., "size": ..., "dir": ..., "glob": ...}`` (absolute paths). A relative
    `dir` is relative to the workflow's file when loaded from a folder, else to the
    current directory. Files present before the daemon starts are not events.
    """

    dir: str | os.PathLike[str]
    glob: str = "*"

    def __post_init__(self) -> None:
        if not isinstance(self.dir, str | os.PathLike) or not os.fspath(self.dir).strip():
            raise DefinitionError(f"FileTrigger needs a folder: dir=..., got {self.dir!r}")
        if not isinstance(self.glob, str) or not self.glob or "/" in self.glob:
            raise DefinitionError(
                f"FileTrigger glob must be a file name pattern like '*.csv', got {self.glob!r}"
            )

    def folder(self, base: str | os.PathLike[str] | None) -> Path:
        """The absolute folder watched, `dir` resolved against `base` (or the cwd)."""
        path = Path(self.dir).expanduser()
        if not path.is_absolute():
            path = Path(base or Path.cwd()) / path
        return Path(os.path.abspath(path))


AnyTrigger = Trigger | Schedule | FileTrigger


@dataclass(frozen=True)
class Workflow:
    """A workflow: named pipelines, each started by the trigger of the same id.

    Attributes:
        id: Unique id, letters, digits, ``_``, ``.`` and ``-``.
        pipelines: Trigger id -> list of steps (functions or `Step`). A pipeline without a
            trigger of its id can only be started with `Runtime.invoke`.
        triggers: Trigger id -> `Trigger` (events), `Schedule` (cron) or `FileTrigger`
            (new files in a folder).
        mode: What happens when work arrives while the workflow is busy (default
            ``Transient()``, no limits); a mode given to `Runtime.register` wins.
        env: Values for ``ctx.env``; they win over the runtime's env.
        services: Services its steps reach with ``await ctx.use(id)``.
        on_prepare: ``on_prepare(ctx)`` before a run's first step.
        on_complete: ``on_complete(result)`` for every finished run.
        on_resume: ``on_resume(ctx)`` when a paused or recovered run continues.
        on_cleanup: ``on_cleanup()`` after a finished run's bookkeeping.
        on_dispatch: ``on_dispatch(result)`` for every trigger dispatch, accepted or not.
        isolate: Run its sync steps in worker processes (``True``) or in threads
            (``False``); ``None`` follows the folder's ``[steps] isolate`` and the
            runtime's ``isolate``. A step's own ``isolate`` wins.
    """

    id: str
    pipelines: Mapping[str, Sequence[StepFn | Step]]
    triggers: Mapping[str, AnyTrigger] = field(default_factory=dict)
    mode: Mode | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    services: Sequence[Service] = ()
    on_prepare: Callable[..., Any] | None = None
    on_complete: Callable[..., Any] | None = None
    on_resume: Callable[..., Any] | None = None
    on_cleanup: Callable[..., Any] | None = None
    on_dispatch: Callable[..., Any] | None = None
    isolate: bool | None = None
    bound: Mapping[str, list[BoundStep]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = id_problem(self.id, "workflow")
        if problem is not None:
            raise DefinitionError(problem)
        if not isinstance(self.pipelines, Mapping) or not self.pipelines:
            raise DefinitionError(f"workflow {self.id!r}: pipelines must be a non-empty dict")
        bound: dict[str, list[BoundStep]] = {}
        for trigger_id, pipeline in self.pipelines.items():
            where = f"workflow {self.id!r} pipeline {trigger_id!r}"
            problem = id_problem(trigger_id, "trigger")
            if problem is not None:
                raise DefinitionError(f"{where}: {problem}")
            bound[trigger_id] = bind_pipeline(pipeline, where=where)
            if not bound[trigger_id]:
                raise DefinitionError(f"{where}: a pipeline needs at least one step")
        object.__setattr__(self, "bound", bound)
        self._check_triggers()
        if not isinstance(self.env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise DefinitionError(f"workflow {self.id!r}: env must map strings to strings")
        self._check_services()
        if self.isolate is not None and not isinstance(self.isolate, bool):
            raise DefinitionError(
                f"workflow {self.id!r}: isolate must be True, False or None, got {self.isolate!r}"
            )
        if self.mode is not None and not isinstance(self.mode, Mode):
            raise DefinitionError(
                f"workflow {self.id!r}: mode must be Transient(), Serialized(), SingletonLoop() "
                f"or Exclusive(), got {self.mode!r}"
            )

    def _check_services(self) -> None:
        services: object = self.services
        if not isinstance(services, list | tuple) or not all(
            isinstance(service, Service) for service in services
        ):
            raise DefinitionError(f"workflow {self.id!r}: services must be a list of Service")
        own = {service.id for service in self.services}
        outside = {dep for service in self.services for dep in service.deps} - own
        # Deps outside the workflow may be runtime services: checked again at registration.
        check_graph(self.services, available=outside, label=f"workflow {self.id!r}")

    def _check_triggers(self) -> None:
        if not isinstance(self.triggers, Mapping):
            raise DefinitionError(f"workflow {self.id!r}: triggers must be a dict of id -> Trigger")
        for trigger_id, trigger in self.triggers.items():
            where = f"workflow {self.id!r} trigger {trigger_id!r}"
            if not isinstance(trigger, Trigger | Schedule | FileTrigger):
                raise DefinitionError(
                    f"{where}: expected a Trigger, Schedule or FileTrigger, got {trigger!r}"
                )
            if trigger_id not in self.bound:
                raise DefinitionError(
                    f"{where} has no pipeline: add pipelines={{{trigger_id!r}: [...]}}"
                )

"""The scoped service container: definitions, the dependency check, and one cache per scope.

Scopes nest ``global <- workflow <- run``: the runtime holds one global `ServiceScope`
(``Runtime(services=[...])``), one per registered workflow and one per run. A scope creates
and caches the services of its own scope, creates a ``"transient"`` service anew on every
resolution, and hands every other id to its parent. A factory resolves its dependencies from
the scope that owns it, so a service can only use services that live at least as long as it
does (global > workflow > run); `check_graph` reports a breach when a workflow is defined.

This module never touches the journal: the runtime records cleanup errors and decides when a
scope ends.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..errors import (
    DefinitionError,
    DuplicateKey,
    OrchestratorError,
    ServiceError,
    ServiceNotFound,
    raise_if_cancelled,
)

Scope = Literal["global", "workflow", "run", "transient"]
RESERVED = frozenset({"__pause_service__", "__env__"})
Cleanup = Callable[[], Any]
_SCOPES: tuple[str, ...] = get_args(Scope)
# How long an instance lives; a service may only depend on one that lives at least as long.
_LIFETIME = {"global": 3, "workflow": 2, "run": 1}
_LIFETIME_NAME = {3: "the runtime", 2: "its workflow", 1: "a run"}
_RUNTIME_LABEL = "Runtime(services=[...])"


@dataclass(frozen=True)
class Service:
    """A service: how to build it, how long an instance lives, and what it needs.

    Attributes:
        id: Unique among the services a workflow can see; ``__env__`` and
            ``__pause_service__`` are reserved.
        factory: ``factory(ctx)`` with a `ServiceContext`, sync or async. A sync factory
            runs on the event loop: keep it quick, or make it async. Only an async
            factory can ``await ctx.use(...)`` its dependencies.
        scope: ``"workflow"`` (one per registered workflow), ``"run"`` (one per run; its
            factory sees the run's state), ``"transient"`` (new on each resolution) or
            ``"global"`` (``Runtime(services=[...])`` only, see `runtime_services`).
        deps: Ids the factory may resolve with ``ctx.use``; any sequence, stored as a tuple.
    """

    id: str
    factory: Callable[[ServiceContext], Any]
    scope: Scope = "workflow"
    deps: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DefinitionError(f"Service id must be a non-empty string, got {self.id!r}")
        if self.id in RESERVED:
            raise DuplicateKey(f"service id {self.id!r} is reserved by the runtime: pick another")
        where = f"service {self.id!r}"
        if not callable(self.factory):
            raise DefinitionError(f"{where}: factory must be callable, got {self.factory!r}")
        if self.scope not in _SCOPES:
            raise DefinitionError(f"{where}: scope must be one of {_SCOPES}, got {self.scope!r}")
        deps: object = self.deps
        if isinstance(deps, str | bytes) or not isinstance(deps, Iterable):
            raise DefinitionError(f"{where}: deps must be a list of service ids, got {deps!r}")
        object.__setattr__(self, "deps", tuple(deps))
        if not all(isinstance(dep, str) and dep for dep in self.deps):
            raise DefinitionError(f"{where}: every dep must be a service id, got {self.deps!r}")


class ServiceContext:
    """What a factory receives as its one argument.

    Attributes:
        service_id: The id of the service being built.
        state: A copy of the run's state when built in a run scope (``"run"`` services, and
            ``"transient"`` ones resolved there); ``None`` otherwise.
        idempotency_key: ``"{run_id}:services"`` in a run scope, stable across every
            re-execution of the run; ``None`` otherwise.
    """

    def __init__(self, service: Service, scope: ServiceScope, path: tuple[str, ...]) -> None:
        self.service_id = service.id
        self.state = copy.deepcopy(scope._state) if scope._state is not None else None
        self.idempotency_key = scope._idempotency_key
        self._deps, self._scope, self._path = service.deps, scope, (*path, service.id)
        self._stack = scope._cleanups
        # Cleanups wait here until the factory returns, so they join the scope's stack after
        # those of the dependencies it built: closing then undoes dependents first.
        self._pending: list[Cleanup] | None = []

    async def use(self, id: str) -> Any:
        """Resolve the dependency `id`, which must be listed in the service's ``deps``."""
        if id not in self._deps:
            raise DefinitionError(
                f"service {self.service_id!r} uses {id!r} without declaring it: add deps=[{id!r}]"
            )
        return await self._scope._resolve(id, self._path)

    def on_cleanup(self, fn: Cleanup) -> None:
        """Call `fn` (sync or async, no arguments) once when the scope of this instance ends."""
        if not callable(fn):
            raise TypeError(f"on_cleanup needs a callable, got {fn!r}")
        (self._stack if self._pending is None else self._pending).append(fn)

    def _seal(self) -> None:
        if self._pending is not None:
            self._stack.extend(self._pending)
            self._pending = None


def check_graph(services: Sequence[Service], *, available: Iterable[str] = (), label: str) -> None:
    """Check a list of services when it is defined; `available` are ids provided from outside.

    Ids in `available` (the runtime's services) are taken to be global. A service defined
    here shadows an available one of the same id.

    Raises:
        DuplicateKey: Two services share an id.
        DefinitionError: Not a `Service`; a dependency is unknown; dependencies form a cycle;
            or a service depends on one that does not live as long (global > workflow > run).
    """
    by_id: dict[str, Service] = {}
    for service in services:
        if not isinstance(service, Service):
            raise DefinitionError(f"{label}: expected a Service, got {service!r}")
        if service.id in by_id:
            raise DuplicateKey(f"{label}: service id {service.id!r} is defined twice")
        by_id[service.id] = service
    known = set(available)
    for service in by_id.values():
        for dep in service.deps:
            if dep not in by_id and dep not in known:
                raise DefinitionError(f"{label}: service {service.id!r} needs {dep!r}: not defined")
    done: set[str] = set()
    for service_id in by_id:
        _check_cycle(service_id, by_id, [], done, label)
    for service in by_id.values():
        _check_lifetimes(service, by_id, label)


def _check_cycle(
    service_id: str, by_id: Mapping[str, Service], path: list[str], done: set[str], label: str
) -> None:
    if service_id in path:
        cycle = " -> ".join([*path[path.index(service_id) :], service_id])
        raise DefinitionError(f"{label}: services depend on each other in a cycle: {cycle}")
    if service_id in done or service_id not in by_id:
        return
    path.append(service_id)
    for dep in by_id[service_id].deps:
        _check_cycle(dep, by_id, path, done, label)
    path.pop()
    done.add(service_id)


def _lifetime(service_id: str, by_id: Mapping[str, Service]) -> int:
    """A transient lives wherever it is built, so as long as the shortest-lived thing it uses."""
    service = by_id.get(service_id)
    if service is None:
        return _LIFETIME["global"]
    if service.scope != "transient":
        return _LIFETIME[service.scope]
    return min((_lifetime(dep, by_id) for dep in service.deps), default=_LIFETIME["global"])


def _check_lifetimes(service: Service, by_id: Mapping[str, Service], label: str) -> None:
    for dep in service.deps if service.scope != "transient" else ():
        if (lives := _lifetime(dep, by_id)) < _LIFETIME[service.scope]:
            raise DefinitionError(
                f"{label}: {service.scope} service {service.id!r} cannot use {dep!r}, which lives"
                f" only as long as {_LIFETIME_NAME[lives]} (global > workflow > run)"
            )


def runtime_services(services: Sequence[Service]) -> dict[str, Service]:
    """``Runtime(services=[...])`` as global singletons, checked and keyed for `ServiceScope`.

    Scope ``"workflow"`` (the default) and ``"global"`` both become ``"global"``; ``"run"``
    and ``"transient"`` need a run or a workflow, so they belong in a workflow's services.
    """
    promoted: list[Service] = []
    for service in services:
        if not isinstance(service, Service):
            raise DefinitionError(f"{_RUNTIME_LABEL}: expected a Service, got {service!r}")
        if service.scope in ("run", "transient"):
            raise DefinitionError(
                f"{_RUNTIME_LABEL}: service {service.id!r} has scope {service.scope!r}, but"
                " runtime services are global singletons: declare it in a workflow instead"
            )
        promoted.append(dataclasses.replace(service, scope="global"))
    check_graph(promoted, label=_RUNTIME_LABEL)
    return {service.id: service for service in promoted}


class ServiceScope:
    """One instance cache and cleanup stack for one scope instance.

    Create it with the services of a workflow (or `runtime_services` for the global scope),
    its parent scope, and, for a run, the run's state and idempotency key. Close children
    before their parent.
    """

    def __init__(
        self,
        services: Mapping[str, Service],
        *,
        parent: ServiceScope | None,
        scope: Scope,
        state: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        on_create: Callable[[str], None] | None = None,
    ) -> None:
        if scope not in _LIFETIME:
            raise ValueError(f"a ServiceScope is 'global', 'workflow' or 'run', not {scope!r}")
        for service in services.values():
            if (service.scope == "global") != (scope == "global"):
                raise DefinitionError(
                    f"service {service.id!r} has scope {service.scope!r}: 'global' services"
                    f" belong in {_RUNTIME_LABEL} (see runtime_services), and only there"
                )
        self.scope: Scope = scope
        self._services, self._parent = dict(services), parent
        self._state, self._idempotency_key = state, idempotency_key
        self._instances: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Invariant: a cleanup is popped before it is called, so each runs at most once.
        self._cleanups: list[Cleanup] = []
        self._closed = False
        self._on_create = on_create

    async def get(self, id: str) -> Any:
        """Return the instance of service `id` for this scope, building it if needed.

        Raises:
            ServiceNotFound: No service `id` is available here.
            ServiceError: Its factory raised (chained as ``__cause__``), or a scope is closed.
            DefinitionError: A factory used an undeclared dependency, or a cycle was met.
        """
        return await self._resolve(id, ())

    async def _resolve(self, id: str, path: tuple[str, ...]) -> Any:
        if self._closed:
            raise ServiceError(f"the {self.scope} service scope is closed: no {id!r}", service=id)
        if id in path:
            raise DefinitionError(f"services depend on each other: {' -> '.join((*path, id))}")
        service = self._services.get(id)
        if service is not None and service.scope == "transient":
            return await self._create(service, path)
        if service is not None and service.scope == self.scope:
            return await self._cached(service, path)
        if service is not None and _LIFETIME[service.scope] < _LIFETIME[self.scope]:
            raise ServiceNotFound(f"{service.scope} service {id!r}: not in a {self.scope} scope")
        if self._parent is None:
            raise ServiceNotFound(f"no service {id!r}: define Service({id!r}, factory)")
        return await self._parent._resolve(id, path)

    async def _cached(self, service: Service, path: tuple[str, ...]) -> Any:
        # The per-id lock makes concurrent first resolutions build one instance; a failed
        # build caches nothing, so the next resolution tries again.
        async with self._locks.setdefault(service.id, asyncio.Lock()):
            if service.id not in self._instances:
                self._instances[service.id] = await self._create(service, path)
            return self._instances[service.id]

    async def _create(self, service: Service, path: tuple[str, ...]) -> Any:
        ctx = ServiceContext(service, self, path)
        try:
            value = service.factory(ctx)
            instance = await value if inspect.isawaitable(value) else value
            if self._on_create is not None:
                self._on_create(service.id)
            return instance
        except OrchestratorError:
            raise  # already names the service at fault (a dependency, a cycle, a closed scope)
        except BaseException as exc:  # user code: whatever it raises fails the service
            raise_if_cancelled(exc)
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ServiceError(
                f"service {service.id!r} failed: {what}", service=service.id
            ) from exc
        finally:
            ctx._seal()  # cleanups registered before a failure still run when the scope closes

    def ids(self) -> set[str]:
        """Every service id this scope or its ancestors can provide."""
        inherited = self._parent.ids() if self._parent is not None else set()
        return inherited | set(self._services)

    def add_cleanup(self, fn: Cleanup) -> None:
        """Call `fn` (sync or async) once when this scope ends (``ctx.on_cleanup``)."""
        if not callable(fn):
            raise TypeError(f"on_cleanup needs a callable, got {fn!r}")
        self._cleanups.append(fn)

    async def close(self) -> list[BaseException]:
        """End the scope: run cleanups newest first, each once, and return what they raised.

        Idempotent: a second call runs nothing already run. Cancellation propagates; the
        cleanups not yet run are left for the next call.
        """
        self._closed = True
        self._instances.clear()
        errors: list[BaseException] = []
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                result = cleanup()
                if inspect.isawaitable(result):
                    await result
            except BaseException as exc:  # noqa: BLE001 - user code; the runtime records these
                raise_if_cancelled(exc)
                errors.append(exc)
        return errors

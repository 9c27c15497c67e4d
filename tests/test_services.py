"""The service container: scopes, dependencies, the definition check, cleanup."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.define.services import (
    RESERVED,
    Scope,
    Service,
    ServiceContext,
    ServiceError,
    ServiceNotFound,
    ServiceScope,
    check_graph,
    runtime_services,
)
from orchestrator.errors import DefinitionError, DuplicateKey, OrchestratorError


def counter() -> tuple[list[ServiceContext], Callable[[ServiceContext], Any]]:
    """A factory that records each call and returns a fresh object with a serial number."""
    calls: list[ServiceContext] = []
    serial = itertools.count(1)

    def factory(ctx: ServiceContext) -> dict[str, Any]:
        calls.append(ctx)
        return {"n": next(serial), "state": ctx.state, "key": ctx.idempotency_key}

    return calls, factory


def tree(
    global_: list[Service], workflow: list[Service]
) -> tuple[ServiceScope, Callable[[], ServiceScope], Callable[..., ServiceScope]]:
    """A global scope, a maker of workflow scopes, and a maker of run scopes under one."""
    root = ServiceScope(runtime_services(global_), parent=None, scope="global")
    by_id = {service.id: service for service in workflow}

    def workflow_scope() -> ServiceScope:
        return ServiceScope(by_id, parent=root, scope="workflow")

    def run_scope(parent: ServiceScope, run_id: str, state: dict[str, Any]) -> ServiceScope:
        return ServiceScope(
            by_id, parent=parent, scope="run", state=state, idempotency_key=f"{run_id}:services"
        )

    return root, workflow_scope, run_scope


# --- definitions --------------------------------------------------------------------------


@pytest.mark.parametrize("reserved", sorted(RESERVED))
def test_reserved_ids_raise_duplicate_key(reserved: str) -> None:
    with pytest.raises(DuplicateKey, match="reserved") as info:
        Service(reserved, lambda ctx: None)
    assert info.value.code == "DUPLICATE_KEY"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"id": "", "factory": lambda ctx: None}, "non-empty"),
        ({"id": "db", "factory": "not callable"}, "callable"),
        ({"id": "db", "factory": lambda ctx: None, "scope": "forever"}, "scope"),
        ({"id": "db", "factory": lambda ctx: None, "deps": "cache"}, "list of service ids"),
        ({"id": "db", "factory": lambda ctx: None, "deps": [1]}, "service id"),
    ],
)
def test_invalid_service_definitions(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        Service(**kwargs)


def test_deps_accept_any_sequence_and_are_stored_as_a_tuple() -> None:
    assert Service("a", lambda ctx: None, deps=["b", "c"]).deps == ("b", "c")
    assert Service("a", lambda ctx: None).scope == "workflow"


def test_check_graph_rejects_duplicates_and_unknown_deps() -> None:
    a = Service("a", lambda ctx: None)
    with pytest.raises(DuplicateKey, match="'a' is defined twice"):
        check_graph([a, a], label="workflow 'w'")
    with pytest.raises(DefinitionError, match="workflow 'w': service 'b' needs 'db'"):
        check_graph([Service("b", lambda ctx: None, deps=["db"])], label="workflow 'w'")
    check_graph([Service("b", lambda ctx: None, deps=["db"])], available=["db"], label="w")


@pytest.mark.parametrize(
    ("deps", "cycle"),
    [
        ({"a": ["a"]}, "a -> a"),
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        ({"x": ["a"], "a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
    ],
)
def test_check_graph_names_the_cycle(deps: dict[str, list[str]], cycle: str) -> None:
    services = [Service(id, lambda ctx: None, deps=d) for id, d in deps.items()]
    with pytest.raises(DefinitionError, match=f"cycle: {cycle}$"):
        check_graph(services, label="w")


@pytest.mark.parametrize(
    ("scope", "dep_scope", "ok"),
    [
        ("workflow", "workflow", True),
        ("run", "workflow", True),
        ("run", "run", True),
        ("workflow", "run", False),
        ("transient", "run", True),
    ],
)
def test_check_graph_lifetimes(scope: Scope, dep_scope: Scope, ok: bool) -> None:
    services = [
        Service("a", lambda ctx: None, scope=scope, deps=["b"]),
        Service("b", lambda ctx: None, scope=dep_scope),
    ]
    if ok:
        check_graph(services, label="w")
    else:
        with pytest.raises(DefinitionError, match=r"cannot use 'b'.*as long as a run"):
            check_graph(services, label="w")


def test_check_graph_sees_through_transients() -> None:
    services = [
        Service("w", lambda ctx: None, deps=["t"]),
        Service("t", lambda ctx: None, scope="transient", deps=["r"]),
        Service("r", lambda ctx: None, scope="run"),
    ]
    with pytest.raises(DefinitionError, match="workflow service 'w' cannot use 't'"):
        check_graph(services, label="w")


@pytest.mark.parametrize("scope", ["run", "transient"])
def test_runtime_services_must_be_global(scope: Scope) -> None:
    with pytest.raises(DefinitionError, match="global singletons"):
        runtime_services([Service("db", lambda ctx: None, scope=scope)])


def test_runtime_services_promote_the_default_scope() -> None:
    promoted = runtime_services([Service("db", lambda ctx: None), Service("x", print, "global")])
    assert {id: s.scope for id, s in promoted.items()} == {"db": "global", "x": "global"}


def test_global_scope_in_a_workflow_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="only there"):
        ServiceScope({"g": Service("g", print, "global")}, parent=None, scope="workflow")


# --- identity per scope -------------------------------------------------------------------


async def test_global_service_is_one_instance_across_workflows_and_runs() -> None:
    calls, factory = counter()
    root, workflow_scope, run_scope = tree([Service("db", factory)], [])
    w1, w2 = workflow_scope(), workflow_scope()
    seen = [await root.get("db"), await w1.get("db"), await w2.get("db")]
    seen.append(await run_scope(w1, "r1", {}).get("db"))
    assert all(instance is seen[0] for instance in seen)
    assert len(calls) == 1
    assert calls[0].state is None and calls[0].idempotency_key is None


async def test_workflow_service_is_one_instance_per_workflow_scope() -> None:
    calls, factory = counter()
    _, workflow_scope, run_scope = tree([], [Service("api", factory)])
    w1, w2 = workflow_scope(), workflow_scope()
    first = await w1.get("api")
    assert await w1.get("api") is first
    assert await run_scope(w1, "r1", {}).get("api") is first
    assert await w2.get("api") is not first
    assert len(calls) == 2


async def test_run_service_is_one_per_run_and_sees_that_runs_state() -> None:
    calls, factory = counter()
    _, workflow_scope, run_scope = tree([], [Service("cart", factory, scope="run")])
    w = workflow_scope()
    r1, r2 = run_scope(w, "r1", {"order": 1}), run_scope(w, "r2", {"order": 2})
    one, two = await r1.get("cart"), await r2.get("cart")
    assert await r1.get("cart") is one and one is not two
    assert (one["state"], one["key"]) == ({"order": 1}, "r1:services")
    assert (two["state"], two["key"]) == ({"order": 2}, "r2:services")
    assert len(calls) == 2


async def test_run_state_given_to_a_factory_is_a_copy() -> None:
    state = {"items": [1]}
    scope = ServiceScope(
        {"s": Service("s", lambda ctx: ctx.state["items"].append(2), scope="run")},
        parent=None,
        scope="run",
        state=state,
    )
    await scope.get("s")
    assert state == {"items": [1]}


async def test_run_service_is_not_available_outside_a_run() -> None:
    _, workflow_scope, _ = tree([], [Service("cart", print, scope="run")])
    with pytest.raises(ServiceNotFound, match="run service 'cart'") as info:
        await workflow_scope().get("cart")
    assert info.value.code == "SERVICE_NOT_FOUND"


async def test_transient_is_new_on_every_get() -> None:
    calls, factory = counter()
    _, workflow_scope, run_scope = tree([], [Service("tmp", factory, scope="transient")])
    run = run_scope(workflow_scope(), "r1", {"a": 1})
    first, second = await run.get("tmp"), await run.get("tmp")
    assert first is not second and [first["n"], second["n"]] == [1, 2]
    assert first["state"] == {"a": 1} and len(calls) == 2


async def test_unknown_id_is_service_not_found() -> None:
    _, workflow_scope, _ = tree([], [])
    with pytest.raises(ServiceNotFound, match="no service 'nope'"):
        await workflow_scope().get("nope")


# --- factories and dependencies -----------------------------------------------------------


async def test_async_factory_and_deps_through_use() -> None:
    async def make_db(ctx: ServiceContext) -> str:
        await asyncio.sleep(0)  # a factory that really awaits
        return "db"

    async def make_repo(ctx: ServiceContext) -> str:
        return f"repo({await ctx.use('db')},{await ctx.use('cfg')})"

    _, workflow_scope, run_scope = tree(
        [Service("cfg", lambda ctx: "cfg")],
        [Service("db", make_db), Service("repo", make_repo, scope="run", deps=["db", "cfg"])],
    )
    run = run_scope(workflow_scope(), "r1", {})
    assert await run.get("repo") == "repo(db,cfg)"


async def test_factory_returning_an_awaitable_is_awaited() -> None:
    async def later() -> int:
        return 7

    scope = ServiceScope({"n": Service("n", lambda ctx: later())}, parent=None, scope="workflow")
    assert await scope.get("n") == 7


async def test_undeclared_dep_is_a_clear_error() -> None:
    async def make_repo(ctx: ServiceContext) -> object:
        return await ctx.use("db")

    services = {"db": Service("db", print), "repo": Service("repo", make_repo)}
    scope = ServiceScope(services, parent=None, scope="workflow")
    with pytest.raises(DefinitionError, match=r"'repo' uses 'db' without declaring.*deps=\['db'\]"):
        await scope.get("repo")


async def test_a_cycle_met_while_resolving_is_an_error_not_a_deadlock() -> None:
    async def make(ctx: ServiceContext) -> object:
        return await ctx.use("b" if ctx.service_id == "a" else "a")

    services = {"a": Service("a", make, deps=["b"]), "b": Service("b", make, deps=["a"])}
    scope = ServiceScope(services, parent=None, scope="workflow")
    with pytest.raises(DefinitionError, match="a -> b -> a"):
        await asyncio.wait_for(scope.get("a"), timeout=5)


async def test_concurrent_gets_create_exactly_one_instance() -> None:
    calls = 0

    async def slow(ctx: ServiceContext) -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)  # slow: the other gets arrive while it runs
        return object()

    scope = ServiceScope({"s": Service("s", slow)}, parent=None, scope="workflow")
    results = await asyncio.gather(*(scope.get("s") for _ in range(20)))
    assert calls == 1
    assert all(result is results[0] for result in results)


async def test_factory_failure_is_wrapped_chained_and_not_cached() -> None:
    attempts = 0

    def flaky(ctx: ServiceContext) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("refused")
        return "ok"

    scope = ServiceScope({"db": Service("db", flaky)}, parent=None, scope="workflow")
    with pytest.raises(ServiceError, match="service 'db' failed: ConnectionError: refused") as info:
        await scope.get("db")
    assert info.value.code == "SERVICE_FAILED" and info.value.service == "db"
    assert isinstance(info.value.__cause__, ConnectionError)
    assert isinstance(info.value, OrchestratorError)
    assert await scope.get("db") == "ok"


async def test_a_failing_dependency_is_reported_once_by_name() -> None:
    async def make_repo(ctx: ServiceContext) -> object:
        return await ctx.use("db")

    services = {
        "db": Service("db", lambda ctx: 1 / 0),
        "repo": Service("repo", make_repo, deps=["db"]),
    }
    scope = ServiceScope(services, parent=None, scope="workflow")
    with pytest.raises(ServiceError) as info:
        await scope.get("repo")
    assert info.value.service == "db"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_cancellation_is_not_wrapped() -> None:
    started = asyncio.Event()

    async def hang(ctx: ServiceContext) -> object:
        started.set()
        await asyncio.sleep(60)  # until cancelled

    scope = ServiceScope({"s": Service("s", hang)}, parent=None, scope="workflow")
    task = asyncio.ensure_future(scope.get("s"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- cleanup ------------------------------------------------------------------------------


async def test_cleanups_run_in_reverse_creation_order_exactly_once() -> None:
    order: list[str] = []

    def make(name: str) -> Callable[[ServiceContext], Any]:
        async def factory(ctx: ServiceContext) -> str:
            ctx.on_cleanup(lambda: order.append(f"{name}.sync"))

            async def aclose() -> None:
                order.append(f"{name}.async")

            ctx.on_cleanup(aclose)
            for dep in ("db",) if name == "repo" else ():
                await ctx.use(dep)
            return name

        return factory

    services = {
        "db": Service("db", make("db")),
        "repo": Service("repo", make("repo"), deps=["db"]),
        "log": Service("log", make("log")),
    }
    scope = ServiceScope(services, parent=None, scope="workflow")
    await scope.get("repo")  # builds db first, though repo registered its cleanups earlier
    await scope.get("log")
    assert await scope.close() == []
    assert await scope.close() == []
    assert order == [
        "log.async",
        "log.sync",
        "repo.async",
        "repo.sync",
        "db.async",
        "db.sync",
    ]


async def test_a_failing_cleanup_does_not_stop_the_others() -> None:
    ran: list[str] = []
    boom = RuntimeError("boom")

    def fail() -> None:
        raise boom

    def factory(ctx: ServiceContext) -> None:
        ctx.on_cleanup(lambda: ran.append("first"))
        ctx.on_cleanup(fail)
        ctx.on_cleanup(lambda: ran.append("last"))

    scope = ServiceScope({"s": Service("s", factory)}, parent=None, scope="workflow")
    await scope.get("s")
    assert await scope.close() == [boom]
    assert ran == ["last", "first"]


async def test_transient_cleanups_run_when_the_scope_closes() -> None:
    closed: list[int] = []
    serial = itertools.count(1)

    def factory(ctx: ServiceContext) -> int:
        n = next(serial)
        ctx.on_cleanup(lambda: closed.append(n))
        return n

    scope = ServiceScope(
        {"t": Service("t", factory, scope="transient")}, parent=None, scope="workflow"
    )
    assert [await scope.get("t"), await scope.get("t")] == [1, 2]
    assert closed == []
    await scope.close()
    assert closed == [2, 1]


async def test_cleanups_registered_before_a_factory_failed_still_run() -> None:
    closed: list[str] = []

    def factory(ctx: ServiceContext) -> None:
        ctx.on_cleanup(lambda: closed.append("half-open"))
        raise OSError("disk full")

    scope = ServiceScope({"s": Service("s", factory)}, parent=None, scope="workflow")
    with pytest.raises(ServiceError):
        await scope.get("s")
    await scope.close()
    assert closed == ["half-open"]


async def test_get_after_close_raises() -> None:
    scope = ServiceScope({"s": Service("s", lambda ctx: 1)}, parent=None, scope="workflow")
    assert await scope.get("s") == 1
    await scope.close()
    with pytest.raises(ServiceError, match="closed"):
        await scope.get("s")

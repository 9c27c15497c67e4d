"""Services reached from steps with `ctx.use`: identity per scope, cleanup, disposal."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orchestrator import DuplicateKey, Runtime, Service, Workflow

made: list[str] = []
cleaned: list[str] = []


def factory(name: str) -> Any:
    async def make(ctx: Any) -> dict[str, Any]:
        made.append(name)
        ctx.on_cleanup(lambda: cleaned.append(name))
        return {"name": name, "order": (ctx.state or {}).get("order")}

    return make


@pytest.fixture(autouse=True)
def _reset() -> None:
    made.clear()
    cleaned.clear()


async def use_all(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ids: dict[str, list[int]] = {}
    kept = []  # keep instances alive, so ids are never reused
    for sid in ("clock", "stock", "cart", "cart", "tmp", "tmp"):
        kept.append(await ctx.use(sid))
        ids.setdefault(sid, []).append(id(kept[-1]))
    cart = await ctx.use("cart")
    ctx.on_cleanup(lambda: cleaned.append("step"))
    env = await ctx.use("__env__")
    return {
        **state,
        "same_cart": len(set(ids["cart"])) == 1,
        "tmp_differ": len(set(ids["tmp"])) == 2,
        "cart_order": cart["order"],
        "env_is_ctx_env": env is ctx.env,
        "ids": {k: v[0] for k, v in ids.items() if k in ("clock", "stock")},
    }


SERVICES = [
    Service("stock", factory("stock"), scope="workflow"),
    Service("cart", factory("cart"), scope="run"),
    Service("tmp", factory("tmp"), scope="transient"),
]


async def test_identity_per_scope_and_cleanup_once(db: Path) -> None:
    flow = Workflow(id="w", pipelines={"go": [use_all]}, services=SERVICES)
    async with Runtime(db, services=[Service("clock", factory("clock"))], workflows=[flow]) as rt:
        first = await rt.invoke("w", "go", {"order": 1})
        second = await rt.invoke("w", "go", {"order": 2})
        assert (
            first.state["same_cart"] and first.state["tmp_differ"] and first.state["env_is_ctx_env"]
        )
        assert (first.state["cart_order"], second.state["cart_order"]) == (1, 2)
        assert first.state["ids"] == second.state["ids"]  # global and workflow: one each
        assert made.count("clock") == made.count("stock") == 1 and made.count("cart") == 2
        assert (
            cleaned.count("cart") == 2 and cleaned.count("step") == 2 and cleaned.count("tmp") == 4
        )
        await rt.deregister("w")
        assert cleaned.count("stock") == 1  # disposed on deregister
    assert cleaned.count("clock") == 1  # and global ones at stop


def test_reserved_ids_and_cycles_are_refused() -> None:
    with pytest.raises(DuplicateKey) as error:
        Service("__pause_service__", factory("x"))
    assert error.value.code == "DUPLICATE_KEY"
    with pytest.raises(DuplicateKey):
        Service("__env__", factory("x"))
    with pytest.raises(Exception, match="a -> b -> a"):
        Workflow(
            id="w",
            pipelines={"go": [use_all]},
            services=[
                Service("a", factory("a"), deps=["b"]),
                Service("b", factory("b"), deps=["a"]),
            ],
        )


async def test_run_scoped_cleanup_runs_at_least_once_across_a_crash(db: Path) -> None:
    keys: list[str] = []

    async def make_lock(ctx: Any) -> str:
        made.append("lock")
        keys.append(ctx.idempotency_key)
        ctx.on_cleanup(lambda: cleaned.append(ctx.idempotency_key))
        return "lock"

    async def take(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {**state, "lock": await ctx.use("lock")}

    flow = Workflow(
        id="w", pipelines={"go": [take]}, services=[Service("lock", make_lock, scope="run")]
    )
    async with Runtime(db, workflows=[flow]) as rt:
        result = await rt.invoke("w", "go", {})
    assert cleaned == [f"{result.run_id}:services"]
    # A crash after the run's end committed but before its scope's cleanup was journaled:
    # the same journal, without the "services.closed" entry.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM timeline WHERE kind = 'services.closed'")
    cleaned.clear()
    async with Runtime(db, workflows=[flow]):
        pass
    assert cleaned == [f"{result.run_id}:services"]  # rebuilt with the same key, cleaned up
    assert keys == [f"{result.run_id}:services"] * 2
    async with Runtime(db, workflows=[flow]):
        pass
    assert len(cleaned) == 1  # and only once: now it is journaled as closed

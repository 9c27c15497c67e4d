"""`emit`, `resume`, `signal` and `abort` from the real CLI, against a runtime in this process.

Each command is a real ``python -m orchestrator`` subprocess, run with asyncio so that the
runtime here keeps serving while it runs; the command reaches the runtime only through the
journal file (an event row, or a command in the inbox). Latency from the CLI's exit to the
effect is printed, not asserted ("within 100 ms" is the aim on an idle machine).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from procs import acli, query

from orchestrator import RunInfo, Runtime, Trigger, Workflow

EVENT_ID = re.compile(r"[0-9a-f]{32}\n")


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="payment.received", where={"order_id": ("==", state["order_id"])}, into="payment"
    )


def ship(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "shipped": True}


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created")},
    pipelines={"new": [wait_for_payment, ship], "quick": [ship]},
)


async def effect(rt: Runtime, what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    """What `check` finds once the runtime has applied the CLI's writes; print how long it took.

    The runtime is idle only once its inbox holds nothing it has not applied (5 s at most).
    """
    started = time.monotonic()
    await rt.idle(timeout=5)
    result = await check()
    assert result, f"{what}: not applied once the runtime was idle"
    print(f"{what}: applied {1000 * (time.monotonic() - started):.0f} ms after the CLI exited")
    return result


def in_status(rt: Runtime, run_id: str, status: str) -> Callable[[], Awaitable[RunInfo | None]]:
    async def check() -> RunInfo | None:
        info = await rt.watch("orders", run_id)
        return info if info is not None and info.status == status else None

    return check


def inbox(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT command, run_id, payload, done_at IS NOT NULL, outcome FROM inbox")


async def test_emit_prints_only_the_event_id_and_the_event_starts_a_run(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        out = await acli("emit", "order.created", '{"order_id": 7}', "--db", str(db))
        assert out.returncode == 0, out.stderr
        assert EVENT_ID.fullmatch(out.stdout), repr(out.stdout)  # the report is on stderr
        event_id = out.stdout.strip()

        async def started() -> list[RunInfo]:
            return [run for run in await rt.list_runs() if run.status == "paused"]

        [run] = await effect(rt, "emit", started)
        assert out.stderr == f"started run {run.run_id} (orders/new)\n"
        assert run.state == {"order_id": 7} and run.trigger_id == "new"
        assert query(db, "SELECT type, routed_at IS NOT NULL FROM events") == [("order.created", 1)]
        assert query(db, "SELECT event_id, action FROM event_routes") == [(event_id, "started")]


async def test_resume_continues_a_paused_run_with_the_patch_in_its_state(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 1})
        assert paused.status == "paused"
        out = await acli("resume", paused.run_id, '{"x": 1}', "--db", str(db))
        assert out.returncode == 0, out.stderr
        done = await effect(rt, "resume", in_status(rt, paused.run_id, "completed"))
        assert done.state == {"order_id": 1, "x": 1, "shipped": True}
        [(command, run_id, payload, applied, outcome)] = inbox(db)
        assert (command, run_id, payload) == ("resume", paused.run_id, '{"x": 1}')
        assert applied and outcome == "ok"


async def test_resume_refuses_a_run_that_is_not_paused_and_an_unknown_run(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        done = await rt.invoke("orders", "quick", {"order_id": 1})
        assert done.status == "completed"
        out = await acli("resume", done.run_id, "--db", str(db))
        assert out.returncode == 1 and out.stdout == ""
        assert f"run {done.run_id} is completed; only a paused run can be resumed" in out.stderr
        unknown = await acli("resume", "nope", "--db", str(db))
        assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr
        assert inbox(db) == [], "a refused command is not queued"


async def test_signal_patches_a_paused_run_which_stays_paused(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 2})
        out = await acli("signal", paused.run_id, '{"note": "gift"}', "--db", str(db))
        assert out.returncode == 0, out.stderr

        async def patched() -> RunInfo | None:
            info = await rt.watch("orders", paused.run_id)
            return info if info is not None and "note" in info.state else None

        info = await effect(rt, "signal", patched)
        assert info.status == "paused" and info.state == {"order_id": 2, "note": "gift"}
        await rt.emit("payment.received", {"order_id": 2})
        done = await rt.wait(paused.run_id, timeout=5)
        assert done.status == "completed" and done.state["note"] == "gift"
        assert inbox(db)[0][3:] == (1, "ok")


async def test_abort_ends_a_paused_run(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 3})
        out = await acli("abort", paused.run_id, "--db", str(db))
        assert out.returncode == 0, out.stderr
        info = await effect(rt, "abort", in_status(rt, paused.run_id, "aborted"))
        assert info.error_code == "ABORTED"
        assert query(db, "SELECT status FROM waits") == [("cancelled",)]
        await rt.emit("payment.received", {"order_id": 3})  # too late: nothing resumes
        await rt.idle()
        assert await in_status(rt, paused.run_id, "aborted")()


async def test_bad_json_exits_2_and_writes_nothing(db: Path) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 4})
        for args in (
            ["emit", "order.created", "{not json"],
            ["emit", "order.created", "[1, 2]"],
            ["resume", paused.run_id, "{'x': 1}"],
            ["signal", paused.run_id, "42"],
        ):
            out = await acli(*args, "--db", str(db))
            assert out.returncode == 2 and out.stdout == "", args
            assert out.stderr.startswith("error:") and "Traceback" not in out.stderr, args
        assert query(db, "SELECT count(*) FROM events") == [(0,)]
        assert inbox(db) == []


async def test_commands_written_while_no_runtime_runs_are_applied_when_one_starts(
    db: Path,
) -> None:
    async with Runtime(db, workflows=[ORDERS]) as rt:
        first = await rt.invoke("orders", "new", {"order_id": 5})
        second = await rt.invoke("orders", "new", {"order_id": 6})
    for args in (
        ["resume", first.run_id, '{"x": 5}'],
        ["abort", second.run_id],
        ["resume", second.run_id],  # valid when written; refused once the abort is applied
    ):
        out = await acli(*args, "--db", str(db))
        assert out.returncode == 0, (args, out.stderr)
    assert [row[3] for row in inbox(db)] == [0, 0, 0], "nothing applies them yet"

    async with Runtime(db, workflows=[ORDERS]) as rt:
        done = await effect(rt, "queued resume", in_status(rt, first.run_id, "completed"))
        assert done.state == {"order_id": 5, "x": 5, "shipped": True}
        await effect(rt, "queued abort", in_status(rt, second.run_id, "aborted"))

        async def all_done() -> list[tuple[Any, ...]] | None:
            rows = inbox(db)
            return rows if all(row[3] for row in rows) else None

        rows = await effect(rt, "outcomes", all_done)
    assert [row[4] for row in rows[:2]] == ["ok", "ok"]
    assert rows[2][4].startswith("RUN_NOT_ACTIVE: ") and "aborted" in rows[2][4]

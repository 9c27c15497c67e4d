"""Prune on a real journal: what goes, what stays, dry runs, space given back, retention."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from procs import acli, cli, query

from orchestrator import Runtime, Trigger, ValidationError, Workflow
from orchestrator.clock import parse_duration
from orchestrator.engine import retention
from orchestrator.folder.loader import FolderConfig, LoadFailed
from orchestrator.journal.retention import cutoffs_for, retention_cutoffs
from orchestrator.testing import eventually

PER_RUN = ("checkpoints", "timeline", "event_routes", "waits", "recoveries")


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


async def boom(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("boom")


def wait_for_payment(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(
        event="payment.received", where={"order_id": ("==", state["order_id"])}, into="payment"
    )


def reserve_and_register(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.pause_service.register(
        event="payment.received", where={"order_id": ("==", state["order_id"])}
    )
    return state


GATE: asyncio.Event | None = None
REACHED: asyncio.Event | None = None


async def held(state: dict[str, Any]) -> dict[str, Any]:
    assert GATE is not None and REACHED is not None
    REACHED.set()
    await GATE.wait()
    return state


FLOWS = [
    Workflow(
        id="w",
        triggers={"go": Trigger(event="ping")},
        pipelines={"go": [inc, inc], "bad": [boom]},
    ),
    Workflow(
        id="orders",
        triggers={"new": Trigger(event="order.created")},
        pipelines={"new": [wait_for_payment, inc], "held": [reserve_and_register, held, inc]},
    ),
]


def rows(db: Path) -> dict[str, int]:
    tables = ("runs", "events", "wait_buffer", *PER_RUN)
    return {table: query(db, f"SELECT count(*) FROM {table}")[0][0] for table in tables}


def of_runs(db: Path, run_ids: list[str]) -> dict[str, int]:
    """Rows belonging to these runs, table by table."""
    marks = ",".join("?" * len(run_ids))
    inner = f"SELECT id FROM runs WHERE run_id IN ({marks})"
    counts = {
        t: query(db, f"SELECT count(*) FROM {t} WHERE run IN ({inner})", (*run_ids,))[0][0]
        for t in PER_RUN
    }
    counts["runs"] = query(db, f"SELECT count(*) FROM runs WHERE run_id IN ({marks})", (*run_ids,))[
        0
    ][0]
    return counts


async def busy_journal(rt: Runtime) -> dict[str, Any]:
    """Final runs, a paused run started by an event, a running run with a buffered event."""
    global GATE, REACHED
    GATE, REACHED = asyncio.Event(), asyncio.Event()
    done = [await rt.invoke("w", "go", {"pad": "x" * 100}) for _ in range(5)]
    failed = await rt.invoke("w", "bad", {})
    await rt.emit("ping", {})  # starts a run that completes: its event can go
    await rt.emit("nothing", {})  # routed to nothing: goes when every final status is pruned
    await rt.emit("order.created", {"order_id": 1})  # starts a paused run: its event stays
    paused = await rt.invoke("orders", "new", {"order_id": 2})
    running = asyncio.create_task(rt.invoke("orders", "held", {"order_id": 3}))
    await REACHED.wait()
    buffered = await rt.emit("payment.received", {"order_id": 3})  # buffered for a live wait
    live = [r.run_id for r in await rt.list_runs() if r.status in ("paused", "running")]
    assert len(live) == 3 and paused.status == "paused"
    assert failed.status == "failed" and all(r.ok for r in done)
    return {"live": live, "buffered": buffered, "running": running}


async def test_prune_deletes_final_runs_and_what_only_they_need(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        seen = await busy_journal(rt)
        live_before = of_runs(db, seen["live"])
        final = [r.run_id for r in await rt.list_runs() if r.run_id not in seen["live"]]
        final_rows = of_runs(db, final)
        before = rows(db)
        assert before["wait_buffer"] == 1

        report = await rt.prune(older_than=0)

        assert report["runs"] == len(final) == 7
        assert {k: report[k] for k in ("checkpoints", "timeline", "waits", "recoveries")} == {
            k: final_rows[k] for k in ("checkpoints", "timeline", "waits", "recoveries")
        }
        assert report["routes"] == final_rows["event_routes"]
        assert report["events"] == 2  # "ping" (its run is gone) and "nothing"
        after = rows(db)
        assert after["runs"] == 3 and after["events"] == before["events"] - 2
        assert of_runs(db, seen["live"]) == live_before  # nothing unfinished touched
        assert after["wait_buffer"] == 1
        assert query(db, "SELECT count(*) FROM events WHERE event_id = ?", (seen["buffered"],)) == [
            (1,)
        ]
        events = {row[0] for row in query(db, "SELECT type FROM events")}
        assert events == {"order.created", "payment.received"}

        # The runtime goes on: the buffered event resumes its run, which completes.
        assert GATE is not None
        GATE.set()
        result = await seen["running"]
        assert result.status == "completed"
        again = await rt.invoke("w", "go", {})
        assert again.ok
        assert (await rt.prune(older_than=0))["runs"] >= 1


async def test_a_dry_run_counts_the_same_and_deletes_nothing(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        seen = await busy_journal(rt)
        before = rows(db)
        dry = await rt.prune(older_than=0, dry_run=True)
        assert rows(db) == before
        real = await rt.prune(older_than=0)
        real.pop("pages_freed", None)
        assert dry == real
        assert GATE is not None
        GATE.set()
        await seen["running"]


async def test_prune_takes_only_the_statuses_and_ages_asked(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        for _ in range(3):
            await rt.invoke("w", "go", {})
        await rt.invoke("w", "bad", {})
        await rt.emit("nothing", {})
        assert (await rt.prune(older_than="30d"))["runs"] == 0
        report = await rt.prune(older_than=0, statuses=["failed"])
        assert report["runs"] == 1 and report["events"] == 0  # no sweep for one status
        assert {r.status for r in await rt.list_runs()} == {"completed"}
        with pytest.raises(ValidationError, match="never pruned"):
            await rt.prune(older_than=0, statuses=["running"])
        with pytest.raises(ValidationError, match="invalid duration"):
            await rt.prune(older_than="3 weeks")
        with pytest.raises(ValidationError, match="invalid duration"):
            await rt.prune(older_than=-1)


def file_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(
            conn.execute("PRAGMA page_size").fetchone()[0]
        )
    finally:
        conn.close()


async def test_the_file_shrinks_after_prune_and_incremental_vacuum(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        for _ in range(200):
            await rt.invoke("w", "go", {"pad": "x" * 4000})
        big = file_bytes(db)
        report = await rt.prune(older_than=0)
        assert report["runs"] == 200 and report["pages_freed"] > 0
    assert query(db, "PRAGMA auto_vacuum") == [(2,)]
    assert query(db, "PRAGMA freelist_count") == [(0,)]
    small = file_bytes(db)
    assert small < big / 5, (big, small)
    assert os.path.getsize(db) == small


async def test_an_older_journal_is_converted_by_prune_vacuum(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        for _ in range(50):
            await rt.invoke("w", "go", {"pad": "x" * 4000})
    conn = sqlite3.connect(db)  # as journals made before schema 9 are
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    conn.close()
    assert query(db, "PRAGMA auto_vacuum") == [(0,)]
    out = cli("prune", "--db", str(db), "--older-than", "0", "--vacuum", "--json")
    assert out.returncode == 0, out.stderr
    assert "converted" in out.stderr and json.loads(out.stdout)["runs"] == 50
    assert query(db, "PRAGMA auto_vacuum") == [(2,)]


async def test_cli_prune_while_a_runtime_keeps_running_runs(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        paused = await rt.invoke("orders", "new", {"order_id": 9})
        for _ in range(300):
            await rt.invoke("w", "go", {"pad": "y" * 200})
        stop = asyncio.Event()
        finished: list[str] = []

        async def keep_running() -> None:
            while not stop.is_set():
                result = await rt.invoke("w", "go", {})
                assert result.ok
                finished.append(result.run_id)

        runner = asyncio.create_task(keep_running())
        out = await acli("prune", "--db", str(db), "--older-than", "0", "--json")
        stop.set()
        await runner
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["runs"] >= 300 and report["dry_run"] is False
        assert finished, "the runtime completed runs while the CLI pruned"
        info = await rt.watch("orders", paused.run_id)
        assert info is not None and info.status == "paused"
        assert len(await rt.timeline(paused.run_id)) > 0
        assert (await rt.invoke("w", "go", {})).ok


def test_cli_prune_dry_run_text_and_errors(db: Path, tmp_path: Path) -> None:
    missing = cli("prune", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and "no journal" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    asyncio.run(_some_runs(db))
    dry = cli("prune", "--db", str(db), "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would prune 3 runs")
    assert query(db, "SELECT count(*) FROM runs") == [(3,)]
    bad = cli("prune", "--db", str(db), "--older-than", "12 parsecs")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr and "30d" in bad.stderr
    wrong = cli("prune", "--db", str(db), "--status", "paused")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    done = cli("prune", "--db", str(db), "--older-than", "0", "--status", "completed")
    assert done.returncode == 0 and done.stdout.startswith("pruned 3 runs and 0 events")


async def _some_runs(db: Path) -> None:
    async with Runtime(db, workflows=FLOWS) as rt:
        for _ in range(3):
            await rt.invoke("w", "go", {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("90m", 5400),
        ("12h", 43200),
        ("30d", 2592000),
        ("10", 10),
        ("1.5h", 5400),
        (" 2D ", 172800),
        (0, 0),
        (7.5, 7.5),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1", "5w", "1e999", "nan", "ten", True, None, "3 d s"])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError, match="45s, 90m, 12h, 30d"):
        parse_duration(text)


def test_retention_is_read_from_orchestrator_toml(tmp_path: Path) -> None:
    (tmp_path / "orchestrator.toml").write_text(
        '[retention]\ncompleted = "30d"\nfailed = "90d"\ndefault = 3600\n'
    )
    config = FolderConfig.read(tmp_path)
    assert config.retention == {"completed": 2592000, "failed": 7776000, "default": 3600}
    cutoffs, events = retention_cutoffs(10**13, config.retention)
    assert cutoffs["completed"] == 10**13 - 2592000 * 10**6
    assert cutoffs["aborted"] == 10**13 - 3600 * 10**6
    assert events == 10**13 - 7776000 * 10**6  # the longest
    assert retention_cutoffs(10**13, {"failed": 1}) == ({"failed": 10**13 - 10**6}, None)
    assert cutoffs_for(10**13, "1s", ["failed"]) == ({"failed": 10**13 - 10**6}, None)
    for bad, said in [
        ('[retention]\nrunning = "1d"\n', "unknown keys ['running']"),
        ('[retention]\ncompleted = "soon"\n', "retention.completed: invalid duration"),
        ("retention = 5\n", "must be a table"),
    ]:
        (tmp_path / "orchestrator.toml").write_text(bad)
        with pytest.raises(LoadFailed, match=said.replace("[", r"\[").replace("]", r"\]")):
            FolderConfig.read(tmp_path)


async def test_the_daemon_applies_retention_continuously(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "orchestrator.toml").write_text('[retention]\ncompleted = "0s"\n')
    (folder / "flow.py").write_text(
        "from orchestrator import Workflow\n"
        "async def inc(state):\n    return state\n"
        "async def boom(state):\n    raise RuntimeError('x')\n"
        "workflow = Workflow(id='w', pipelines={'go': [inc], 'bad': [boom]})\n"
    )
    monkeypatch.setattr(retention, "INTERVAL_SECONDS", 0.05)
    async with Runtime(db, workflows_dir=folder) as rt:
        failed = await rt.invoke("w", "bad", {})
        for _ in range(5):
            await rt.invoke("w", "go", {})

        async def only_the_failed_run() -> bool:
            return [r.run_id for r in await rt.list_runs()] == [failed.run_id]

        await eventually(only_the_failed_run, what="completed runs pruned by retention")


async def test_applied_commands_from_other_processes_go_too(db: Path) -> None:
    from orchestrator.journal import open_journal

    async with Runtime(db, workflows=FLOWS) as rt:
        paused = [await rt.invoke("orders", "new", {"order_id": n}) for n in (5, 6)]
        for run in paused:
            open_journal(db).commands.queue_command("abort", run.run_id)

        def applied() -> bool:
            return query(db, "SELECT count(*) FROM inbox WHERE done_at IS NOT NULL") == [(2,)]

        await eventually(applied, what="the aborts applied")
        assert (await rt.watch("orders", paused[0].run_id)).status == "aborted"  # type: ignore[union-attr]
        dry = await rt.prune(older_than=0, dry_run=True)
        assert dry["commands"] == 1 and dry["runs"] == 2
        assert (await rt.prune(older_than=0, statuses=["aborted"]))["commands"] == 0
        report = await rt.prune(older_than=0)
        assert report["commands"] == 1 and report["runs"] == 0
        # The newest command stays: a new one must never take an id the daemon has seen.
        assert query(db, "SELECT run_id FROM inbox") == [(paused[1].run_id,)]

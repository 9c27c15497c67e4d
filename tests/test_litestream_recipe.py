"""What the README's Litestream recipe relies on, without Litestream (not installable here).

Litestream keeps a read transaction open on the journal while it copies the WAL, and a
restore hands back a copy of the file as of some moment while the daemon was writing. So:
the daemon keeps writing while another connection holds a long read transaction, a copy
taken mid-write is a journal the daemon recovers from (its paused run waits again and
resumes), and a restored file that other users may read is refused with the fix.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orchestrator import JournalNotPrivate, Runtime, Trigger, Workflow


def ask(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="paid", where={"order": ("==", state["order"])}, into="payment")


def ship(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "shipped": True}


ORDERS = Workflow(
    id="orders",
    triggers={"new": Trigger(event="order.created")},
    pipelines={"new": [ask, ship], "count": [ship]},
)


async def test_a_journal_survives_what_litestream_does_to_it(tmp_path: Path) -> None:
    db, restored = tmp_path / "orchestrator.db", tmp_path / "restored.db"
    async with Runtime(db, workflows=[ORDERS]) as rt:
        await rt.emit("order.created", {"order": 7})
        await rt.idle()
        replica = sqlite3.connect(db)  # Litestream's long read transaction
        replica.execute("BEGIN")
        replica.execute("SELECT count(*) FROM runs").fetchone()
        for n in range(200):  # the daemon writes on: the reader blocks no commit
            assert (await rt.invoke("orders", "count", {"n": n})).ok
        replica.rollback()
        with sqlite3.connect(restored) as copy:  # the replica, as of a moment mid-write
            replica.backup(copy)
        replica.close()
    restored.chmod(0o644)
    with pytest.raises(JournalNotPrivate, match="chmod 600"):
        async with Runtime(restored):
            pass
    restored.chmod(0o600)
    async with Runtime(restored, workflows=[ORDERS]) as rt:
        [paused] = await rt.list_runs(workflow="orders", status="paused")
        await rt.emit("paid", {"order": 7, "amount": 12})
        assert (await rt.wait(paused.run_id)).state == {
            "order": 7,
            "payment": {"order": 7, "amount": 12},
            "shipped": True,
        }
        assert len(await rt.list_runs(workflow="orders", status="completed", limit=1000)) == 201
